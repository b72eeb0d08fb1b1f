"""range_analysis: int32 accumulators and int64 requant products proven free of overflow from
bit widths, reduction lengths and the actual weights, or the node is reported."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.diagnostics import Unsupported
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import quant
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
