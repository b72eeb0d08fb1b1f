"""4-bit weights for linear layers (W4A8) on AVX-512 VNNI, end to end.

  python examples/int4_linear.py

A float MLP of three 4096-wide linear layers (batch 1, random weights: 64 MB of float32) is compiled with
--quantize int8, with --quantize int8 --weight-bits 4 and with --quantize int8 --lut 4. The int4 build stores
each linear weight two values per byte (layout.unpack_weight form vnni_matmul_int4) and runs
tvm_kernels/qmatmul_int4.py: the nibbles unpacked in registers and fed to vpdpbusd, so the memory-bound batch-1
layers stream half the bytes. The LUT build stores 4 bit-planes per weight plus a scale and zero point per group
of 128 rows (q.lut_matmul, T-MAC). For each: the stored weight bytes, the size of the saved artifact (.dyc,
group scales, code and manifest included) against INT8's, the agreement with the float model, that the
executable computes exactly what its final IR says (the interpreter), and the latency."""
from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import compiler  # noqa: E402
from compiler import interp  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import elementwise as ew, layout as lay, linalg, lut  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402

WIDTH = 4096


def mlp(rng, width: int = WIDTH) -> Graph:
    """Three width x width linear layers with ReLUs between, random weights."""
    g = Graph()
    h = g.add_input("x", TensorType((1, width), DType.F32))
    for i in range(3):
        w = rng.normal(0, 1 / np.sqrt(width), (width, width)).astype(np.float32)
        h = g.add1(linalg.matmul, [h, g.const(w, f"w{i}")])
        if i < 2:
            h = g.add1(ew.relu, [h])
    g.outputs = [h]
    return g


def stored_weight_bytes(g: Graph) -> int:
    """Bytes of the linear layers' weights as the executable holds them: the packed constants, and a LUT layer's
    bit-planes, group scales and zero points (its constant inputs but the bias)."""
    packed = sum(n.inputs[0].const.nbytes for n in g.walk() if n.op is lay.unpack_weight)
    return packed + sum(v.const.nbytes for n in g.walk() if n.op is lut.lut_matmul for v in n.inputs[1:4] if v.is_const)


def artifact_bytes(cm) -> int:
    """Size of the saved .dyc (a zip: manifest, final IR, compiled library with the packed constants)."""
    with tempfile.TemporaryDirectory() as d:
        return cm.save(os.path.join(d, "m.dyc")).stat().st_size


def main() -> None:
    rng = np.random.default_rng(0)
    g = mlp(rng)
    calib = [[rng.normal(0, 1, (1, WIDTH)).astype(np.float32)] for _ in range(8)]
    tests = [rng.normal(0, 1, (1, WIDTH)).astype(np.float32) for _ in range(4)]
    ref = np.concatenate([interp.run(g, x)[0] for x in tests])
    int8_bytes = None
    for label, opts in (("INT8", {}), ("W4A8", {"weight_bits": 4}), ("LUT-4", {"lut": 4})):
        cm = compiler.compile(g, "llvm -num-threads=1", quantize="int8", calibration=calib, **opts)
        out = np.concatenate([cm.run(x)[0] for x in tests])
        exact = np.array_equal(cm.run(tests[0])[0], interp.run(cm.graph, tests[0])[0])
        cos = float((out * ref).sum() / np.linalg.norm(out) / np.linalg.norm(ref))
        ms = cm.benchmark(tests[0], warmup=5, repeat=30)["median_ms"]
        size = artifact_bytes(cm)
        int8_bytes = int8_bytes or size
        print(f"{label}: weights {stored_weight_bytes(cm.graph) / 1e6:5.1f} MB   artifact {size / 1e6:5.1f} MB "
              f"({int8_bytes / size:.2f}x smaller than INT8)   cosine vs float {cos:.4f}   "
              f"executable == final IR: {exact}   {ms:.2f} ms")


if __name__ == "__main__":
    main()
