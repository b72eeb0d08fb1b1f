"""Reading what ptxas made of a kernel, without a GPU: the SASS of each kernel's main loop.

A tensor-core GEMM kernel spends its time in one loop (a reduction step: global loads, shared-memory stores, a
barrier, fragment loads and the MMAs). Each warp scheduler issues one instruction a clock, and on sm_80 / sm_90 an
IMMA / HMMA m16n8k16 (2048 multiply-adds) keeps a tensor core busy for about 2 to 4 clocks, so a loop issuing
many more instructions than that per MMA is bound by issue, not by the tensor cores. `main_loop` counts both in
the loop that holds the most MMAs (the innermost backward branch around them), the MMAs in units of m16n8k16:
an IMMA.16832 (int8 m16n8k32, 4096 multiply-adds in one instruction) counts 2. `issued_per_mma` counts a
warp's whole kernel instead (prologue, the loop times its trips, epilogue): what compares a looped kernel with
one whose reduction nvcc unrolled whole.

nvdisasm comes from the `nvidia-cuda-nvdisasm` wheel (the dev extra) or the CUDA toolkit on PATH.
"""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

MMA = ("IMMA", "HMMA")


def mma_units(op: str) -> float:
    """m16n8k16 MMAs in one SASS instruction `op` (0: not an MMA), by its shape: IMMA.16832 (m16n8k32) is two,
    IMMA / HMMA.16816 one, HMMA.1688 a half."""
    if not op.startswith(MMA):
        return 0
    shape = re.match(r"[IH]MMA\.168(\d+)", op)
    return int(shape.group(1)) / 16 if shape else 1
_INSTR = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*(.*?);")
_LABEL = re.compile(r"^(\.L_x_\d+):")


def nvdisasm() -> str | None:
    """The nvdisasm executable: on PATH, or in the nvidia-cuda-nvdisasm wheel; None if neither."""
    found = shutil.which("nvdisasm")
    if found:
        return found
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        for exe in sorted(Path(root).glob("cu*/bin/nvdisasm")):
            return str(exe)
    return None


def assemble(ptx: str, arch: str = "sm_90") -> tuple[bytes, str]:
    """(the cubin, ptxas's -v log: registers, spills) of `ptx` for `arch`."""
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "m.ptx").write_text(ptx)
        log = subprocess.run(["ptxas", "-v", f"-arch={arch}", "m.ptx", "-o", "m.cubin"], cwd=d, check=True,
                             capture_output=True, text=True).stderr
        return (Path(d) / "m.cubin").read_bytes(), log


def disassemble(cubin: bytes) -> str:
    """The SASS of `cubin` (nvdisasm)."""
    tool = nvdisasm()
    if tool is None:
        raise RuntimeError("nvdisasm not found: pip install nvidia-cuda-nvdisasm")
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "m.cubin").write_bytes(cubin)
        return subprocess.run([tool, "-c", str(Path(d) / "m.cubin")], check=True, capture_output=True,
                              text=True).stdout


def kernels(sass: str) -> dict[str, str]:
    """Kernel name -> its SASS text."""
    parts = re.split(r"^\s*\.section\s+\.text\.(\w+),.*$", sass, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def main_loop(body: str) -> tuple[int, int] | None:
    """(instructions, MMAs in m16n8k16 units: `mma_units`) of the loop of `body` (one kernel's SASS) that holds
    the most MMAs, or None where no loop holds one (nvcc unrolled a short reduction whole, or no MMAs)."""
    return _counts(body)[1]


def issued_per_mma(body: str, warp_mmas: float) -> float:
    """Instructions one warp issues per m16n8k16 MMA over the whole kernel `body`, given the MMAs each warp runs
    (from the GEMM and its tile): outside the main loop once, the loop as many times as the MMAs left take
    (a reduction unrolled whole: every instruction once). Instructions a branch skips count too (an upper
    bound)."""
    (total, total_mmas), loop = _counts(body)
    if not total_mmas:
        raise ValueError("a kernel without MMAs")
    if loop is None:
        return total / total_mmas
    trips = (warp_mmas - (total_mmas - loop[1])) / loop[1]
    return (total - loop[0] + trips * loop[0]) / warp_mmas


def _counts(body: str) -> tuple[tuple[int, float], tuple[int, float] | None]:
    """((instructions, MMAs) of the whole kernel, those of its main loop or None)."""
    ops, labels, pending = [], {}, []
    for line in body.splitlines():
        label = _LABEL.match(line)
        if label:
            pending.append(label.group(1))
            continue
        m = _INSTR.match(line)
        if m:
            addr = int(m.group(1), 16)
            labels.update((name, addr) for name in pending)      # a label marks the next instruction
            pending = []
            ops.append((m.group(2), addr, m.group(3)))
    best = None
    for op, addr, args in ops:
        target = re.search(r"\((\.L_x_\d+)\)", args) if op == "BRA" else None
        if target is None or labels.get(target.group(1), addr + 1) > addr:
            continue                                              # not a backward branch
        inside = [o for o, a, _ in ops if labels[target.group(1)] <= a <= addr]
        mmas = sum(map(mma_units, inside))
        if mmas and (best is None or mmas > best[1]):
            best = (len(inside), mmas)
    return (len(ops), sum(mma_units(o) for o, _, _ in ops)), best
