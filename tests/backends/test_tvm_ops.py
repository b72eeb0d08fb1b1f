"""Every op through the TVM backend against the reference interpreter.

Each case builds a small graph (several ops share one graph where that keeps the check
meaningful, to keep compile time down), compiles it for the host CPU and compares every
output with `compiler.interp.run`: float32 within rtol 1e-4 / atol 1e-5, integers and bools
bit-exact.
"""
from __future__ import annotations


import numpy as np
import pytest

pytest.importorskip("tvm")

from compiler import interp  # noqa: E402
from compiler.backends.tvm import BACKEND, LOWERINGS  # noqa: E402
from compiler.ir import Graph, Value  # noqa: E402
from compiler.ops import all_ops  # noqa: E402
from compiler.ops import elementwise as ew  # noqa: E402
from compiler.ops import linalg, nn  # noqa: E402
from compiler.ops import reduce as rd  # noqa: E402
from compiler.ops import shape as sh  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402

TARGET = Target("llvm")
F32, F16, I8, U8, I32, I64, BOOL = DType.F32, DType.F16, DType.I8, DType.U8, DType.I32, DType.I64, DType.BOOL


def rand(shape, dtype: DType, seed: int = 0, lo: float = -3.0, hi: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype is BOOL:
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.is_float:
        return rng.uniform(lo, hi, shape).astype(dtype.numpy)
    info = np.iinfo(dtype.numpy)
    return rng.integers(max(int(lo * 10), info.min), min(int(hi * 10), info.max) + 1, shape).astype(dtype.numpy)


def check(g: Graph, inputs: list[np.ndarray], rtol: float = 1e-4, atol: float = 1e-5) -> None:
    want = interp.run(g, *inputs)
    got = BACKEND.build(g, TARGET).run(inputs)
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape, f"output {i} ({g.outputs[i].name}): shape {a.shape} != {b.shape}"
        assert a.dtype == b.dtype, f"output {i} ({g.outputs[i].name}): dtype {a.dtype} != {b.dtype}"
        if np.issubdtype(b.dtype, np.floating):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=g.outputs[i].name)
        else:
            np.testing.assert_array_equal(a, b, err_msg=g.outputs[i].name)


def single(op, in_types: list[TensorType], consts: dict[int, np.ndarray] | None = None,
           seed: int = 0, **attrs) -> tuple[Graph, list[np.ndarray]]:
    """A graph of one `op` node; inputs are random, or the constants given by position."""
    g = Graph()
    consts = consts or {}
    args: list[Value] = []
    feeds = []
    for i, t in enumerate(in_types):
        if i in consts:
            args.append(g.const(consts[i], f"c{i}"))
        else:
            args.append(g.add_input(f"x{i}", t))
            feeds.append(rand(t.shape, t.dtype, seed + i))
    g.outputs = g.add(op, args, **attrs)
    return g, feeds


def fanout(x_type: TensorType, ops: list[tuple], seed: int = 0,
           lo: float = -3.0, hi: float = 3.0) -> tuple[Graph, list[np.ndarray]]:
    """One input feeding several single-input ops, each an output: `ops` = [(op, attrs)]."""
    g = Graph()
    x = g.add_input("x", x_type)
    g.outputs = [g.add1(op, [x], **attrs) for op, attrs in ops]
    return g, [rand(x_type.shape, x_type.dtype, seed, lo, hi)]


T = TensorType


# -- registry -----------------------------------------------------------------
def test_tvm_every_op_has_a_lowering():
    missing = [op.name for op in all_ops() if op not in LOWERINGS]
    assert not missing, f"ops without a tvm lowering: {missing}"
    assert BACKEND.supported_ops() == frozenset(all_ops())


