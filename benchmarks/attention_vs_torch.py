"""Fused attention (one pass over key blocks) vs the same graph op by op vs PyTorch's CPU
scaled_dot_product_attention (its flash kernel), fp32, batch 1, d = 64, 1 and 2 threads, interleaved
runs, median ms; and the peak memory each of ours adds while it runs.

    PYTHONPATH=. python benchmarks/attention_vs_torch.py [--lengths 512 1024 2048 4096] [--threads 1 2]
        [--heads 12] [--repeat 10] [--masks none causal padding] [--unfused-max 4096] [--backend tvm|mlir]

--backend mlir: the fused attention is one iree_linalg_ext.attention (IREE's llvm-cpu pipeline tiles it
with an online softmax; its tile is IREE's, the table shows "-"), the unfused graph IREE's dispatches op by op.
A compile for the CPU lowers the body op by op (compiler/backends/mlir_lower/attention.py: ON_TARGETS); this
benchmark puts the CPU in ON_TARGETS for its fused build, to time the op.

Masks: none; causal (the graph adds the constant finfo.min upper triangle, as transformers' eager
attention exports it; the fused kernel skips the key blocks past the diagonal; SDPA runs with
is_causal=True); padding (an input (1, 1, 1, L) mask, finfo.min on the last half of the keys, as a
padded batch has; the fused kernel skips the key blocks it removes wholly; SDPA gets the same additive
mask).

"fused" is the kernel pipeline as compiled (fuse_attention first); "unfused" the same pipeline with
fuse_attention disabled (batched matmul kernels and the softmax kernel, the S x S scores in memory);
lengths above --unfused-max time the fused kernel and SDPA only. Peak memory: a fresh process builds
the executable, makes its inputs, resets the kernel's peak-RSS counter (/proc/self/clear_refs, 5),
runs once and reads VmHWM: the growth is what the run allocated (the S x S scores for the unfused
graph, O(S d) for the fused kernel).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import interleaved_ms  # noqa: E402
from compiler.api import lower_kernels  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import elementwise as ew  # noqa: E402
from compiler.ops import kernel, linalg, nn, shape  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402

MIN = float(np.finfo(np.float32).min)


def attention_graph(heads: int, length: int, d: int = 64, mask: str = "none") -> Graph:
    g = Graph("attention")
    q, k, v = (g.add_input(n, TensorType((1, heads, length, d), DType.F32)) for n in "qkv")
    s = g.add1(linalg.matmul, [q, g.add1(shape.transpose, [k], perm=(0, 1, 3, 2))])
    s = g.add1(ew.div, [s, g.const(np.float32(np.sqrt(d)), "sqrt_d")])
    if mask == "causal":
        tri = np.triu(np.full((length, length), MIN, np.float32), 1)
        s = g.add1(ew.add, [s, g.const(tri[None, None], "causal")])
    elif mask == "padding":
        s = g.add1(ew.add, [s, g.add_input("mask", TensorType((1, 1, 1, length), DType.F32))])
    g.outputs = [g.add1(linalg.matmul, [g.add1(nn.softmax, [s], axis=-1), v])]
    return g


def inputs(heads: int, length: int, d: int, mask: str) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    ins = [rng.standard_normal((1, heads, length, d)).astype(np.float32) for _ in range(3)]
    if mask == "padding":
        pad = np.zeros((1, 1, 1, length), np.float32)
        pad[..., length // 2:] = MIN
        ins.append(pad)
    return ins


def build(heads: int, length: int, d: int, mask: str, threads: int, fused: bool, backend: str = "tvm"):
    from compiler.backends import get_backend
    if backend == "mlir":         # the fused build is the one iree_linalg_ext.attention, here on the CPU too
        from compiler.backends.mlir_lower import attention
        attention.ON_TARGETS = frozenset({"cuda", "llvm"} if fused else {"cuda"})
    target = Target("llvm", num_threads=threads)
    g = lower_kernels(attention_graph(heads, length, d, mask), target, backend,
                      disable_passes=() if fused else ["fuse_attention"])
    return g, get_backend(backend).build(g, target)


CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from benchmarks.attention_vs_torch import build, inputs
h, length, d, mask, threads, fused, backend = sys.argv[2:]
_, exe = build(int(h), int(length), int(d), mask, int(threads), fused == "1", backend)
ins = inputs(int(h), int(length), int(d), mask)
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS:")
exe.run(ins)
print(json.dumps(status("VmHWM:") - before))
"""


