"""The indexing, extra unary math, bitwise and recurrent ops through the TVM backend against
the reference interpreter (float within rtol 1e-4 / atol 1e-5, integers and bools exact).
Several ops share one graph where that keeps compile time down."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import interp
from compiler.ir import Graph
from compiler.ops import bitwise, indexing, recurrent
from compiler.ops import unary_math as um
from compiler.types import DType, TensorType

tvm_backend = pytest.importorskip("compiler.backends.tvm")
F32, I32, I64 = DType.F32, DType.I32, DType.I64


def check(g: Graph, inputs: list[np.ndarray]) -> None:
    from compiler.target import Target
    want = interp.run(g, *inputs)
    got = tvm_backend.BACKEND.build(g, Target("llvm")).run(inputs)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and a.dtype == b.dtype, f"output {i}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        if b.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"output {i}")
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"output {i}")


def test_tvm_unary_math_and_float_tests():
    g = Graph()
    x = g.add_input("x", TensorType((4, 8), F32))
    ops = [(um.sin, {}), (um.cos, {}), (um.tan, {}), (um.atan, {}), (um.sinh, {}), (um.cosh, {}),
           (um.asinh, {}), (um.round_, {}), (um.isnan, {}), (um.isinf, {}),
           (um.isinf, {"detect_negative": False}), (um.isinf, {"detect_positive": False})]
    g.outputs = [g.add1(op, [x], **a) for op, a in ops]
    data = np.random.default_rng(0).uniform(-1.4, 1.4, (4, 8)).astype(np.float32)
    data[0, :6] = [np.nan, np.inf, -np.inf, 0.5, 1.5, -2.5]      # specials, ties to even
    check(g, [data])


def test_tvm_inverse_trig_in_domain():
    g = Graph()
    x = g.add_input("x", TensorType((16,), F32))
    y = g.add_input("y", TensorType((16,), F32))
    g.outputs = [g.add1(um.asin, [x]), g.add1(um.acos, [x]), g.add1(um.atanh, [x]),
                 g.add1(um.acosh, [y])]
    rng = np.random.default_rng(1)
    check(g, [rng.uniform(-0.9, 0.9, 16).astype(np.float32), rng.uniform(1, 4, 16).astype(np.float32)])


@pytest.mark.parametrize("dtype", [DType.I8, DType.U8, DType.I32, DType.U16, DType.U32, DType.U64, DType.I64])
def test_tvm_bitwise_and_shifts(dtype):
    g = Graph()
    a = g.add_input("a", TensorType((3, 8), dtype))
    s = g.add_input("s", TensorType((8,), dtype))
    g.outputs = [g.add1(bitwise.bitwise_and, [a, s]), g.add1(bitwise.bitwise_or, [a, s]),
                 g.add1(bitwise.bitwise_xor, [a, s]), g.add1(bitwise.bitwise_not, [a]),
                 g.add1(bitwise.bit_shift, [a, s], direction="left"),
                 g.add1(bitwise.bit_shift, [a, s], direction="right")]
    bits = dtype.numpy.itemsize * 8
    rng = np.random.default_rng(2)
    lo = -100 if dtype.numpy.kind == "i" else 0
    shifts = np.array([0, 1, 3, bits - 1, bits, bits + 5, 2, 1 if lo == 0 else -1], dtype.numpy)
    check(g, [rng.integers(lo, 100, (3, 8)).astype(dtype.numpy), shifts])


@pytest.mark.parametrize("idx_dtype", [I32, I64])
def test_tvm_gathers_and_one_hot(idx_dtype):
    g = Graph()
    x = g.add_input("x", TensorType((3, 4, 5), F32))
    i = g.add_input("i", TensorType((3, 2, 5), idx_dtype))
    nd = g.const(np.array([[0, -1], [2, 3], [1, 0]], idx_dtype.numpy), "nd")
    hot = g.add_input("h", TensorType((2, 3), idx_dtype))
    values = g.const(np.array([-1.0, 3.0], np.float32), "v")
    g.outputs = [g.add1(indexing.gather_elements, [x, i], axis=1),
                 g.add1(indexing.gather_nd, [x, nd]),
                 g.add1(indexing.one_hot, [hot, values], depth=4, axis=1),
                 g.add1(indexing.trilu, [x], upper=True, k=1),
                 g.add1(indexing.trilu, [x], upper=False, k=-1)]
    rng = np.random.default_rng(3)
    check(g, [rng.standard_normal((3, 4, 5)).astype(np.float32),
              rng.integers(-4, 4, (3, 2, 5)).astype(idx_dtype.numpy),
              np.array([[0, 3, -1], [2, 7, -5]], idx_dtype.numpy)])


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_tvm_scatters(reduction):
    g = Graph()
    x = g.add_input("x", TensorType((4, 3), F32))
    u = g.add_input("u", TensorType((2, 3), F32))
    idx = g.const(np.array([[1, 0, -1], [1, 3, 0]], np.int64), "i")
    nd = g.const(np.array([[0], [-1]], np.int64), "nd")
    g.outputs = [g.add1(indexing.scatter_elements, [x, idx, u], axis=0, reduction=reduction),
                 g.add1(indexing.scatter_nd, [x, nd, u], reduction=reduction)]
    rng = np.random.default_rng(4)
    check(g, [rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((2, 3)).astype(np.float32)])


def _recurrent_graph(op, direction: str, steps=5, n=3, i=4, h=6, **attrs) -> tuple[Graph, list]:
    kind = op.short_name
    gates, d = recurrent.GATES[kind], 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(5)
    g = Graph()
    x = g.add_input("x", TensorType((steps, n, i), F32))
    lens = g.add_input("lens", TensorType((n,), I32))

    def c(shape, name):
        return g.const((rng.standard_normal(shape) * 0.5).astype(np.float32), name)
    args = [x, c((d, gates * h, i), "w"), c((d, gates * h, h), "r"), c((d, 2 * gates * h), "b"), lens,
            c((d, n, h), "h0")]
    if kind == "lstm":
        args += [c((d, n, h), "c0"), c((d, 3 * h), "p")]
    g.outputs = g.add(op, args, hidden_size=h, direction=direction, **attrs)
    return g, [rng.standard_normal((steps, n, i)).astype(np.float32), np.array([steps, 2, 4], np.int32)]


@pytest.mark.parametrize("op", [recurrent.lstm, recurrent.gru, recurrent.rnn], ids=lambda o: o.name)
def test_tvm_recurrent_bidirectional_with_lengths(op):
    check(*_recurrent_graph(op, "bidirectional"))


@pytest.mark.parametrize("op,attrs", [
    (recurrent.lstm, {"direction": "reverse", "clip": 0.4, "input_forget": True}),
    (recurrent.lstm, {"direction": "forward", "activations": "hardsigmoid,elu,softsign",
                      "activation_alpha": (0.3, 0.5), "activation_beta": (0.4,)}),
    (recurrent.gru, {"direction": "forward", "linear_before_reset": True}),
    (recurrent.gru, {"direction": "reverse", "activations": "sigmoid,relu"}),
    (recurrent.rnn, {"direction": "forward", "activations": "scaledtanh", "activation_alpha": (0.7,),
                     "activation_beta": (1.3,)}),
], ids=lambda v: str(v))
def test_tvm_recurrent_variants(op, attrs):
    check(*_recurrent_graph(op, **attrs))


@pytest.mark.parametrize("dtype,shape", [(DType.BOOL, (3, 4)), (F32, (3, 0)), (I32, (3, 0))])
def test_tvm_reductions_of_bools_and_empty_sets(dtype, shape):
    """max/min of bools; over an empty axis every reduction gives its identity (-inf for max)."""
    from compiler.ops import reduce as rd
    g = Graph()
    x = g.add_input("x", TensorType(shape, dtype))
    ops = [rd.reduce_max, rd.reduce_min] + ([] if dtype is DType.BOOL else [rd.reduce_sum, rd.reduce_prod])
    g.outputs = [g.add1(op, [x], axes=(1,), keepdims=k) for op in ops for k in (False, True)]
    data = (np.random.default_rng(6).random(shape) > 0.5).astype(dtype.numpy)
    check(g, [data])
    if dtype is F32:
        np.testing.assert_array_equal(interp.run(g, data)[0], [-np.inf] * 3)


@pytest.mark.parametrize("dtype", [DType.I8, DType.I16, I32, I64, DType.U8, DType.U16, DType.U32, DType.U64,
                                   DType.F16, F32, DType.F64], ids=lambda d: d.value)
def test_tvm_mod_both_ways(dtype):
    """nn.mod, fmod and floored, broadcasting: mixed signs, divisors 0 and -1 with the type's minimum
    (0, never a trap), and for floats inf and nan."""
    from compiler.ops import elementwise as ew
    g = Graph()
    a = g.add_input("a", TensorType((2, 8), dtype))
    b = g.add_input("b", TensorType((8,), dtype))
    g.outputs = [g.add1(ew.mod, [a, b], fmod=f) for f in (False, True)]
    if dtype.is_float:
        x = [[-4.3, 7.2, 5.0, 4.3, -7.2, 8.0, -3.0, np.inf], [3.0, -0.0, 2.5, 1.0, -1.0, np.nan, 6.0, 1.5]]
        y = [2.1, -3.4, 8.0, -2.1, np.inf, -np.inf, 0.0, 2.0]
    else:
        lo, hi = np.iinfo(dtype.numpy).min, np.iinfo(dtype.numpy).max
        x = [[-4, 7, 5, 4, -7, 8, lo, hi], [9, -9, 0, 3, lo, -1, 1, lo]] if lo else \
            [[4, 7, 5, 4, 7, 8, 0, hi], [9, 9, 0, 3, 255, 1, 1, hi - 1]]
        y = [2, -3, 8, -2, 3, -1, 0, 7] if lo else [2, 3, 8, 2, 3, 1, 0, 7]
    check(g, [np.array(x, dtype.numpy), np.array(y, dtype.numpy)])


@pytest.mark.parametrize("dtype", [F32, I32])
def test_tvm_cumprod(dtype):
    from compiler.ops import reduce as rd
    g = Graph()
    x = g.add_input("x", TensorType((3, 5), dtype))
    g.outputs = [g.add1(rd.cumprod, [x], axis=ax, exclusive=e, reverse=r)
                 for ax in (0, 1) for e in (False, True) for r in (False, True)]
    check(g, [np.random.default_rng(7).integers(-3, 4, (3, 5)).astype(dtype.numpy)])
