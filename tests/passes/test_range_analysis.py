"""range_analysis: int32 accumulators and int64 requant products proven free of overflow from
bit widths, reduction lengths and the actual weights, or the node is reported."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.diagnostics import Unsupported
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import ivit, quant
from compiler.types import DType, TensorType
from passes.range_analysis import check_ranges, range_analysis, value_ranges

I8 = DType.I8


def _matmul_graph(k, w=None):
    g = Graph()
    a = g.add_input("a", TensorType((1, k), I8))
    b = g.const(w, "w") if w is not None else g.add_input("b", TensorType((k, 1), I8))
    acc = g.add1(quant.matmul, [a, b], name="big_mm")
    g.outputs = [g.add1(quant.requant, [acc], multiplier=(1 << 30,), shift=(40,), qmin=-128, qmax=127, dtype=I8)]
    return g


def test_huge_reduction_is_reported():
    g = _matmul_graph(2**20)
    problems = check_ranges(g)
    assert len(problems) == 1 and "big_mm" in problems[0] and "1048576" in problems[0]
    with pytest.raises(Unsupported) as e:
        range_analysis(g)
    assert "big_mm" in str(e.value)
    full = np.full((2**20, 1), -128, np.int8)          # constant int8 extremes: the tight bound still fails
    assert check_ranges(_matmul_graph(2**20, full))


def test_actual_weights_give_a_tight_bound():
    k = 2**20
    sparse = np.zeros((k, 1), np.int8)
    sparse[:1000] = 127                                 # sum |w| = 127000: cannot overflow
    assert check_ranges(_matmul_graph(k, sparse)) == []
    assert check_ranges(_matmul_graph(256)) == []       # 256 * 128 * 128 = 2^22


def test_normal_conv_layer_passes_and_ranges_are_propagated(rng):
    g = Graph()
    x = g.add_input("x", TensorType((1, 8, 6, 6), DType.U8))
    w = g.const(rng.integers(-127, 128, (4, 8, 3, 3)).astype(np.int8), "w")
    b = g.const(rng.integers(-1000, 1000, 4).astype(np.int32), "b")
    acc = g.add1(quant.conv, [x, w, b], strides=(1, 1), pads=(1,) * 4, dilations=(1, 1), x_zero_point=3)
    r = g.add1(quant.requant, [acc], multiplier=(1 << 30,), shift=(45,), qmin=0, qmax=255, dtype=DType.U8)
    wide = g.add1(quant.requant, [r], multiplier=(1 << 30,), shift=(20,), qmin=-2**31, qmax=2**31 - 1,
                  dtype=DType.I32)
    g.outputs = [g.add1(ew.add, [wide, wide])]
    assert check_ranges(g) == []
    ranges = value_ranges(g)
    bound = 252 * int(np.abs(w.const.astype(np.int64)).reshape(4, -1).sum(1).max()) + 1000
    assert ranges[acc.name][1] <= bound
    lo, hi = ranges[r.name]
    assert lo == 0 and 0 < hi <= min(255, (bound >> 15) + 1)
    assert ranges[g.outputs[0].name] == (0, 2 * hi * 2**10)


def test_int32_sum_and_int64_requant_product_overflow_reported():
    g = Graph()
    x = g.add_input("x", TensorType((4,), DType.I32))
    s = g.add1(ew.add, [x, x], name="wrap_add")
    g.outputs = [g.add1(quant.requant, [x], multiplier=(2**31 - 1,), shift=(62,), in_zero_point=-2**40,
                        qmin=-128, qmax=127, dtype=I8, name="big_rq"), s]
    problems = check_ranges(g)
    assert any("wrap_add" in p for p in problems) and any("big_rq" in p and "int64" in p for p in problems)


def _ivit_graph(op, x_dtype, bias_max=2**40, **attrs):
    g = Graph()
    x = g.add_input("x", TensorType((4, 64), x_dtype))
    if op is ivit.layernorm:
        rng = np.random.default_rng(0)
        mult = g.const(rng.integers(-2**30, 2**30, 64).astype(np.int32), "mult")
        bias = g.const(np.full(64, bias_max, np.int64) if bias_max > 2**40 else
                       rng.integers(-bias_max, bias_max, 64).astype(np.int64), "bias")
        g.outputs = [g.add1(op, [x, mult, bias], **attrs)]
    else:
        g.outputs = [g.add1(op, [x], **attrs)]
    return g


@pytest.mark.parametrize("op,dt,attrs", [
    (ivit.shiftmax, DType.I16, dict(scale=0.01, n=12, axis=-1, dtype=DType.I32, dividend_bits=62)),
    (ivit.shiftmax, I8, dict(scale=0.05, n=15, axis=-1, dtype=DType.U8)),
    (ivit.shiftgelu, DType.I16, dict(scale=0.002, n=20, sigma_bits=15, dividend_bits=62)),
    (ivit.shifttanh, DType.I16, dict(scale=0.001, n=10, dtype=DType.I16)),
    (ivit.layernorm, DType.I16, dict(shift=34, qmin=-32768, qmax=32767, dtype=DType.I16)),
])
def test_ivit_ops_are_bounded_and_their_values_stay_inside(op, dt, attrs):
    """The I-ViT ops get intervals from their definitions (not the dtype's), and what the reference computes
    on random and extreme rows lies inside them."""
    from compiler import interp
    g = _ivit_graph(op, dt, **attrs)
    assert check_ranges(g) == []
    lo, hi = value_ranges(g)[g.outputs[0].name]
    if g.outputs[0].type.dtype is DType.I32:          # tighter than the dtype's range
        assert hi - lo < 2**32 - 1 or op is ivit.shiftmax
    info = np.iinfo(dt.numpy)
    rng = np.random.default_rng(1)
    rows = [rng.integers(info.min, info.max + 1, (4, 64)), np.full((4, 64), info.max), np.full((4, 64), info.min),
            np.where(np.arange(64) == 3, info.max, info.min) * np.ones((4, 1), np.int64)]
    for x in rows:
        y = interp.run(g, x.astype(dt.numpy))[0].astype(np.int64)
        assert lo <= y.min() and y.max() <= hi


def test_ilayernorm_normalized_value_stays_within_2_31():
    """The bound the I-LayerNorm rule rests on: |yn| = |(y * ((2^31 - 1) // std)) >> 1| <= 2^31 for every
    row, including one spike among equal values (|y| closest to sqrt(var)) and tiny variances (std 64)."""
    rng = np.random.default_rng(0)
    rows = [rng.integers(-32768, 32768, (256, 768))]
    for c in (2, 3, 16, 768):
        for big in (1, 7, 255, 32767, 65535):
            r = np.zeros((1, c), np.int64)
            r[0, 0] = big
            rows.append(r)
            rows.append(-r)
    for x in rows:
        x = x.astype(np.int64)
        c = x.shape[-1]
        y = x - (2 * x.sum(-1, keepdims=True) + c) // (2 * c)
        std = ivit.isqrt_newton((y * y).sum(-1, keepdims=True))
        yn = (y * (np.int64(2**31 - 1) // std)) >> 1
        assert np.abs(yn).max() <= 2**31, (c, np.abs(yn).max())


def test_ilayernorm_product_that_overflows_int64_is_reported():
    g = _ivit_graph(ivit.layernorm, DType.I16, bias_max=2**63 - 2**60, shift=34, qmin=-32768, qmax=32767,
                    dtype=DType.I16)
    n = g.nodes[-1]
    (problem,) = check_ranges(g)
    assert "I-LayerNorm" in problem and n.name in problem