# -- elementwise --------------------------------------------------------------
FLOAT_UNARY = [(ew.sigmoid, {}), (ew.tanh, {}), (ew.exp, {}), (ew.erf, {}), (ew.floor, {}),
               (ew.ceil, {}), (ew.neg, {}), (ew.abs_, {}), (ew.relu, {}), (ew.identity, {}),
               (ew.softplus, {}), (ew.hard_swish, {}), (ew.leaky_relu, {"alpha": 0.1}),
               (ew.elu, {"alpha": 0.7}), (ew.hard_sigmoid, {"alpha": 0.3, "beta": 0.4}),
               (ew.gelu, {}), (ew.gelu, {"approximate": "tanh"}), (ew.clip, {"min": -0.5, "max": 0.7}),
               (ew.clip, {"max": 1.25}), (ew.clip, {})]


def test_tvm_float_unary_ops():
    check(*fanout(T((3, 5, 17), F32), FLOAT_UNARY, lo=-6, hi=6))


def test_tvm_positive_domain_unary_ops():
    ops = [(ew.log, {}), (ew.sqrt, {}), (ew.reciprocal, {})]
    check(*fanout(T((4, 33), F32), ops, lo=0.05, hi=20))


def test_tvm_softplus_extremes():
    g = Graph()
    x = g.const(np.array([-100.0, -20.0, -1.0, 0.0, 1e-3, 1.0, 20.0, 80.0], np.float32))
    g.outputs = [g.add1(ew.softplus, [x])]
    check(g, [])


@pytest.mark.parametrize("dtype", [I8, I32, I64])
def test_tvm_int_unary_ops(dtype):
    ops = [(ew.relu, {}), (ew.neg, {}), (ew.abs_, {}), (ew.identity, {}),
           (ew.clip, {"min": -7.5, "max": 9.9}), (ew.clip, {"min": 2.5}), (ew.clip, {"max": -3.5})]
    check(*fanout(T((6, 19), dtype), ops, lo=-12, hi=12))


def test_tvm_logical_ops():
    g = Graph()
    a, b = g.add_input("a", T((4, 5), BOOL)), g.add_input("b", T((5,), BOOL))
    g.outputs = [g.add1(ew.logical_and, [a, b]), g.add1(ew.logical_or, [a, b]), g.add1(ew.logical_not, [a])]
    check(g, [rand((4, 5), BOOL, 1), rand((5,), BOOL, 2)])


BINARY = [ew.add, ew.sub, ew.mul, ew.div, ew.minimum, ew.maximum, ew.prelu, ew.equal, ew.less, ew.greater]


@pytest.mark.parametrize("dtype", [F32, I8, U8, I32, I64])
def test_tvm_binary_ops_broadcast(dtype):
    g = Graph()
    a, b = g.add_input("a", T((2, 3, 16), dtype)), g.add_input("b", T((3, 1), dtype))
    g.outputs = [g.add1(op, [a, b]) for op in BINARY]
    xa, xb = rand((2, 3, 16), dtype, 1, -5, 5), rand((3, 1), dtype, 2, -5, 5)
    if dtype.is_float:
        xb = np.where(np.abs(xb) < 0.1, 0.5, xb).astype(xb.dtype)
    check(g, [xa, xb])


@pytest.mark.parametrize("dtype", [I8, I32, I64])
def test_tvm_int_div_truncates_and_never_traps(dtype):
    info = np.iinfo(dtype.numpy)
    a = np.array([7, -7, 7, -7, 5, -5, info.min, info.min, 9, 0], dtype.numpy)
    b = np.array([2, 2, -2, -2, 0, 0, -1, 1, 3, -3], dtype.numpy)
    g = Graph()
    x, y = g.add_input("a", T(a.shape, dtype)), g.add_input("b", T(b.shape, dtype))
    g.outputs = [g.add1(ew.div, [x, y])]
    check(g, [a, b])


@pytest.mark.parametrize("dtype", [F32, I32, I64, I8])
def test_tvm_pow(dtype):
    if dtype.is_float:
        a, b = rand((3, 8), F32, 1, 0.1, 3), rand((3, 8), F32, 2, -2, 2)
    else:
        a = rand((3, 8), dtype, 1, -0.9, 0.9)
        b = np.random.default_rng(2).integers(0, 13, (3, 8)).astype(dtype.numpy)
    g = Graph()
    x, y = g.add_input("a", T(a.shape, dtype)), g.add_input("b", T(b.shape, dtype))
    g.outputs = [g.add1(ew.pow_, [x, y])]
    check(g, [a, b], rtol=2e-4)


