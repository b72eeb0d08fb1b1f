"""LUT low-bit linear layers (T-MAC style), end to end on a small MLP.

  python examples/lut_gemm.py

A float MLP (64 -> 256 -> 256 -> 10, random weights) is compiled three ways for this CPU: INT8 (VNNI
kernels), and INT8 with every linear layer a 4-bit and a 2-bit q.lut_matmul (passes/lut.py: b-bit group
weights, tables of partial sums per row, vpshufb lookups). For each: the per-layer requantization report,
the weight bytes in the final IR, the agreement with the float model, and that the executable computes
exactly what its final IR says (the interpreter)."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import compiler  # noqa: E402
from compiler import interp  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import elementwise as ew, linalg  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402


def mlp(rng) -> Graph:
    g = Graph()
    h = g.add_input("x", TensorType((1, 64), DType.F32))
    for k, n in ((64, 256), (256, 256), (256, 10)):
        h = g.add1(linalg.matmul, [h, g.const(rng.normal(0, 1 / np.sqrt(k), (k, n)).astype(np.float32))])
        h = g.add1(ew.add, [h, g.const(rng.normal(0, 0.1, n).astype(np.float32))])
        if n != 10:
            h = g.add1(ew.relu, [h])
    g.outputs = [h]
    return g


def weight_bytes(g: Graph) -> int:
    return sum(v.const.nbytes for n in g.walk() if n.op.name in ("q.matmul", "q.lut_matmul")
               for v in n.inputs[1:] if v.is_const)


def main() -> None:
    rng = np.random.default_rng(0)
    g = mlp(rng)
    calib = [[rng.normal(0, 1, (1, 64)).astype(np.float32)] for _ in range(32)]
    tests = [rng.normal(0, 1, (1, 64)).astype(np.float32) for _ in range(16)]
    ref = np.concatenate([interp.run(g, x)[0] for x in tests])
    target = "llvm -num-threads=1"
    for label, lut in (("INT8", None), ("4-bit LUT", 4), ("2-bit LUT", 2)):
        cm = compiler.compile(g, target, quantize="int8", calibration=calib, lut=lut)
        out = np.concatenate([cm.run(x)[0] for x in tests])
        exact = all(np.array_equal(cm.run(x)[0], interp.run(cm.graph, x)[0]) for x in tests[:4])
        cos = float((out * ref).sum() / np.linalg.norm(out) / np.linalg.norm(ref))
        ms = cm.benchmark(tests[0], warmup=3, repeat=20)["median_ms"]
        print(f"{label:10s} weights {weight_bytes(cm.graph):7d} B   cosine vs float {cos:.4f}   "
              f"executable == final IR: {exact}   {ms:.3f} ms")
        for row in (cm.report.lut or []):
            print(f"    {row['name']:16s} {row['k']}x{row['n']}  G={row['group_size']}  u<={row['umax']}  "
                  f"weight error {row['weight_error']:.3f}  {row['bytes']} B (int8 {row['int8_bytes']} B)")


if __name__ == "__main__":
    main()
