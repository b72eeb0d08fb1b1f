"""The Shiftmax kernel (tvm_kernels.shiftmax, int32 exponent) through the fast path, over the last axis (a row
at a time) and over an outer axis (16 rows side by side, no transpose): bit-exact with compiler.interp at the
extremes the op's type rule allows."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")

from compiler import interp  # noqa: E402
from tests.backends.kernel_ir import build, kernels  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import ivit, quant as q  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402

TARGET = Target("llvm", num_threads=1)


def _graph(shape, x_dt, scale, n, out_dt, requant, axis=-1):
    g = Graph()
    x = g.add_input("x", TensorType(shape, x_dt))
    y = g.add1(ivit.shiftmax, [x], scale=scale, n=n, axis=axis, dtype=out_dt, dividend_bits=62)
    if requant:
        y = g.add1(q.requant, [y], multiplier=[2054631936], shift=[49], qmin=0, qmax=255, dtype=DType.U8)
    g.outputs = [y]
    return g


CASES = [  # shape, x dtype, scale, n, shiftmax dtype, fused requant
    ((1, 2, 32, 128), DType.I16, 0.0038694, 15, DType.I32, True),      # BERT attention
    ((3, 48), DType.I8, 0.05, 15, DType.I8, False),
    ((2, 5, 37), DType.U8, 0.2, 20, DType.U8, False),                  # length not a multiple of 16
    ((4, 64), DType.I16, 2.0**-12, 10, DType.I16, False),              # |x0| = 4096: the largest n * x0
    ((1, 16, 4, 48), DType.I16, 0.01, 15, DType.I32, True, 1),         # a detector's 16 distance bins on axis 1
    ((2, 7, 32), DType.I8, 0.05, 15, DType.I8, False, -2),
    ((1, 16, 4, 21), DType.I16, 0.01, 15, DType.I32, True, 1),         # 84 rows side by side: 4 lanes
    ((3, 5, 7), DType.U8, 0.2, 20, DType.U8, False, 1),                # 7: one row at a time
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[1].value}_{c[0][-1]}_{c[4].value}_rq{int(c[5])}"
                                                      f"{'_axis' + str(c[6]) if len(c) > 6 else ''}")
def test_shiftmax_kernel_bit_exact(case):
    shape, x_dt, scale, n, out_dt, requant, *axis = case
    axis = axis[0] % len(shape) if axis else len(shape) - 1
    g = _graph(shape, x_dt, scale, n, out_dt, requant, axis)
    assert {grp.kind for grp in kernels(g, TARGET)[1]} == {"shiftmax"}
    info = np.iinfo(x_dt.numpy)
    rng = np.random.default_rng(shape[-1])
    x = rng.integers(info.min, info.max + 1, shape).astype(x_dt.numpy)
    flat = np.moveaxis(x, axis, -1).reshape(-1, shape[axis]).copy()
    flat[0] = info.max                        # an all-equal row
    flat[1] = info.min
    flat[1, 0] = info.max                     # one huge logit, the rest at the bottom of the range
    x = np.ascontiguousarray(np.moveaxis(flat.reshape(np.moveaxis(x, axis, -1).shape), -1, axis))
    got = build(g, TARGET).run([x])[0]
    np.testing.assert_array_equal(got, interp.run(g, x)[0])


def test_int32_input_takes_the_generic_lowering():
    g = Graph()
    x = g.add_input("x", TensorType((2, 16), DType.I32))
    g.outputs = [g.add1(ivit.shiftmax, [x], scale=0.01, n=15, axis=-1, dtype=DType.I8)]
    exe = build(g, TARGET)
    assert "call_tir(cls.shiftmax_" not in exe.source("relax")       # the body, op by op
    x = np.random.default_rng(0).integers(-300, 300, (2, 16)).astype(np.int32)
    np.testing.assert_array_equal(exe.run([x])[0], interp.run(g, x)[0])
