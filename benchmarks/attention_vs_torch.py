"""Fused attention (one pass over key blocks) vs the same graph op by op vs PyTorch's CPU
scaled_dot_product_attention, fp32, batch 1, d = 64, 1 thread, interleaved runs, median ms.

    PYTHONPATH=. python benchmarks/attention_vs_torch.py [--lengths 128 512 1024] [--heads 12] [--repeat 30]

"fused" runs fuse_attention before the kernel passes; "unfused" is the same graph without it (batched matmul kernels and the
softmax kernel, the S x S scores in memory). Memory is estimated, not measured: the scores the unfused
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


def attention_graph(heads: int, length: int, d: int = 64) -> Graph:
    g = Graph("attention")
    q, k, v = (g.add_input(n, TensorType((1, heads, length, d), DType.F32)) for n in "qkv")
    s = g.add1(linalg.matmul, [q, g.add1(shape.transpose, [k], perm=(0, 1, 3, 2))])
    s = g.add1(ew.div, [s, g.const(np.float32(np.sqrt(d)), "sqrt_d")])
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
    args = ap.parse_args()
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(1)
    target = Target("llvm", num_threads=1)
    h, d = args.heads, 64
    print(f"fp32, batch 1, {h} heads, d={d}, 1 thread, median of {args.repeat} interleaved runs (ms)")
    print("| L | fused ms | unfused ms | torch SDPA ms | fused / unfused | fused / SDPA | max rel diff "
          "| S x S scores MiB | fused scratch + q,k,v,out MiB | tile |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for length in args.lengths:
        g = attention_graph(h, length, d)
        fused_ir = lower_kernels(fuse_attention(g), target)
        unfused_ir = lower_kernels(g, target)
        node = next(n for n in fused_ir.nodes if n.op is kernel.fused and n.attrs["kernel"] == "attention")
        tq, tk = node.attrs["tile"]
        fused, unfused = BACKEND.build(fused_ir, target), BACKEND.build(unfused_ir, target)
        rng = np.random.default_rng(0)
        ins = [rng.standard_normal((1, h, length, d)).astype(np.float32) for _ in range(3)]
        tq_, tk_, tv_ = (torch.from_numpy(x) for x in ins)
        want = F.scaled_dot_product_attention(tq_, tk_, tv_).numpy()
        got = fused.run(ins)[0]
        diff = max(float(np.abs(got - want).max()), float(np.abs(unfused.run(ins)[0] - want).max()))
        with torch.inference_mode():
            sdpa = (F.scaled_dot_product_attention, tq_, tk_, tv_)
            times = interleaved_ms([partial(fused.run, ins), partial(unfused.run, ins), partial(*sdpa)],
                                   args.warmup, args.repeat)
        f_ms, u_ms, t_ms = (statistics.median(t) for t in times)
        scores = 4 * h * length * length
        scratch = 4 * (tq * tk + tq * d + d * tk + tq * d + 2 * tq)      # one task (one thread)
        io = 4 * 4 * h * length * d
        print(f"| {length} | {f_ms:.3f} | {u_ms:.3f} | {t_ms:.3f} | {f_ms / u_ms:.2f}x | {f_ms / t_ms:.2f}x "
              f"| {diff / float(np.abs(want).max()):.1e} | {_mib(scores)} | {_mib(scratch + io)} | {tq}x{tk} |",
              flush=True)


if __name__ == "__main__":
    main()
