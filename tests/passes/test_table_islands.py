"""table_islands: a dequantize -> elementwise float DAG -> quantize island becomes one q.table (what it
rewrites, what it leaves), and the rewrite is exact: the interpreter gives the same integers before and
after on every input value."""
from __future__ import annotations

import numpy as np
import pytest
from compiler import interp
from compiler.ir import Graph
from compiler.ops import elementwise as ew, quant as q
from compiler.types import DType, TensorType
from compiler.verify import verify
from passes.table_islands import table_islands

SHAPE = (2, 128)


def _island(build, x_dt=DType.I8, out_dt=DType.U8, scale=0.05, out_scale=0.02, out_zp=10):
    """x (int) -> dequantize -> build(g, xf) -> quantize."""
    g = Graph()
    x = g.add_input("x", TensorType(SHAPE, x_dt))
    xf = g.add1(q.dequantize, [x], scale=[scale], zero_point=[0], axis=1)
    y = build(g, xf)
    lo, hi = np.iinfo(out_dt.numpy).min, np.iinfo(out_dt.numpy).max
    g.outputs = [g.add1(q.quantize, [y], scale=out_scale, zero_point=out_zp, dtype=out_dt, qmin=int(lo), qmax=int(hi))]
    return g


def _every_value(dt):
    info = np.iinfo(dt.numpy)
    return np.arange(info.min, info.max + 1).astype(dt.numpy).reshape(SHAPE)


def silu(g, x):
    return g.add1(ew.mul, [x, g.add1(ew.sigmoid, [x])])


def mish(g, x):
    return g.add1(ew.mul, [x, g.add1(ew.tanh, [g.add1(ew.softplus, [x])])])


def hardswish_expanded(g, x):       # x * relu6(x + 3) / 6, as some exporters write it
    r6 = g.add1(ew.clip, [g.add1(ew.add, [x, g.const(np.float32(3.0), "three")])], min=0.0, max=6.0)
    return g.add1(ew.div, [g.add1(ew.mul, [x, r6]), g.const(np.float32(6.0), "six")])


ISLANDS = {
    "silu": silu, "mish": mish, "hardswish_expanded": hardswish_expanded,
    "hardswish": lambda g, x: g.add1(ew.hard_swish, [x]),
    "hardsigmoid": lambda g, x: g.add1(ew.hard_sigmoid, [x], alpha=1 / 6, beta=0.5),
    "sigmoid": lambda g, x: g.add1(ew.sigmoid, [x]),
    "tanh": lambda g, x: g.add1(ew.tanh, [x]),
    "gelu": lambda g, x: g.add1(ew.gelu, [x]),
    "elu": lambda g, x: g.add1(ew.elu, [x], alpha=1.0),
    "leaky_relu": lambda g, x: g.add1(ew.leaky_relu, [x], alpha=0.1),
    "softplus": lambda g, x: g.add1(ew.softplus, [x]),
}


@pytest.mark.parametrize("name", sorted(ISLANDS))
def test_island_becomes_one_exact_lookup(name):
    g = _island(ISLANDS[name])
    t = table_islands(g)
    verify(t)
    assert t.op_histogram() == {"q.table": 1}
    table = t.nodes[0].inputs[1]
    assert table.type == TensorType((256,), DType.U8)
    xs = _every_value(DType.I8)
    np.testing.assert_array_equal(interp.run(t, xs)[0], interp.run(g, xs)[0])


def test_int16_input_gives_a_65536_entry_table():
    g = Graph()
    x = g.add_input("x", TensorType((4, 16384), DType.I16))
    xf = g.add1(q.dequantize, [x], scale=[1e-3], zero_point=[0], axis=1)
    g.outputs = [g.add1(q.quantize, [silu(g, xf)], scale=0.05, zero_point=0, dtype=DType.I8, qmin=-128, qmax=127)]
    t = table_islands(g)
    assert t.op_histogram() == {"q.table": 1}
    assert t.nodes[0].inputs[1].type.shape == (65536,)
    xs = np.arange(-32768, 32768).astype(np.int16).reshape(4, 16384)
    np.testing.assert_array_equal(interp.run(t, xs)[0], interp.run(g, xs)[0])


def test_value_read_outside_the_island_stays_for_its_reader():
    g = Graph()
    x = g.add_input("x", TensorType(SHAPE, DType.I8))
    xf = g.add1(q.dequantize, [x], scale=[0.05], zero_point=[0], axis=1)
    s = g.add1(ew.sigmoid, [xf])
    y = g.add1(q.quantize, [g.add1(ew.mul, [xf, s])], scale=0.02, zero_point=0, dtype=DType.I8, qmin=-128, qmax=127)
    g.outputs = [y, s]                              # the sigmoid is also a graph output
    t = table_islands(g)
    assert t.op_histogram() == {"q.table": 1, "q.dequantize": 1, "nn.sigmoid": 1}
    xs = _every_value(DType.I8)
    for a, b in zip(interp.run(t, xs), interp.run(g, xs)):
        np.testing.assert_array_equal(a, b)


def test_two_integer_sources_are_not_an_island():
    g = Graph()
    a = g.add_input("a", TensorType(SHAPE, DType.I8))
    b = g.add_input("b", TensorType(SHAPE, DType.I8))
    af = g.add1(q.dequantize, [a], scale=[0.05], zero_point=[0], axis=1)
    bf = g.add1(q.dequantize, [b], scale=[0.05], zero_point=[0], axis=1)
    y = g.add1(ew.mul, [af, g.add1(ew.sigmoid, [bf])])
    g.outputs = [g.add1(q.quantize, [y], scale=0.02, zero_point=0, dtype=DType.I8, qmin=-128, qmax=127)]
    assert table_islands(g).op_histogram() == g.op_histogram()


def test_per_channel_constant_or_dequantize_is_not_an_island():
    per_channel_const = _island(lambda g, x: g.add1(ew.mul, [x, g.const(np.linspace(0.5, 2, 128, dtype=np.float32), "c")]))
    assert table_islands(per_channel_const).op_histogram() == per_channel_const.op_histogram()
    g = Graph()
    x = g.add_input("x", TensorType(SHAPE, DType.I8))
    xf = g.add1(q.dequantize, [x], scale=[0.05, 0.1], zero_point=[0, 0], axis=0)
    g.outputs = [g.add1(q.quantize, [silu(g, xf)], scale=0.02, zero_point=0, dtype=DType.I8, qmin=-128, qmax=127)]
    assert table_islands(g).op_histogram() == g.op_histogram()