def test_tvm_min_max_propagate_nan():
    g = Graph()
    a = g.const(np.array([1.0, np.nan, 2.0, np.nan], np.float32))
    b = g.const(np.array([np.nan, 1.0, 3.0, np.nan], np.float32))
    g.outputs = [g.add1(ew.minimum, [a, b]), g.add1(ew.maximum, [a, b])]
    check(g, [])


@pytest.mark.parametrize("dtype", [F32, I32, BOOL])
def test_tvm_where(dtype):
    g = Graph()
    c = g.add_input("c", T((4, 1, 6), BOOL))
    x, y = g.add_input("x", T((5, 6), dtype)), g.add_input("y", T((4, 5, 1), dtype))
    g.outputs = [g.add1(ew.where, [c, x, y])]
    check(g, [rand((4, 1, 6), BOOL, 1), rand((5, 6), dtype, 2), rand((4, 5, 1), dtype, 3)])


CAST_DTYPES = [F32, F16, I8, U8, I32, I64, BOOL]


@pytest.mark.parametrize("src", CAST_DTYPES)
def test_tvm_cast_to_every_dtype(src):
    g = Graph()
    x = g.add_input("x", T((3, 7), src))
    g.outputs = [g.add1(ew.cast, [x], to=dst) for dst in CAST_DTYPES]
    if src.is_float:     # in range for every destination; fractions test truncation
        xv = rand((3, 7), src, 4, 0, 120)
        xv[0, :4] = np.array([0.0, 0.4, 0.99, 1.5], src.numpy)
    else:
        xv = rand((3, 7), src, 4, 0, 12)
    check(g, [xv])


def test_tvm_cast_negative_float_truncates_toward_zero():
    g = Graph()
    x = g.const(np.array([-2.7, -0.5, 0.5, 2.7, -126.9], np.float32))
    g.outputs = [g.add1(ew.cast, [x], to=I32), g.add1(ew.cast, [x], to=I8), g.add1(ew.cast, [x], to=BOOL)]
    check(g, [])


# -- linalg -------------------------------------------------------------------
@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 1, 3, 4), (3, 4, 6)), ((4,), (4, 3)),
                                   ((3, 4), (4,)), ((2, 5, 8), (8, 16))])
def test_tvm_matmul(sa, sb):
    check(*single(linalg.matmul, [T(sa, F32), T(sb, F32)]))


def test_tvm_dft_every_form_within_round_off():
    """signal.dft (reference: numpy's FFT) in every form: pocketfft's FFT where it has a plan, else the matmul with
    exact twiddles (the irfft form); bit for bit: tests/backends/test_dft_precision.py."""
    from compiler.ops import signal
    g = Graph()
    c = g.add_input("c", TensorType((2, 10, 2), F32))
    r = g.add_input("r", TensorType((2, 10, 1), F32))
    forms = [(c, {}), (c, {"inverse": True}), (r, {"onesided": True}), (c, {"length": 7}),
             (c, {"inverse": True, "onesided": True, "length": 16}), (r, {"inverse": True, "length": 12})]
    g.outputs = [g.add1(signal.dft, [x], **{"length": 10, **a}) for x, a in forms]
    check(g, [rand((2, 10, 2), F32, 0), rand((2, 10, 1), F32, 1)])


def test_tvm_matmul_int32():
    check(*single(linalg.matmul, [T((5, 7), I32), T((7, 3), I32)]))


@pytest.mark.parametrize("eq,shapes", [("ij,jk->ik", [(3, 4), (4, 5)]),
                                       ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
                                       ("ij->ji", [(3, 4)]), ("bij->bj", [(2, 3, 4)])])
def test_tvm_einsum(eq, shapes):
    check(*single(linalg.einsum, [T(s, F32) for s in shapes], equation=eq))


