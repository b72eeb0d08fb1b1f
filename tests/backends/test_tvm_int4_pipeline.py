"""int4 linear-layer weights through the compiler: pack_weights stores a DType.I4 q.matmul weight two values
per byte (layout vnni_matmul_int4, half the int8 form's bytes), the TVM backend runs it on the int4 VNNI
kernel (tvm_kernels/qmatmul_int4.py) with the bias and requant fused, bit-exact with the interpreter."""
from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from compiler import interp, layouts  # noqa: E402
from compiler.backends.tvm_fused import int4, integer  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import elementwise as ew, kernel, layout as lay, quant as q  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402
from tests.backends.kernel_ir import TARGET, build, kernels  # noqa: E402

pytestmark = pytest.mark.skipif("avx512_vnni" not in open("/proc/cpuinfo").read(), reason="needs AVX-512 VNNI")


@pytest.mark.parametrize("rows,k,n,adt", [(1, 70, 100, DType.U8), (3, 64, 64, DType.I8)])
def test_int4_linear_weights_are_stored_two_per_byte_and_run_bit_exactly(rows, k, n, adt, monkeypatch):
    rng = np.random.default_rng(k)
    g = Graph()
    x = g.add_input("x", TensorType((rows, k), adt))
    w = g.const(rng.integers(-8, 8, (k, n)).astype(DType.I4.numpy), "w")
    b = g.const(rng.integers(-3000, 3000, (n,)).astype(np.int32), "b")
    acc = g.add1(ew.add, [g.add1(q.matmul, [x, w], a_zero_point=5, b_zero_point=0), b])
    m, sh = rng.integers(2**29, 2**31 - 1, n), rng.integers(30, 36, n)
    g.outputs = [g.add1(q.requant, [acc], multiplier=tuple(int(v) for v in m), shift=tuple(int(v) for v in sh),
                        zero_point=3, in_zero_point=0, qmin=-128, qmax=127, dtype=DType.I8, axis=1)]
    fg, _ = kernels(g, TARGET)
    (node,) = [nd for nd in fg.nodes if nd.op is kernel.fused and nd.attrs["kernel"] == "qmatmul"]
    wv = kernel.anchor_of(node.attrs["body"]).inputs[1]
    assert wv.producer.op is lay.unpack_weight and wv.producer.attrs["form"] == "vnni_matmul_int4"
    plain, packed = integer.weight_of(wv)
    np.testing.assert_array_equal(np.asarray(plain, np.int8), np.asarray(w.const, np.int8))
    kp, np_ = -(-k // 8) * 8, -(-n // 64) * 64
    assert packed.dtype == np.uint8 and packed.nbytes == kp * np_ // 2
    assert packed.nbytes <= 0.6 * layouts.pack_matmul_weight(np.asarray(w.const, np.int8), "vnni_matmul").nbytes
    emitted = []
    monkeypatch.setattr(int4, "emit", lambda *a, _emit=int4.emit: emitted.append(1) or _emit(*a))
    exe = build(g, TARGET)
    assert emitted == [1]                       # the int4 kernel, not the int8 one, runs the layer
    info = np.iinfo(adt.numpy)
    xs = rng.integers(info.min, info.max + 1, (rows, k)).astype(adt.numpy)
    np.testing.assert_array_equal(exe.run([xs])[0], interp.run(g, xs)[0])


def test_weight_bits_4_compiles_linear_layers_to_int4_and_refuses_without_int8():
    import compiler
    from compiler.diagnostics import InvalidInput
    from compiler.ops import linalg
    rng = np.random.default_rng(2)
    g = Graph()
    h = g.add_input("x", TensorType((1, 48), DType.F32))
    for k, n in ((48, 96), (96, 10)):
        h = g.add1(linalg.matmul, [h, g.const(rng.normal(0, 1 / np.sqrt(k), (k, n)).astype(np.float32))])
    g.outputs = [h]
    calib = [[rng.normal(0, 1, (1, 48)).astype(np.float32)] for _ in range(8)]
    cm = compiler.compile(g, TARGET, quantize="int8", calibration=calib, weight_bits=4)
    forms = [n.attrs["form"] for n in cm.graph.walk() if n.op is lay.unpack_weight]
    assert forms == ["vnni_matmul_int4"] * 2
    x = rng.normal(0, 1, (1, 48)).astype(np.float32)
    np.testing.assert_array_equal(cm.run(x)[0], interp.run(cm.graph, x)[0])
    with pytest.raises(InvalidInput, match="weight_bits needs quantize='int8'"):
        compiler.compile(g, TARGET, weight_bits=4)
    with pytest.raises(InvalidInput, match="weight_bits=4 with quantize='mixed'"):
        compiler.compile(g, TARGET, quantize="mixed", calibration=calib, size_budget=0.6, weight_bits=4)