def peak_growth(h: int, length: int, d: int, mask: str, threads: int, fused: bool, backend: str) -> int:
    """Bytes the first run adds to the process's peak RSS, measured in a fresh process."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(h), str(length), str(d), mask,
                          str(threads), "1" if fused else "0", backend], capture_output=True, text=True, check=True)
    return int(json.loads(out.stdout.strip().splitlines()[-1]))


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f}"


def row(h: int, length: int, d: int, mask: str, threads: int, args) -> None:
    """One table row: build the fused (and unfused) graph, check each against SDPA, time them
    interleaved, measure each one's peak memory."""
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    with_unfused = length <= args.unfused_max
    fused_ir, fused = build(h, length, d, mask, threads, True, args.backend)
    node = next(n for n in fused_ir.nodes if n.op is kernel.fused and n.attrs["kernel"] == "attention")
    tile = "x".join(map(str, node.attrs["tile"])) or "-"
    ins = inputs(h, length, d, mask)
    tq_, tk_, tv_ = (torch.from_numpy(x) for x in ins[:3])
    tmask = torch.from_numpy(ins[3]) if mask == "padding" else None
    sdpa = partial(F.scaled_dot_product_attention, tq_, tk_, tv_, attn_mask=tmask, is_causal=mask == "causal")
    want = sdpa().numpy()
    runs = [partial(fused.run, ins)]
    diff = float(np.abs(fused.run(ins)[0] - want).max())
    if with_unfused:
        _, unfused = build(h, length, d, mask, threads, False, args.backend)
        diff = max(diff, float(np.abs(unfused.run(ins)[0] - want).max()))
        runs.append(partial(unfused.run, ins))
    with torch.inference_mode():
        times = interleaved_ms(runs + [sdpa], args.warmup, args.repeat)
    ms = [statistics.median(t) for t in times]
    f_ms, t_ms = ms[0], ms[-1]
    mem_f = peak_growth(h, length, d, mask, threads, True, args.backend)
    if with_unfused:
        u_ms, mem_u = ms[1], peak_growth(h, length, d, mask, threads, False, args.backend)
        unf = f"{u_ms:.2f} | {u_ms / f_ms:.2f}x | {_mib(mem_u)}"
    else:
        unf = "- | - | -"
    print(f"| {threads} | {length} | {mask} | {f_ms:.2f} | {t_ms:.2f} | {f_ms / t_ms:.2f} | {unf} | {_mib(mem_f)} "
          f"| {diff / float(np.abs(want).max()):.1e} | {tile} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--masks", nargs="+", choices=["none", "causal", "padding"], default=["none"])
    ap.add_argument("--unfused-max", type=int, default=4096, help="longest length the unfused graph is run at")
    ap.add_argument("--backend", choices=["tvm", "mlir"], default="tvm", help="the code generator of ours timed")
    args = ap.parse_args()
    h, d = args.heads, 64
    print(f"{args.backend} backend, fp32, batch 1, {h} heads, d={d}; median of {args.repeat} interleaved runs (ms); peak memory: "
          f"what one run adds to the process's RSS high-water mark (MiB)")
    print("| threads | L | mask | fused ms | torch SDPA ms | fused / SDPA | unfused ms | fused speedup over "
          "unfused | unfused peak MiB | fused peak MiB | max rel diff vs SDPA | tile |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for threads in args.threads:
        for length in args.lengths:
            for mask in args.masks:
                row(h, length, d, mask, threads, args)


if __name__ == "__main__":
    main()
