"""The quantized op set (q.*) through the TVM backend's generic lowerings, bit-exact against
compiler.interp (whose numpy references ARE the integer semantics)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from compiler import interp  # noqa: E402
from compiler.backends.tvm import BACKEND  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import nn, quant as q  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402

TARGET = Target("llvm", num_threads=1)
F32, I8, U8, I16, I32, I4 = DType.F32, DType.I8, DType.U8, DType.I16, DType.I32, DType.I4
RANGE = q.INT_RANGE
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check(g: Graph, *inputs: np.ndarray) -> None:
    want = interp.run(g, *inputs)
    got = BACKEND.build(g, TARGET).run(list(inputs))
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and a.dtype == b.dtype, (i, a.shape, b.shape, a.dtype, b.dtype)
        np.testing.assert_array_equal(a, b, err_msg=f"output {i} ({g.outputs[i].name})")


def ints(rng, shape, dt: DType) -> np.ndarray:
    lo, hi = RANGE[dt]
    return rng.integers(lo, hi + 1, shape, dtype=np.int64).astype(dt.numpy)


# -- quantize / dequantize ---------------------------------------------------------------------
def test_quantize_ties_round_to_even():
    g = Graph()
    x = g.add_input("x", TensorType((12,), F32))
    g.outputs = [g.add1(q.quantize, [x], scale=1.0, zero_point=0, dtype=I8, qmin=-128, qmax=127),
                 g.add1(q.quantize, [x], scale=0.5, zero_point=3, dtype=U8, qmin=0, qmax=255),
                 g.add1(q.quantize, [x], scale=0.1, zero_point=-2, dtype=I16, qmin=-32768, qmax=32767)]
    xs = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.25, -0.75, 1e9, -1e9, np.inf, -np.inf], np.float32)
    check(g, xs)
    out = BACKEND.build(g, TARGET).run([xs])[0]
    assert out[:6].tolist() == [0, 2, 2, 0, -2, -2]


@SETTINGS
@given(st.data())
def test_quantize_dequantize_property(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    dt = data.draw(st.sampled_from([I8, U8, I16, I4]))
    lo, hi = RANGE[dt]
    qmin = data.draw(st.integers(lo, hi))
    qmax = data.draw(st.integers(qmin, hi))
    zp = data.draw(st.integers(lo, hi))
    scale = float(np.float32(data.draw(st.floats(1e-4, 10.0))))
    shape = tuple(data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    g = Graph()
    x = g.add_input("x", TensorType(shape, F32))
    y = g.add1(q.quantize, [x], scale=scale, zero_point=zp, dtype=dt, qmin=qmin, qmax=qmax)
    axis = len(shape) - 1
    n = shape[axis]
    per_ch = data.draw(st.booleans()) and n > 1
    scales = tuple(float(np.float32(s)) for s in rng.uniform(1e-3, 2, n)) if per_ch else (scale,)
    zps = tuple(int(z) for z in rng.integers(lo, hi + 1, n)) if per_ch else (zp,)
    g.outputs = [y, g.add1(q.dequantize, [y], scale=scales, zero_point=zps, axis=axis)]
    xs = (rng.standard_normal(shape) * scale * (hi - lo) / 2).astype(np.float32)
    xs.reshape(-1)[: max(1, xs.size // 3)] = (np.round(xs.reshape(-1)[: max(1, xs.size // 3)] / scale - 0.5)
                                            + 0.5) * np.float32(scale)          # many exact ties
    check(g, xs)


# -- requant ----------------------------------------------------------------------------------
EXTREME_I32 = np.array([-2**31, 2**31 - 1, -2**31 + 1, 2**31 - 2, 0, -1, 1, 2**30, -2**30], np.int32)


@SETTINGS
@given(st.data())
def test_requant_property(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    in_dt = data.draw(st.sampled_from([I32, I32, I8, U8, I16]))
    out_dt = data.draw(st.sampled_from([I8, U8, I32, I16]))
    lo, hi = RANGE[out_dt]
    qmin = data.draw(st.one_of(st.just(lo), st.integers(lo, hi)))
    qmax = data.draw(st.one_of(st.just(hi), st.integers(qmin, hi)))
    shape = tuple(data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=4)))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[axis]
    per_ch = data.draw(st.booleans())
    k = n if per_ch else 1
    mult = st.one_of(st.sampled_from([0, 1, 2**31 - 1, 2**30]), st.integers(0, 2**31 - 1))
    shift = st.one_of(st.sampled_from([0, 1, 31, 62]), st.integers(0, 62))
    ms = tuple(data.draw(mult) for _ in range(k))
    cs = tuple(data.draw(shift) for _ in range(k))
    in_zp = data.draw(st.one_of(st.just(0), st.integers(-300, 300)))
    zp = data.draw(st.integers(lo, hi))
    g = Graph()
    x = g.add_input("x", TensorType(shape, in_dt))
    g.outputs = [g.add1(q.requant, [x], multiplier=ms, shift=cs, zero_point=zp, in_zero_point=in_zp,
                        qmin=qmin, qmax=qmax, dtype=out_dt, axis=axis)]
    xs = ints(rng, shape, in_dt)
    if in_dt is I32:
        flat = xs.reshape(-1)
        flat[: min(flat.size, EXTREME_I32.size)] = EXTREME_I32[: flat.size]
    check(g, xs)


def test_requant_extremes_per_channel():
    g = Graph()
    x = g.add_input("x", TensorType((2, 4, 9), I32))
    ms, cs = (2**31 - 1, 1, 0, 1518500250), (62, 0, 0, 31)
    g.outputs = [g.add1(q.requant, [x], multiplier=ms, shift=cs, zero_point=-3, in_zero_point=0,
                        qmin=-128, qmax=127, dtype=I8, axis=1),
                 g.add1(q.requant, [x], multiplier=ms, shift=cs, zero_point=7, in_zero_point=5,
                        qmin=-2**31, qmax=2**31 - 1, dtype=I32, axis=1),
                 g.add1(q.requant, [x], multiplier=(2**31 - 1,), shift=(0,), zero_point=0,
                        qmin=0, qmax=255, dtype=U8, axis=1)]
    xs = np.tile(EXTREME_I32, 8).reshape(2, 4, 9)
    check(g, xs)


# -- conv / matmul ----------------------------------------------------------------------------
@SETTINGS
@given(st.data())
def test_qconv_property(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    nsp = data.draw(st.sampled_from([1, 2, 2, 3]))
    groups = data.draw(st.sampled_from([1, 1, 2]))
    ci = groups * data.draw(st.integers(1, 3))
    co = groups * data.draw(st.integers(1, 3))
    k = tuple(data.draw(st.integers(1, 3)) for _ in range(nsp))
    sp = tuple(data.draw(st.integers(k[i] + 2, 7)) for i in range(nsp))
    strides = tuple(data.draw(st.integers(1, 2)) for _ in range(nsp))
    dil = tuple(data.draw(st.integers(1, 2)) if sp[i] > 2 * k[i] else 1 for i in range(nsp))
    pads = tuple(data.draw(st.integers(0, 2)) for _ in range(2 * nsp))
    xdt = data.draw(st.sampled_from([U8, I8]))
    wdt = data.draw(st.sampled_from([I8, I8, U8]))
    zp = data.draw(st.integers(*RANGE[xdt]))
    bias = data.draw(st.booleans())
    g = Graph()
    x = g.add_input("x", TensorType((data.draw(st.integers(1, 2)), ci) + sp, xdt))
    ins = [x, g.const(ints(rng, (co, ci // groups) + k, wdt), "w")]
    if bias:
        ins.append(g.const(rng.integers(-2**31, 2**31, co).astype(np.int32), "b"))
    y = g.add1(q.conv, ins, strides=strides, pads=pads, dilations=dil, groups=groups, x_zero_point=zp)
    g.outputs = [y]
    check(g, ints(rng, x.type.shape, xdt))


@SETTINGS
@given(st.data())
def test_qmatmul_property(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    batch = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    m, k, n = (data.draw(st.integers(1, 9)) for _ in range(3))
    adt, bdt = data.draw(st.sampled_from([U8, I8])), data.draw(st.sampled_from([I8, U8]))
    a_zp, b_zp = data.draw(st.integers(*RANGE[adt])), data.draw(st.integers(*RANGE[bdt]))
    b_const = data.draw(st.booleans())
    b_batch = batch if not b_const and data.draw(st.booleans()) else ()
    g = Graph()
    a = g.add_input("a", TensorType(batch + (m, k), adt))
    feeds = [ints(rng, batch + (m, k), adt)]
    if b_const:
        b = g.const(ints(rng, (k, n), bdt), "w")
    else:
        b = g.add_input("b", TensorType(b_batch + (k, n), bdt))
        feeds.append(ints(rng, b_batch + (k, n), bdt))
    g.outputs = [g.add1(q.matmul, [a, b], a_zero_point=a_zp, b_zero_point=b_zp)]
    check(g, *feeds)


def test_max_pool_int8_pads_with_dtype_minimum():
    rng = np.random.default_rng(0)
    g = Graph()
    xi = g.add_input("xi", TensorType((1, 3, 7, 7), I8))
    xu = g.add_input("xu", TensorType((1, 3, 7, 7), U8))
    kw = dict(kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1))
    g.outputs = [g.add1(nn.max_pool, [xi], **kw, ceil_mode=False),
                 g.add1(nn.max_pool, [xu], **kw, ceil_mode=False),
                 g.add1(nn.max_pool, [xi], **kw, ceil_mode=True)]
    a = np.full((1, 3, 7, 7), -128, np.int8)
    a[0, 0] = ints(rng, (7, 7), I8)
    check(g, a, ints(rng, (1, 3, 7, 7), U8))


@pytest.mark.parametrize("index, entry", [(I8, I32), (U8, U8), (I16, I8), (I16, I16)])
def test_table_lookup_every_index(index, entry):
    """q.table reads table[x - min]: every index value, both ends included."""
    lo, hi = RANGE[index]
    rng = np.random.default_rng(hi - lo)
    g = Graph()
    x = g.add_input("x", TensorType((2, (hi - lo + 1) // 2), index))
    g.outputs = [g.add1(q.table, [x, g.const(ints(rng, (hi - lo + 1,), entry))])]
    xv = rng.permutation(np.arange(lo, hi + 1)).astype(index.numpy).reshape(2, -1)
    check(g, xv)