CONV_CASES = {
    "2d_bias": ((2, 4, 9, 9), (6, 4, 3, 3), True, dict(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))),
    "2d_stride_asym": ((1, 3, 10, 11), (4, 3, 3, 2), False,
                       dict(strides=(2, 3), pads=(0, 1, 2, 0), dilations=(1, 1))),
    "2d_dilated_grouped": ((1, 4, 12, 12), (6, 2, 3, 3), True,
                           dict(strides=(1, 1), pads=(2, 2, 2, 2), dilations=(2, 2), groups=2)),
    "2d_depthwise": ((2, 8, 7, 7), (8, 1, 3, 3), True,
                     dict(strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1), groups=8)),
    "1d": ((2, 3, 17), (5, 3, 4), True, dict(strides=(2,), pads=(1, 2), dilations=(2,))),
    "1d_grouped": ((1, 4, 10), (4, 2, 3), False, dict(strides=(1,), pads=(1, 1), dilations=(1,), groups=2)),
    "3d": ((1, 2, 5, 6, 7), (3, 2, 2, 3, 3), True,
           dict(strides=(1, 2, 1), pads=(0, 1, 1, 1, 0, 1), dilations=(1, 1, 2))),
}


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_tvm_conv(case):
    xs, ws, bias, attrs = CONV_CASES[case]
    types = [T(xs, F32), T(ws, F32)] + ([T((ws[0],), F32)] if bias else [])
    consts = {1: rand(ws, F32, 7)} | ({2: rand((ws[0],), F32, 8)} if bias else {})
    check(*single(linalg.conv, types, consts, **attrs), rtol=1e-4, atol=1e-4)


def test_tvm_half_conv_sums_in_float32_as_the_reference():
    """A float16 depthwise conv with bias: products summed in float32, rounded once, then the bias
    added in half: bit-exact with the interpreter."""
    ws = (8, 1, 3, 3)
    consts = {1: rand(ws, F16, 7), 2: rand((8,), F16, 8)}
    g, feeds = single(linalg.conv, [T((1, 8, 9, 9), F16), T(ws, F16), T((8,), F16)], consts,
                      strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), groups=8)
    check(g, feeds, rtol=0, atol=0)


CONVT_CASES = {
    "2d_stride_outpad": ((1, 4, 5, 5), (4, 3, 3, 3), True,
                         dict(strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1), output_padding=(1, 1))),
    "2d_groups_dilation": ((2, 4, 4, 5), (4, 2, 3, 2), False,
                           dict(strides=(1, 2), pads=(0, 1, 2, 0), dilations=(2, 1), groups=2,
                                output_padding=(0, 1))),
    "1d": ((1, 3, 7), (3, 2, 4), True, dict(strides=(3,), pads=(2, 1), dilations=(1,), output_padding=(2,))),
    "3d": ((1, 2, 3, 3, 4), (2, 2, 2, 2, 3), True,
           dict(strides=(2, 1, 2), pads=(0, 0, 1, 0, 1, 1), dilations=(1, 1, 1), output_padding=(1, 0, 0))),
}


@pytest.mark.parametrize("case", list(CONVT_CASES))
def test_tvm_conv_transpose(case):
    xs, ws, bias, attrs = CONVT_CASES[case]
    m = ws[1] * attrs.get("groups", 1)
    types = [T(xs, F32), T(ws, F32)] + ([T((m,), F32)] if bias else [])
    check(*single(linalg.conv_transpose, types, {2: rand((m,), F32, 9)} if bias else {}, **attrs),
          rtol=1e-4, atol=1e-4)


# -- normalization, softmax, pooling -----------------------------------------
def test_tvm_batch_norm_and_instance_norm():
    g = Graph()
    x = g.add_input("x", T((2, 5, 6, 7), F32))
    c = [g.const(rand((5,), F32, s, 0.5, 2.0)) for s in range(4)]
    g.outputs = [g.add1(nn.batch_norm, [x, *c], epsilon=1e-3),
                 g.add1(nn.instance_norm, [x, c[0], c[1]], epsilon=1e-4)]
    check(g, [rand((2, 5, 6, 7), F32, 9)])


