"""Every op the MLIR (IREE) backend claims, against the reference interpreter.

Each case builds a small graph (many ops share one graph: an IREE compile costs ~0.5-2 s),
compiles it for the host CPU and compares every output with `compiler.interp.run`: float32
within rtol 1e-4 / atol 1e-5, integers and bools bit-exact.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("iree.compiler")
pytest.importorskip("iree.runtime")

from compiler import interp
from compiler.backends.mlir import BACKEND, LOWERINGS
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import indexing, ivit, linalg, nn
from compiler.ops import quant as q
from compiler.ops import reduce as rd
from compiler.ops import shape as sh
from compiler.ops import unary_math as um
from compiler.ops.quant import INT_RANGE
from compiler.target import Target
from compiler.types import DType, TensorType
from passes.ivit import DIVIDEND_BITS, GELU_N, GELU_SIGMA_BITS, SOFTMAX_N, TANH_N, pick_n

TARGET = Target("llvm", num_threads=1)
F32, I8, U8, I16, I32, I64, BOOL = DType.F32, DType.I8, DType.U8, DType.I16, DType.I32, DType.I64, DType.BOOL
T = TensorType
TESTED: set = set()


def rand(shape, dtype: DType, seed: int = 0, lo: float = -3.0, hi: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype is BOOL:
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.is_float:
        return rng.uniform(lo, hi, shape).astype(dtype.numpy)
    info = np.iinfo(dtype.numpy)
    return rng.integers(max(int(lo), info.min), min(int(hi), info.max) + 1, shape).astype(dtype.numpy)


def check(g: Graph, inputs: list[np.ndarray], rtol: float = 1e-4, atol: float = 1e-5) -> None:
    TESTED.update(n.op for n in g.nodes)
    want = interp.run(g, *inputs)
    got = BACKEND.build(g, TARGET).run(inputs)
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        name = f"output {i} ({g.outputs[i].name}, {g.outputs[i].producer.op.name if g.outputs[i].producer else ''})"
        assert a.shape == b.shape, f"{name}: shape {a.shape} != {b.shape}"
        assert a.dtype == b.dtype, f"{name}: dtype {a.dtype} != {b.dtype}"
        if np.issubdtype(b.dtype, np.floating):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=name)
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)


def fanout(x_type: TensorType, ops: list[tuple], seed: int = 0, lo: float = -3.0, hi: float = 3.0):
    """One input feeding several single-input ops, each an output: `ops` = [(op, attrs)]."""
    g = Graph()
    x = g.add_input("x", x_type)
    g.outputs = [g.add1(op, [x], **attrs) for op, attrs in ops]
    return g, [rand(x_type.shape, x_type.dtype, seed, lo, hi)]


# -- elementwise --------------------------------------------------------------
def test_mlir_float_unary_and_positive_domain():
    g = Graph()
    x = g.add_input("x", T((3, 17), F32))
    p = g.add_input("p", T((4, 9), F32))
    ops = [(ew.sigmoid, {}), (ew.tanh, {}), (ew.exp, {}), (ew.erf, {}), (ew.floor, {}), (ew.ceil, {}),
           (ew.neg, {}), (ew.abs_, {}), (ew.relu, {}), (ew.identity, {}), (ew.softplus, {}),
           (ew.hard_swish, {}), (ew.leaky_relu, {"alpha": 0.1}), (ew.elu, {"alpha": 0.7}),
           (ew.hard_sigmoid, {"alpha": 0.3, "beta": 0.4}), (ew.gelu, {}), (ew.gelu, {"approximate": "tanh"}),
           (ew.clip, {"min": -0.5, "max": 0.7}), (ew.clip, {"max": 1.25}), (ew.clip, {})]
    g.outputs = [g.add1(op, [x], **a) for op, a in ops]
    g.outputs += [g.add1(op, [p]) for op in (ew.log, ew.sqrt, ew.reciprocal)]
    check(g, [rand((3, 17), F32, 0, -6, 6), rand((4, 9), F32, 1, 0.05, 20)])


def test_mlir_int_unary_and_casts():
    g = Graph()
    x = g.add_input("x", T((6, 7), I8))
    u = g.add_input("u", T((6, 7), U8))
    f = g.add_input("f", T((6, 7), F32))
    b = g.add_input("b", T((6, 7), BOOL))
    outs = [g.add1(op, [x], **a) for op, a in [(ew.relu, {}), (ew.neg, {}), (ew.abs_, {}), (ew.identity, {}),
                                              (ew.clip, {"min": -7.5, "max": 9.9}), (ew.clip, {"min": 2.5})]]
    outs += [g.add1(ew.clip, [u], min=3.7, max=200.2), g.add1(ew.relu, [u]), g.add1(ew.logical_not, [b])]
    for src in (x, u, f, b):
        for to in (F32, I8, U8, I32, I64, BOOL, DType.F16):
            outs.append(g.add1(ew.cast, [src], to=to))
    g.outputs = outs
    check(g, [rand((6, 7), I8, 0, -128, 127), rand((6, 7), U8, 1, 0, 255), rand((6, 7), F32, 2, -300, 300),
              rand((6, 7), BOOL, 3)])


def test_mlir_float_tests():
    g = Graph()
    x = g.add_input("x", T((2, 6), F32))
    g.outputs = [g.add1(um.isnan, [x])] + [g.add1(um.isinf, [x], detect_positive=p, detect_negative=n)
                                           for p, n in ((True, True), (True, False), (False, True), (False, False))]
    check(g, [np.array([[0, np.nan, np.inf, -np.inf, 1e38, -2], [-np.nan, 3, -np.inf, np.inf, 0, np.nan]], np.float32)])


def test_mlir_binary_broadcast_compare_where():
    g = Graph()
    a = g.add_input("a", T((2, 3, 5), F32))
    b = g.add_input("b", T((3, 1), F32))
    c = g.add_input("c", T((2, 3, 5), BOOL))
    outs = [g.add1(op, [a, b]) for op in (ew.add, ew.sub, ew.mul, ew.div, ew.minimum, ew.maximum, ew.prelu,
                                          ew.equal, ew.less, ew.greater)]
    outs.append(g.add1(ew.pow_, [g.add1(ew.abs_, [a]), b]))
    outs.append(g.add1(ew.where, [c, a, b]))
    ca = g.add1(ew.less, [a, b])
    outs += [g.add1(ew.logical_and, [c, ca]), g.add1(ew.logical_or, [c, ca])]
    g.outputs = outs
    check(g, [rand((2, 3, 5), F32, 0), rand((3, 1), F32, 1, 0.5, 2), rand((2, 3, 5), BOOL, 2)])


@pytest.mark.parametrize("dt", [I8, U8, I32])
def test_mlir_int_binary(dt):
    g = Graph()
    a = g.add_input("a", T((4, 6), dt))
    b = g.add_input("b", T((4, 6), dt))
    outs = [g.add1(op, [a, b]) for op in (ew.add, ew.sub, ew.mul, ew.div, ew.minimum, ew.maximum,
                                          ew.equal, ew.less, ew.greater)]
    outs.append(g.add1(ew.pow_, [a, g.const(np.arange(24).reshape(4, 6).astype(dt.numpy) % 7)]))
    g.outputs = outs
    lo = 0 if dt is U8 else -127     # the reference's |INT_MIN| overflows: INT_MIN / 9 gives 15 there
    av = rand((4, 6), dt, 0, lo, 127)
    bv = rand((4, 6), dt, 1, lo, 127)
    bv[0, :3] = 0                                  # x / 0 = x
    if dt is not U8:
        av[1, 0], bv[1, 0] = np.iinfo(dt.numpy).min, -1     # INT_MIN / -1 wraps
    check(g, [av, bv])


# -- contractions ---------------------------------------------------------------
def test_mlir_matmul_einsum():
    g = Graph()
    a = g.add_input("a", T((2, 3, 4, 8), F32))
    w = g.const(rand((8, 5), F32, 1))
    b = g.add_input("b", T((3, 8, 6), F32))
    v = g.add_input("v", T((8,), F32))
    g.outputs = [g.add1(linalg.matmul, [a, w]), g.add1(linalg.matmul, [a, b]), g.add1(linalg.matmul, [a, v]),
                 g.add1(linalg.matmul, [v, w]),
                 g.add1(linalg.einsum, [a, b], equation="xbik,bkj->xbij"),
                 g.add1(linalg.einsum, [a], equation="xbik->bk")]
    check(g, [rand((2, 3, 4, 8), F32, 0), rand((3, 8, 6), F32, 2), rand((8,), F32, 3)], rtol=1e-4, atol=1e-4)


def test_mlir_conv_variants():
    g = Graph()
    x = g.add_input("x", T((1, 4, 9, 9), F32))
    x1 = g.add_input("x1", T((1, 4, 11), F32))
    wb = rand((6, 4, 3, 3), F32, 1), rand((6,), F32, 2)
    outs = [g.add1(linalg.conv, [x, g.const(wb[0]), g.const(wb[1])], strides=(2, 1), pads=(1, 0, 1, 2),
                   dilations=(1, 2)),
            g.add1(linalg.conv, [x, g.const(rand((4, 1, 3, 3), F32, 3))], strides=(1, 1), pads=(1, 1, 1, 1),
                   dilations=(1, 1), groups=4),
            g.add1(linalg.conv, [x, g.const(rand((6, 2, 1, 3), F32, 4))], strides=(1, 2), pads=(0, 1, 0, 1),
                   dilations=(1, 1), groups=2),
            g.add1(linalg.conv, [x1, g.const(rand((5, 4, 3), F32, 5)), g.const(rand((5,), F32, 6))],
                   strides=(2,), pads=(1, 1), dilations=(1,))]
    g.outputs = outs
    check(g, [rand((1, 4, 9, 9), F32, 0), rand((1, 4, 11), F32, 7)], atol=1e-4)


# -- nn ---------------------------------------------------------------------------
def test_mlir_norms_softmax():
    g = Graph()
    x = g.add_input("x", T((2, 4, 6), F32))
    y = g.add_input("y", T((2, 3, 4, 4), F32))
    c = [g.const(rand((3,), F32, s, 0.5, 2)) for s in range(4)]
    g.outputs = [g.add1(nn.softmax, [x], axis=-1), g.add1(nn.softmax, [x], axis=1),
                 g.add1(nn.log_softmax, [x], axis=2),
                 g.add1(nn.layer_norm, [x, g.const(rand((6,), F32, 5)), g.const(rand((6,), F32, 6))], axis=-1),
                 g.add1(nn.layer_norm, [x, g.const(rand((4, 6), F32, 7))], axis=1, epsilon=1e-3),
                 g.add1(nn.batch_norm, [y, *c]),
                 g.add1(nn.instance_norm, [y, c[0], c[1]]),
                 g.add1(nn.lrn, [y], size=3, alpha=0.2, beta=0.75, bias=2.0),
                 g.add1(nn.lrn, [y], size=4, alpha=1e-3, beta=0.5, bias=1.0),
                 g.add1(nn.lrn, [x], size=5)]
    check(g, [rand((2, 4, 6), F32, 8), rand((2, 3, 4, 4), F32, 9)])


def test_mlir_pooling():
    g = Graph()
    x = g.add_input("x", T((1, 3, 9, 8), F32))
    xi = g.add_input("xi", T((1, 2, 7), I8))
    base = {"kernel": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1), "dilations": (1, 1)}
    g.outputs = [g.add1(nn.max_pool, [x], **base),
                 g.add1(nn.max_pool, [x], **dict(base, ceil_mode=True, pads=(0, 0, 0, 0))),
                 g.add1(nn.avg_pool, [x], **base),
                 g.add1(nn.avg_pool, [x], **dict(base, count_include_pad=True)),
                 g.add1(nn.avg_pool, [x], **dict(base, ceil_mode=True, kernel=(2, 3))),
                 g.add1(nn.max_pool, [xi], kernel=(2,), strides=(2,), pads=(0, 1), dilations=(1,))]
    check(g, [rand((1, 3, 9, 8), F32, 0), rand((1, 2, 7), I8, 1, -128, 127)])


# -- reductions ---------------------------------------------------------------------
def test_mlir_reductions():
    g = Graph()
    x = g.add_input("x", T((3, 4, 5), F32))
    xi = g.add_input("xi", T((3, 4, 5), I32))
    outs = []
    for op in (rd.reduce_sum, rd.reduce_mean, rd.reduce_max, rd.reduce_min, rd.reduce_prod, rd.reduce_l2):
        outs += [g.add1(op, [x], axes=(1,), keepdims=True), g.add1(op, [x], axes=(0, 2), keepdims=False)]
    for op in (rd.reduce_sum, rd.reduce_max, rd.reduce_min, rd.reduce_mean):
        outs.append(g.add1(op, [xi], axes=(-1,), keepdims=False))
    outs += [g.add1(rd.argmax, [x], axis=1), g.add1(rd.argmax, [xi], axis=2, keepdims=False,
                                                     select_last_index=True)]
    g.outputs = outs
    check(g, [rand((3, 4, 5), F32, 0, 0.5, 1.5), rand((3, 4, 5), I32, 1, -3, 3)])


# -- shapes ---------------------------------------------------------------------------
def test_mlir_shape_ops():
    g = Graph()
    x = g.add_input("x", T((2, 3, 4), F32))
    i = g.add_input("i", T((2, 2), I64))
    g.outputs = [g.add1(sh.reshape, [x], shape=(4, 6)), g.add1(sh.transpose, [x], perm=(2, 0, 1)),
                 g.add1(sh.concat, [x, x, g.const(rand((2, 1, 4), F32, 1))], axis=1),
                 g.add1(sh.slice_, [x], starts=(1, 0), ends=(3, 10), axes=(1, 2), steps=(1, 2)),
                 g.add1(sh.slice_, [x], starts=(-1, 3), ends=(-100, 0), axes=(0, 2), steps=(-1, -2)),
                 g.add1(sh.gather, [x, i], axis=1),
                 g.add1(sh.expand, [g.add1(sh.slice_, [x], starts=(0,), ends=(1,), axes=(1,), steps=(1,))],
                        shape=(3, 2, 5, 4)),
                 g.add1(sh.tile, [x], repeats=(2, 1, 3)),
                 g.add1(sh.pad, [x], pads=(0, 1, -1, 1, 0, 2), value=1.5)]
    g.outputs += [g.add1(sh.pad, [x], pads=(0, 2, 3, 1, 1, 0), mode=m) for m in ("edge", "reflect", "wrap")]
    g.outputs += [g.add1(indexing.trilu, [x], upper=u, k=k) for u, k in ((True, 1), (False, -1), (True, -2))]
    check(g, [rand((2, 3, 4), F32, 0), np.array([[0, -1], [2, 1]], np.int64)])


def test_mlir_nearest_resize():
    g = Graph()
    x = g.add_input("x", T((1, 2, 3, 5), F32))
    xi = g.add_input("xi", T((1, 2, 3, 5), I8))
    g.outputs = [g.add1(sh.resize, [x], sizes=(1, 2, 6, 10), scales=(1.0, 1.0, 2.0, 2.0), mode="nearest",
                        coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
                 g.add1(sh.resize, [xi], sizes=(1, 2, 7, 4), scales=(1.0, 1.0, 7 / 3, 0.8), mode="nearest"),
                 g.add1(sh.resize, [x], sizes=(1, 2, 2, 9), scales=(1.0, 1.0, 2 / 3, 1.8), mode="nearest",
                        coordinate_transformation_mode="align_corners", nearest_mode="ceil")]
    check(g, [rand((1, 2, 3, 5), F32, 0), rand((1, 2, 3, 5), I8, 1, -128, 127)])


# -- quantized -----------------------------------------------------------------------------
def test_mlir_quantize_dequantize():
    g = Graph()
    x = g.add_input("x", T((4, 16), F32))
    qi = g.add1(q.quantize, [x], scale=0.05, zero_point=-3, dtype=I8, qmin=-128, qmax=127)
    qu = g.add1(q.quantize, [x], scale=0.1, zero_point=128, dtype=U8, qmin=0, qmax=255)
    q4 = g.add1(q.quantize, [x], scale=0.5, zero_point=0, dtype=DType.I4, qmin=-8, qmax=7)
    g.outputs = [qi, qu, q4, g.add1(q.dequantize, [qi], scale=(0.05,), zero_point=(-3,)),
                 g.add1(q.dequantize, [qu], scale=tuple(np.linspace(0.01, 0.2, 16)),
                        zero_point=tuple(range(120, 136)), axis=1)]
    xs = rand((4, 16), F32, 0, -8, 8)
    xs[0, :8] = np.array([0.025, -0.025, 0.075, 0.125, -0.175, 1e9, -np.inf, 0.0], np.float32)  # ties, range
    xs[1, :4] = np.array([0.05, 0.15, 0.25, -0.35], np.float32) * 0.5
    check(g, [xs])


def _requant(g, x, m, c, **kw):
    base = {"zero_point": 0, "in_zero_point": 0, "qmin": -128, "qmax": 127, "dtype": I8}
    base.update(kw)
    return g.add1(q.requant, [x], multiplier=tuple(m), shift=tuple(c), **base)


def test_mlir_requant_edge_cases():
    g = Graph()
    x = g.add_input("x", T((3, 4, 5), I32))
    x8 = g.add_input("x8", T((3, 4), U8))
    g.outputs = [
        _requant(g, x, [1], [0]),                                   # c = 0: no rounding term
        _requant(g, x, [1], [1]),                                   # ties at .5, negative values
        _requant(g, x, [3], [2], zero_point=5),
        _requant(g, x, [2**31 - 1], [62], dtype=I32, qmin=-2**31, qmax=2**31 - 1),   # large m and c
        _requant(g, x, [1518500250], [38], in_zero_point=-7, dtype=I16, qmin=-32768, qmax=32767),
        _requant(g, x, [1, 3, 5, 2**30], [0, 1, 2, 40], axis=1),       # per channel
        _requant(g, x, [7, 9, 11, 13, 15], [3, 0, 1, 5, 62], axis=-1, dtype=U8, qmin=0, qmax=255,
                 zero_point=128),
        _requant(g, x8, [1 << 20], [21], in_zero_point=128, dtype=DType.I4, qmin=-8, qmax=7),
    ]
    xv = rand((3, 4, 5), I32, 0, -2**31, 2**31 - 1)
    xv[0, 0] = [-3, -2, -1, 1, 3]                                # ties for c = 1
    xv[1, 0] = [2**31 - 1, -2**31, 0, 6, -6]
    check(g, [xv, rand((3, 4), U8, 1, 0, 255)])


def test_mlir_dft():
    from compiler.ops import signal
    g = Graph()
    c = g.add_input("c", T((2, 10, 2), F32))
    r = g.add_input("r", T((2, 10, 1), F32))
    forms = [(c, {}), (c, {"inverse": True}), (r, {"onesided": True}), (c, {"length": 7}),
             (c, {"inverse": True, "onesided": True, "length": 16})]
    g.outputs = [g.add1(signal.dft, [x], **{"length": 10, **a}) for x, a in forms]
    check(g, [rand((2, 10, 2), F32, 0), rand((2, 10, 1), F32, 1)])


def test_mlir_qconv_qmatmul():
    g = Graph()
    x = g.add_input("x", T((1, 4, 7, 7), I8))
    xu = g.add_input("xu", T((1, 4, 7, 7), U8))
    a = g.add_input("a", T((2, 5, 16), I8))
    au = g.add_input("au", T((5, 16), U8))
    w = g.const(rand((8, 4, 3, 3), I8, 1, -128, 127))
    bias = g.const(rand((8,), I32, 2, -1000, 1000))
    conv_a = {"strides": (1, 1), "pads": (1, 1, 1, 1), "dilations": (1, 1)}
    wm = g.const(rand((16, 6), I8, 3, -128, 127))
    g.outputs = [g.add1(q.conv, [x, w, bias], **conv_a),
                 g.add1(q.conv, [xu, w], x_zero_point=131, strides=(2, 2), pads=(0, 1, 1, 0), dilations=(1, 1)),
                 g.add1(q.conv, [x, g.const(rand((4, 1, 3, 3), I8, 4, -128, 127))], groups=4, x_zero_point=-5,
                        **conv_a),
                 g.add1(q.matmul, [a, wm]),
                 g.add1(q.matmul, [au, wm], a_zero_point=128, b_zero_point=-3),
                 g.add1(q.matmul, [a, g.const(rand((2, 16, 3), U8, 5, 0, 255))], b_zero_point=200)]
    check(g, [rand((1, 4, 7, 7), I8, 6, -128, 127), rand((1, 4, 7, 7), U8, 7, 0, 255),
              rand((2, 5, 16), I8, 8, -128, 127), rand((5, 16), U8, 9, 0, 255)])


def test_mlir_table_lookup():
    g = Graph()
    x8, xu, x16 = (g.add_input(n, T((3, 70), dt)) for n, dt in (("x8", I8), ("xu", U8), ("x16", I16)))
    g.outputs = [g.add1(q.table, [x8, g.const(rand((256,), I32, 1, -2**31, 2**31 - 1))]),
                 g.add1(q.table, [xu, g.const(rand((256,), U8, 2, 0, 255))]),
                 g.add1(q.table, [x16, g.const(rand((65536,), I8, 3, -128, 127))])]
    xs = [rand((3, 70), I8, 4, -128, 127), rand((3, 70), U8, 5, 0, 255), rand((3, 70), I16, 6, -32768, 32767)]
    for x, dt in zip(xs, (I8, U8, I16)):
        x[0, :2] = np.iinfo(dt.numpy).min, np.iinfo(dt.numpy).max          # both ends of the table
    check(g, xs)


def test_mlir_fused_kernel_lowers_through_its_body():
    """A conv with a SiLU epilogue (a DAG: the conv result is read twice) and a residual, as one k.fused."""
    from compiler.ops import elementwise as ew, kernel, linalg
    from passes.fusion import fuse
    g = Graph()
    x = g.add_input("x", T((1, 4, 6, 6), F32))
    r = g.add_input("r", T((1, 8, 6, 6), F32))
    c = g.add1(linalg.conv, [x, g.const(rand((8, 4, 3, 3), F32, 1)), g.const(rand((8,), F32, 2))],
               strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))
    s = g.add1(ew.mul, [c, g.add1(ew.sigmoid, [c])])
    g.outputs = [g.add1(ew.add, [s, r])]
    fg, _ = fuse(g)
    assert [n.op for n in fg.nodes] == [kernel.fused]
    check(fg, [rand((1, 4, 6, 6), F32, 3), rand((1, 8, 6, 6), F32, 4)])


# -- I-ViT integer ops ---------------------------------------------------------------------
def ivit_ints(shape, dt: DType, seed: int) -> np.ndarray:
    """dt's full range, with edge rows along the last axis: all equal (zero variance), the most
    negative value with one maximum, all most negative, all most positive; and along axis 1 of a
    3-D shape an all-equal column and a most-negative column with one maximum."""
    lo, hi = INT_RANGE[dt]
    x = rand(shape, dt, seed, lo, hi)
    rows = x.reshape(-1, shape[-1])
    rows[0] = rows[0, 0]
    rows[1], rows[1, -1] = lo, hi
    rows[2], rows[3] = lo, hi
    if len(shape) == 3:
        x[-1, :, 0] = x[-1, 0, 0]
        x[-1, :, 1], x[-1, 0, 1] = lo, hi
    return x


@pytest.mark.parametrize("dt,scale,dbits", [(I8, 0.03, 31), (I16, 0.002, DIVIDEND_BITS)])
def test_mlir_ivit_exp_ops(dt, scale, dbits):
    """q.shiftmax / q.shiftgelu / q.shifttanh bit-exact: n, sigma_bits and dividend_bits as the ivit
    pass picks them (D = 62) and as I-ViT has them (D = 31, sigma 7 bits, GELU row max); shiftmax
    along a middle axis and on uint8 / int32 inputs, every output type."""
    g = Graph()
    shape = (2, 5, 9)
    x = g.add_input("x", T(shape, dt))
    xu = g.add_input("xu", T(shape, U8))
    xi = g.add_input("xi", T((4, 9), I32))
    x0 = ivit.exp_unit(scale)
    x0g, x0t = (ivit.exp_unit(f * float(np.float32(scale))) for f in (ivit.GELU_ALPHA, 2.0))
    sm = {"scale": scale, "dividend_bits": dbits}
    n_row, n_col = pick_n(x0, shape[-1], SOFTMAX_N), pick_n(x0, shape[1], SOFTMAX_N)
    g.outputs = [g.add1(ivit.shiftmax, [x], n=n_row, axis=-1, dtype=out, **sm) for out in (I8, U8, I16, I32)]
    g.outputs += [g.add1(ivit.shiftmax, [x], n=n_col, axis=1, dtype=I8, **sm),
                  g.add1(ivit.shiftmax, [xu], n=n_row, axis=-1, dtype=U8, **sm),
                  g.add1(ivit.shiftmax, [xi], scale=0.4, n=pick_n(ivit.exp_unit(0.4), 9, SOFTMAX_N), axis=-1,
                         dtype=I32, dividend_bits=dbits)]
    for row_max, sb in ((True, 7), (False, GELU_SIGMA_BITS)):
        g.outputs.append(g.add1(ivit.shiftgelu, [x], scale=scale, n=pick_n(x0g, 2, GELU_N), sigma_bits=sb,
                                dividend_bits=dbits, row_max=row_max))
    g.outputs += [g.add1(ivit.shifttanh, [x], scale=scale, n=pick_n(x0t, 2, TANH_N), dtype=out,
                         dividend_bits=dbits) for out in (I8, I16)]
    check(g, [ivit_ints(shape, dt, 0), ivit_ints(shape, U8, 1), ivit_ints((4, 9), I32, 2)])


def test_mlir_ivit_layernorm():
    """q.layernorm bit-exact on int8 / uint8 / int16 (3-D) over their full ranges, zero-variance
    rows included (the Newton root ends at 64), into every output type; mult and bias as the ivit
    pass sizes them, shift 0 (no rounding term) to 50."""
    rng = np.random.default_rng(3)
    g = Graph()
    c = 16
    xs = [g.add_input(f"x{i}", T(s, dt)) for i, (s, dt) in enumerate([((4, c), I8), ((4, c), U8),
                                                                       ((2, 3, c), I16)])]
    outs = []
    for shift, dt, zp in ((20, I8, -3), (35, U8, 128), (50, I16, 0), (0, I32, 7)):
        mult = g.const(rng.integers(-2**30, 2**30, c).astype(np.int32))
        bias = g.const(rng.integers(-2**(shift + 8), 2**(shift + 8), c).astype(np.int64))
        lo, hi = INT_RANGE[dt]
        outs += [g.add1(ivit.layernorm, [x, mult, bias], shift=shift, zero_point=zp, qmin=lo, qmax=hi,
                        dtype=dt) for x in xs]
    g.outputs = outs
    check(g, [ivit_ints((4, c), I8, 4), ivit_ints((4, c), U8, 5), ivit_ints((2, 3, c), I16, 6)])


@pytest.mark.slow
def test_mlir_ivit_integer_only_encoder_bit_exact():
    """An integer-only BERT encoder (every I-ViT op: GELU in the ShiftGELU form, tabulate disabled, else ShiftGELU
    and ShiftTanh become q.table on llvm) through compiler.compile(backend="mlir"), against the
    interpreter on its final IR. ~20 s (torch import ~4 s, IREE compile ~9-15 s)."""
    torch = pytest.importorskip("torch")
    import compiler
    from examples.zoo import BertEncoder

    torch.manual_seed(0)
    model = BertEncoder(vocab=50, hidden=32, heads=2, ffn=64, layers=1, seq=16).eval()
    ids = np.random.default_rng(0).integers(0, 50, (2, 16))
    cm = compiler.compile(model, TARGET, backend="mlir", example_inputs=(torch.tensor(ids),), quantize="int8",
                          calibration=[ids], integer_only=True, disable_passes=["tabulate"], gelu_form="shift")
    ops = {n.op for n in cm.graph.walk()}
    assert {ivit.shiftmax, ivit.shiftgelu, ivit.shifttanh, ivit.layernorm} <= ops
    TESTED.update(ops)
    for a, b in zip(cm.run(ids), interp.run(cm.graph, ids)):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_mlir_every_claimed_op_is_tested():
    """Runs last in this file: each op with a lowering appeared in a graph above."""
    if len(TESTED) < 10:
        pytest.skip("run the whole file to check coverage")
    elsewhere = {"lmul.mul", "lmul.matmul", "q.lut_matmul",     # tests/backends/test_mlir_mfree.py
                 "q.resize_linear"}                              # tests/backends/test_resize_linear_backends.py
    untested = sorted(op.name for op in LOWERINGS if op not in TESTED and op.name not in elsewhere)
    assert not untested, f"lowered but untested: {untested}"
    assert BACKEND.supported_ops() == frozenset(LOWERINGS)
