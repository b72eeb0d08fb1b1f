"""4-bit weights for linear layers (W4A8) on AVX-512 VNNI, end to end.

  python examples/int4_linear.py

A float MLP of three 4096-wide linear layers (batch 1, random weights: 64 MB of float32) is compiled with
--quantize int8 and with --quantize int8 --weight-bits 4. The int4 build stores each linear weight two values
per byte (layout.unpack_weight form vnni_matmul_int4) and runs tvm_kernels/qmatmul_int4.py: the nibbles
unpacked in registers and fed to vpdpbusd, so the memory-bound batch-1 layers stream half the bytes. For
each: the stored weight bytes, the agreement with the float model, that the executable computes exactly
what its final IR says (the interpreter), and the latency."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import compiler  # noqa: E402
from compiler import interp  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import elementwise as ew, layout as lay, linalg  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402

WIDTH = 4096


def mlp(rng) -> Graph:
    g = Graph()
    h = g.add_input("x", TensorType((1, WIDTH), DType.F32))
    for i in range(3):
        w = rng.normal(0, 1 / np.sqrt(WIDTH), (WIDTH, WIDTH)).astype(np.float32)
        h = g.add1(linalg.matmul, [h, g.const(w, f"w{i}")])
        if i < 2:
            h = g.add1(ew.relu, [h])
    g.outputs = [h]
    return g


def stored_weight_bytes(g: Graph) -> int:
    """Bytes of the linear layers' weights as the executable holds them (packed constants)."""
    return sum(n.inputs[0].const.nbytes for n in g.walk() if n.op is lay.unpack_weight)


def main() -> None:
    rng = np.random.default_rng(0)
    g = mlp(rng)
    calib = [[rng.normal(0, 1, (1, WIDTH)).astype(np.float32)] for _ in range(8)]
    tests = [rng.normal(0, 1, (1, WIDTH)).astype(np.float32) for _ in range(4)]
    ref = np.concatenate([interp.run(g, x)[0] for x in tests])
    for label, bits in (("INT8", 8), ("W4A8", 4)):
        cm = compiler.compile(g, "llvm -num-threads=1", quantize="int8", calibration=calib, weight_bits=bits)
        out = np.concatenate([cm.run(x)[0] for x in tests])
        exact = np.array_equal(cm.run(tests[0])[0], interp.run(cm.graph, tests[0])[0])
        cos = float((out * ref).sum() / np.linalg.norm(out) / np.linalg.norm(ref))
        ms = cm.benchmark(tests[0], warmup=5, repeat=30)["median_ms"]
        print(f"{label}: weights {stored_weight_bytes(cm.graph) / 1e6:5.1f} MB   cosine vs float {cos:.4f}   "
              f"executable == final IR: {exact}   {ms:.2f} ms")


if __name__ == "__main__":
    main()