def test_tvm_instance_norm_1d():
    check(*single(nn.instance_norm, [T((3, 4, 10), F32), T((4,), F32), T((4,), F32)]), atol=1e-4)


@pytest.mark.parametrize("axis,pshape,bias", [(-1, (16,), True), (1, (3, 16), False), (-2, (1,), True)])
def test_tvm_layer_norm(axis, pshape, bias):
    types = [T((2, 3, 16), F32), T(pshape, F32)] + ([T(pshape, F32)] if bias else [])
    check(*single(nn.layer_norm, types, axis=axis, epsilon=1e-5), atol=1e-4)


@pytest.mark.parametrize("size", [3, 4])
def test_tvm_lrn(size):
    check(*single(nn.lrn, [T((2, 7, 5, 5), F32)], size=size, alpha=1e-3, beta=0.75, bias=2.0))


def test_tvm_softmax_and_log_softmax():
    ops = [(nn.softmax, {"axis": 1}), (nn.softmax, {}), (nn.log_softmax, {"axis": 0}),
           (nn.log_softmax, {"axis": -1})]
    check(*fanout(T((4, 6, 33), F32), ops, lo=-8, hi=8))


def test_tvm_half_softmax_rounds_as_the_reference():
    """float16 softmax rounds after each step as the reference does: bit-exact, on both axes."""
    check(*fanout(T((4, 9, 18), F16), [(nn.softmax, {"axis": 1}), (nn.softmax, {})], lo=-8, hi=8),
          rtol=0, atol=0)


POOL_CASES = {
    "2d": ((2, 3, 9, 9), dict(kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1))),
    "2d_ceil": ((1, 2, 10, 11), dict(kernel=(3, 2), strides=(2, 3), pads=(1, 0, 1, 1), dilations=(1, 1),
                                     ceil_mode=True)),
    "2d_dilated_ceil": ((1, 2, 12, 12), dict(kernel=(2, 2), strides=(3, 3), pads=(0, 0, 0, 0),
                                             dilations=(2, 2), ceil_mode=True)),
    "1d": ((2, 3, 15), dict(kernel=(4,), strides=(2,), pads=(2, 1), dilations=(1,))),
    "1d_ceil": ((2, 3, 15), dict(kernel=(4,), strides=(3,), pads=(1, 1), dilations=(1,), ceil_mode=True)),
    "3d": ((1, 2, 6, 7, 8), dict(kernel=(2, 3, 2), strides=(2, 2, 2), pads=(0, 1, 1, 1, 1, 0),
                                 dilations=(1, 1, 1))),
}


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_tvm_pools(case):
    xs, attrs = POOL_CASES[case]
    ops = [(nn.max_pool, attrs), (nn.avg_pool, dict(attrs, count_include_pad=False)),
           (nn.avg_pool, dict(attrs, count_include_pad=True))]
    check(*fanout(T(xs, F32), ops))


# -- reductions ---------------------------------------------------------------
REDUCE_OPS = [rd.reduce_sum, rd.reduce_mean, rd.reduce_max, rd.reduce_min, rd.reduce_prod, rd.reduce_l2]


@pytest.mark.parametrize("dtype", [F32, I32, I8])
def test_tvm_reductions(dtype):
    ops = [(op, {"axes": (1,), "keepdims": True}) for op in REDUCE_OPS]
    ops += [(op, {"axes": (0, -1), "keepdims": False}) for op in REDUCE_OPS]
    # floats near 1 keep prod well scaled; |x| <= 11 keeps int8 x*x from wrapping negative (NaN)
    lo, hi = (0.5, 1.5) if dtype.is_float else (-1.1, 1.1)
    check(*fanout(T((3, 5, 6), dtype), ops, lo=lo, hi=hi))


