"""Fused attention (one pass over key blocks) vs the same graph op by op vs PyTorch's CPU
scaled_dot_product_attention, fp32, batch 1, d = 64, 1 thread, interleaved runs, median ms; without a
mask and causal (the graph adds the constant finfo.min upper triangle, as transformers' eager attention
exports it; the fused kernel skips the key blocks past the diagonal; SDPA runs with is_causal=True).

    PYTHONPATH=. python benchmarks/attention_vs_torch.py [--lengths 128 512 1024] [--heads 12] [--repeat 30]
        [--masks none causal]

"fused" is the kernel pipeline as compiled (fuse_attention first); "unfused" the same pipeline with
fuse_attention disabled (batched matmul kernels and the softmax kernel, the S x S scores in memory; with
the causal mask, the matmul kernel takes no S x S constant in its epilogue, so Q K^T, scale and mask run
as TVM's unscheduled fused loop). Memory is estimated, not measured: the scores the unfused
graph holds (heads x S x S floats) vs the fused kernel's per-task scratch (one query block's scores
for one key block, its running state) plus q, k, v and the output (O(S d)).
"""
from __future__ import annotations

import argparse
import statistics
from functools import partial

import numpy as np

from benchmarks.common import interleaved_ms
from compiler.api import lower_kernels
from compiler.backends.tvm import BACKEND
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import kernel, linalg, nn, shape
from compiler.target import Target
from compiler.types import DType, TensorType
from passes.einsum import fuse_attention


def attention_graph(heads: int, length: int, d: int = 64, causal: bool = False) -> Graph:
    g = Graph("attention")
    q, k, v = (g.add_input(n, TensorType((1, heads, length, d), DType.F32)) for n in "qkv")
    s = g.add1(linalg.matmul, [q, g.add1(shape.transpose, [k], perm=(0, 1, 3, 2))])
    s = g.add1(ew.div, [s, g.const(np.float32(np.sqrt(d)), "sqrt_d")])
    if causal:
        mask = np.triu(np.full((length, length), np.finfo(np.float32).min, np.float32), 1)
        s = g.add1(ew.add, [s, g.const(mask[None, None], "causal")])
    g.outputs = [g.add1(linalg.matmul, [g.add1(nn.softmax, [s], axis=-1), v])]
    return g


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024])
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--masks", nargs="+", choices=["none", "causal"], default=["none", "causal"])
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    h, d = args.heads, 64
    print(f"fp32, batch 1, {h} heads, d={d}, 1 thread, median of {args.repeat} interleaved runs (ms)")
    print("| L | mask | fused ms | unfused ms | torch SDPA ms | fused / unfused | fused / SDPA | max rel diff "
          "| S x S scores MiB | fused scratch + q,k,v,out MiB | tile |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for length, mask in ((n, m) for n in args.lengths for m in args.masks):
        row(h, length, d, mask == "causal", args)


def row(h: int, length: int, d: int, causal: bool, args) -> None:
    """One table row: build the fused and the unfused graph, check both against SDPA, time the three
    interleaved."""
    import torch
    import torch.nn.functional as F
    target = Target("llvm", num_threads=1)
    g = attention_graph(h, length, d, causal)
    fused_ir = lower_kernels(fuse_attention(g), target)
    unfused_ir = lower_kernels(g, target, disable_passes=["fuse_attention"])
    node = next(n for n in fused_ir.nodes if n.op is kernel.fused and n.attrs["kernel"] == "attention")
    tq, tk = node.attrs["tile"]
    fused, unfused = BACKEND.build(fused_ir, target), BACKEND.build(unfused_ir, target)
    rng = np.random.default_rng(0)
    ins = [rng.standard_normal((1, h, length, d)).astype(np.float32) for _ in range(3)]
    tq_, tk_, tv_ = (torch.from_numpy(x) for x in ins)
    want = F.scaled_dot_product_attention(tq_, tk_, tv_, is_causal=causal).numpy()
    diff = max(float(np.abs(fused.run(ins)[0] - want).max()), float(np.abs(unfused.run(ins)[0] - want).max()))
    with torch.inference_mode():
        sdpa = partial(F.scaled_dot_product_attention, tq_, tk_, tv_, is_causal=causal)
        times = interleaved_ms([partial(fused.run, ins), partial(unfused.run, ins), sdpa],
                               args.warmup, args.repeat)
    f_ms, u_ms, t_ms = (statistics.median(t) for t in times)
    scores = 4 * h * length * length
    scratch = 4 * (tq * tk + tq * d + d * tk + tq * d + 2 * tq)      # one task (one thread)
    io = 4 * 4 * h * length * d
    print(f"| {length} | {'causal' if causal else 'none'} | {f_ms:.3f} | {u_ms:.3f} | {t_ms:.3f} "
          f"| {f_ms / u_ms:.2f}x | {f_ms / t_ms:.2f}x | {diff / float(np.abs(want).max()):.1e} "
          f"| {_mib(scores)} | {_mib(scratch + io)} | {tq}x{tk} |", flush=True)


if __name__ == "__main__":
    main()
