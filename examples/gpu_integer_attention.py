"""The opt-in integer-only attention (`--integer-attention`: q.attention, Shiftmax inside the running recurrence)
for an NVIDIA GPU, through both backends, checked without one.

    python examples/gpu_integer_attention.py [sm_90|sm_80]

A BERT-style encoder (2 layers, hidden 128, 2 heads, 128 tokens) compiled integer-only with
integer_attention=True for `cuda -arch=...`:
- TVM: each attention is one kernel (tvm_kernels/cuda_qattention.py: a thread per query, K / V tiles in shared
  memory, the scores by __dp4a); the GPU program built for the CPU without its GPU schedules
  (`compiler.backends.tvm_cuda.build_for_cpu`) is compared with the reference interpreter, bit for bit; with
  ptxas on the PATH, each attention kernel's registers and spills.
- MLIR: the same graph through IREE for cuda (its PTX), and for the CPU, compared with the interpreter.
On a machine with a GPU the cuda builds also run there and are compared.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compiler import interp  # noqa: E402
from compiler.api import final_ir  # noqa: E402
from compiler.backends import tvm_cuda  # noqa: E402
from compiler.backends.mlir import BACKEND as MLIR  # noqa: E402
from compiler.backends.tvm import BACKEND as TVM  # noqa: E402
from compiler.target import Target  # noqa: E402
from examples import zoo  # noqa: E402


def ptxas_usage(ptx: str, arch: str, holds: str = "qattention") -> list[str]:
    """ptxas -v's 'Used N registers' lines of the kernels whose name holds `holds`."""
    if shutil.which("ptxas") is None:
        return ["(ptxas not on the PATH)"]
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "m.ptx"
        src.write_text(ptx)
        r = subprocess.run(["ptxas", f"-arch={arch}", "-v", str(src), "-o", str(Path(d) / "m.cubin")],
                           capture_output=True, text=True, check=True)
    lines, name = [], None
    for line in r.stderr.splitlines():
        if m := re.search(r"Compiling entry function '(\w+)'", line):
            name = m.group(1)
        elif name and holds in name and ("Used" in line or "spill" in line):
            lines.append(f"{name}: {line.split(':', 1)[-1].strip()}")
    return lines


def integer_encoder(**options) -> tuple[torch.nn.Module, np.ndarray, dict]:
    """(a BERT-style encoder: 2 layers, hidden 128, 2 heads, 128 tokens; token ids; compile options for it
    integer-only, calibrated on two random batches, with `options`)."""
    model, ids, calib = zoo.seeded_encoder(hidden=128, heads=2, ffn=256, layers=2, seq=128)
    return model, ids, dict(example_inputs=(torch.tensor(ids),), quantize="int8", calibration=calib,
                            integer_only=True, **options)


def main() -> None:
    arch = sys.argv[1] if len(sys.argv) > 1 else "sm_90"
    target = f"cuda -arch={arch}"
    model, ids, opts = integer_encoder(integer_attention=True)

    g, _ = final_ir(model, target, **opts)
    want = interp.run(g, ids)[0]
    print(f"TVM, {target}: {g.op_histogram().get('q.attention', 0)} q.attention")
    exe = TVM.build(g, Target.parse(target))
    kernels = re.findall(r"R\.call_tir\(cls\.(\w+)", exe.source("relax"))
    print(f"    attention kernels: {[k for k in kernels if 'qattention' in k]} of {len(kernels)} kernels")
    got = tvm_cuda.build_for_cpu(g, Target.parse(target))(ids)[0]
    print(f"    the GPU program built for the CPU vs the interpreter: "
          f"{'bit-exact' if np.array_equal(got, want) else 'DIFFERENT'}")
    for line in ptxas_usage(exe.source("ptx"), arch):
        print(f"    {line}")
    if tvm_cuda.gpu_available():
        print(f"    on the GPU: {'bit-exact' if np.array_equal(exe.run([ids])[0], want) else 'DIFFERENT'}")

    mg, _ = final_ir(model, target, backend="mlir", **opts)
    mexe = MLIR.build(mg, Target.parse(target))
    ptx = mexe.source("ptx")
    print(f"MLIR, {target}: {mg.op_histogram().get('q.attention', 0)} q.attention; "
          f"{ptx.count('.entry')} PTX kernels, {len(ptx) // 1024} KiB of PTX")
    cg, _ = final_ir(model, "llvm -num-threads=1", backend="mlir", **opts)
    same = np.array_equal(MLIR.build(cg, Target.parse("llvm -num-threads=1")).run([ids])[0], interp.run(cg, ids)[0])
    print(f"    the same lowering built for the CPU vs the interpreter: {'bit-exact' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