@pytest.mark.parametrize("dtype", [F32, I32])
def test_tvm_argmax_ties(dtype):
    x = np.array([[1, 5, 5, 2], [7, 7, 0, 7], [3, 1, 3, 3]], dtype.numpy)
    g = Graph()
    v = g.add_input("x", T(x.shape, dtype))
    g.outputs = [g.add1(rd.argmax, [v], axis=ax, keepdims=k, select_last_index=last)
                 for ax in (0, 1, -1) for k in (True, False) for last in (False, True)]
    check(g, [x])


@pytest.mark.parametrize("dtype", [F32, I32])
def test_tvm_cumsum(dtype):
    ops = [(rd.cumsum, dict(axis=ax, exclusive=e, reverse=r))
           for ax in (1, -1) for e in (False, True) for r in (False, True)]
    check(*fanout(T((3, 5, 4), dtype), ops))


@pytest.mark.parametrize("dtype", [F32, I32, U8])
def test_tvm_topk_with_ties(dtype):
    x = np.random.default_rng(5).integers(0, 4, (3, 9)).astype(dtype.numpy)   # many ties
    g = Graph()
    v = g.add_input("x", T(x.shape, dtype))
    outs = []
    for axis, k in ((-1, 4), (0, 2)):
        for largest in (True, False):
            outs += g.add(rd.topk, [v], k=k, axis=axis, largest=largest)
    g.outputs = outs
    check(g, [x])


# -- data movement ------------------------------------------------------------
def test_tvm_reshape_transpose_expand_tile():
    g = Graph()
    x = g.add_input("x", T((2, 3, 4), I64))
    g.outputs = [g.add1(sh.reshape, [x], shape=(4, 6)), g.add1(sh.transpose, [x], perm=(2, 0, 1)),
                 g.add1(sh.expand, [g.add1(sh.reshape, [x], shape=(2, 1, 3, 4))], shape=(2, 5, 3, 4)),
                 g.add1(sh.tile, [x], repeats=(2, 1, 3))]
    check(g, [rand((2, 3, 4), I64)])


@pytest.mark.parametrize("dtype", [F32, BOOL])
def test_tvm_concat(dtype):
    g = Graph()
    a, b = g.add_input("a", T((2, 3, 4), dtype)), g.add_input("b", T((2, 1, 4), dtype))
    c = g.const(rand((2, 2, 4), dtype, 3))
    g.outputs = [g.add1(sh.concat, [a, b, c], axis=1), g.add1(sh.concat, [a, a], axis=-1)]
    check(g, [rand((2, 3, 4), dtype, 1), rand((2, 1, 4), dtype, 2)])


def test_tvm_concat_drops_empty_operands():
    """An operand of size 0 along the axis (an empty state) adds nothing, also on the row-copy path."""
    g = Graph()
    a, e = g.add_input("a", T((16, 3, 4), F32)), g.add_input("e", T((16, 0, 4), F32))
    g.outputs = [g.add1(sh.concat, [e, a], axis=1), g.add1(sh.concat, [a, e, a], axis=1)]
    check(g, [rand((16, 3, 4), F32, 1), rand((16, 0, 4), F32, 2)])


SLICES = [dict(starts=(1,), ends=(4,), axes=(1,), steps=(1,)),
          dict(starts=(-3, 0), ends=(100, 7), axes=(2, 0), steps=(2, 3)),
          dict(starts=(5,), ends=(0,), axes=(1,), steps=(-2,)),
          dict(starts=(-1, 4), ends=(-9, 0), axes=(-1, 0), steps=(-1, -3))]


def test_tvm_slice_positive_and_negative_steps():
    check(*fanout(T((7, 6, 9), I32), [(sh.slice_, s) for s in SLICES]))


def test_tvm_slice_negative_step_to_the_front():
    """x[:, 5::-2]: slice_bounds normalizes the stop to -1; the backend must not read it as
    "the last element". (The interpreter's reference does, and returns an empty slice while
    the type rule says 3 elements, so this compares with numpy directly.)"""
    g = Graph()
    x = g.add_input("x", T((2, 6), I32))
    g.outputs = [g.add1(sh.slice_, [x], starts=(5,), ends=(-100,), axes=(1,), steps=(-2,))]
    xv = rand((2, 6), I32)
    np.testing.assert_array_equal(BACKEND.build(g, TARGET).run([xv])[0], xv[:, 5::-2])


@pytest.mark.parametrize("idx_dtype", [I32, I64])
def test_tvm_gather_negative_indices(idx_dtype):
    g = Graph()
    x = g.add_input("x", T((5, 6, 3), F32))
    i1 = g.const(np.array([0, -1, 3, -6, 5], idx_dtype.numpy))
    i2 = g.const(np.array([[4, -5], [0, -1]], idx_dtype.numpy))
    g.outputs = [g.add1(sh.gather, [x, i1], axis=1), g.add1(sh.gather, [x, i2], axis=0),
                 g.add1(sh.gather, [x, g.const(np.array(-2, idx_dtype.numpy))], axis=-1)]
    check(g, [rand((5, 6, 3), F32)])


@pytest.mark.parametrize("dtype", [F32, I32])
def test_tvm_pad_modes(dtype):
    ops = [(sh.pad, dict(pads=(1, 0, 2, 3, 1, 0), value=1.5)),
           (sh.pad, dict(pads=(-1, 2, 0, 0, -2, 1), value=-2.0)),
           (sh.pad, dict(pads=(2, 3, 1, 2, 4, 5), mode="reflect")),
           (sh.pad, dict(pads=(0, 4, 2, 1, 0, 3), mode="edge")),
           (sh.pad, dict(pads=(1, 5, 0, 3, 7, 2), mode="wrap"))]
    check(*fanout(T((3, 4, 5), dtype), ops))


def test_tvm_pad_size_one_axis():
    ops = [(sh.pad, dict(pads=(0, 2, 1, 1, 3, 0), mode=m)) for m in ("reflect", "edge", "wrap")]
    check(*fanout(T((2, 1, 3), F32), ops))


RESIZE_CASES = [
    dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    dict(mode="nearest", coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_floor"),
    dict(mode="nearest", coordinate_transformation_mode="align_corners", nearest_mode="round_prefer_ceil"),
    dict(mode="nearest", coordinate_transformation_mode="tf_half_pixel_for_nearest", nearest_mode="ceil"),
    dict(mode="linear", coordinate_transformation_mode="half_pixel"),
    dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
    dict(mode="linear", coordinate_transformation_mode="align_corners"),
    dict(mode="linear", coordinate_transformation_mode="asymmetric"),
]


@pytest.mark.parametrize("dtype", [F32, I32])
def test_tvm_resize(dtype):
    up = dict(sizes=(1, 2, 8, 10), scales=(1.0, 1.0, 2.0, 2.5))
    down = dict(sizes=(1, 2, 3, 2), scales=(1.0, 1.0, 0.75, 0.4))
    ops = [(sh.resize, dict(c, **s)) for c in RESIZE_CASES for s in (up, down)]
    check(*fanout(T((1, 2, 4, 4), dtype), ops))


# -- float16 ------------------------------------------------------------------
def test_tvm_float16_core_ops():
    g = Graph()
    x = g.add_input("x", T((1, 4, 8, 8), F16))
    w = g.const(rand((8, 4, 3, 3), F16, 1, -0.5, 0.5))
    y = g.add1(linalg.conv, [x, w], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))
    y = g.add1(ew.relu, [g.add1(ew.add, [y, g.const(rand((8, 1, 1), F16, 2))])])
    m = g.add1(linalg.matmul, [g.add1(sh.reshape, [y], shape=(8, 64)), g.const(rand((64, 16), F16, 3, -0.2, 0.2))])
    s = g.add1(nn.softmax, [m])
    ln = g.add1(nn.layer_norm, [m, g.const(rand((16,), F16, 4)), g.const(rand((16,), F16, 5))])
    g.outputs = [y, m, s, ln]
    check(g, [rand((1, 4, 8, 8), F16, 6, -1, 1)], rtol=2e-2, atol=3e-2)
