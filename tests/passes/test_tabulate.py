"""tabulate: integer elementwise chains on int8/uint8/int16 values become one q.table lookup (what it
rewrites, what it leaves, bit-exact with the chain by the interpreter) and the measured decision."""
from __future__ import annotations

import numpy as np
from compiler import interp
from compiler.ir import Graph
from compiler.ops import elementwise as ew, ivit, quant as q
from compiler.types import DType, TensorType
from compiler.verify import verify
from costmodel import elementwise as costs
from passes.tabulate import chain_table, tabulate_graph

ALWAYS = lambda ops, bits, elements: True  # noqa: E731


def _gelu_chain(x_dt=DType.I16, row_max=False):
    g = Graph()
    x = g.add_input("x", TensorType((2, 300), x_dt))
    y = g.add1(ivit.shiftgelu, [x], scale=0.0026834, n=22, sigma_bits=15, dividend_bits=62, row_max=row_max)
    y8 = g.add1(q.requant, [y], multiplier=[1077191040], shift=[48], qmin=-128, qmax=127, dtype=DType.I8)
    g.outputs = [g.add1(ew.relu, [y8])]
    return g


def _all_values(dt, shape=(2, -1)):
    info = np.iinfo(dt.numpy)
    return np.arange(info.min, info.max + 1).astype(dt.numpy).reshape(shape)


def test_gelu_requant_relu_chain_becomes_one_lookup():
    g = _gelu_chain()
    t = tabulate_graph(g, ALWAYS)
    verify(t)
    assert t.op_histogram() == {"q.table": 1}
    table = t.nodes[0].inputs[1]
    assert table.is_const and table.type == TensorType((65536,), DType.I8)
    x = np.random.default_rng(0).integers(-32768, 32768, (2, 300)).astype(np.int16)
    x[0, :2] = -32768, 32767
    np.testing.assert_array_equal(interp.run(t, x)[0], interp.run(g, x)[0])


def test_table_equals_chain_on_every_value():
    g = Graph()
    x = g.add_input("x", TensorType((2, 128), DType.I8))
    y = g.add1(ivit.shifttanh, [x], scale=0.05, n=10, dtype=DType.I16, dividend_bits=62)
    g.outputs = [g.add1(q.requant, [y], multiplier=[1 << 30], shift=[38], qmin=-128, qmax=127, dtype=DType.I8)]
    t = tabulate_graph(g, ALWAYS)
    assert t.op_histogram() == {"q.table": 1}
    xs = _all_values(DType.I8)
    np.testing.assert_array_equal(interp.run(t, xs)[0], interp.run(g, xs)[0])
    np.testing.assert_array_equal(chain_table(g.nodes).reshape(2, 128), interp.run(g, xs)[0])


def test_row_wise_op_is_not_tabulated():
    g = _gelu_chain(row_max=True)                  # row max: not a function of the element alone
    t = tabulate_graph(g, ALWAYS)
    # shiftgelu stays; the requant reads its int32 result (no table for 32-bit indices); only the
    # relu on the int8 requant result is a (256-entry) lookup
    assert t.op_histogram() == {"q.requant": 1, "q.shiftgelu": 1, "q.table": 1}
    x = np.random.default_rng(1).integers(-32768, 32768, (2, 300)).astype(np.int16)
    np.testing.assert_array_equal(interp.run(t, x)[0], interp.run(g, x)[0])


def test_nothing_narrow_nothing_rewritten():
    g = Graph()
    x = g.add_input("x", TensorType((4, 8), DType.I32))
    g.outputs = [g.add1(q.requant, [x], multiplier=[3], shift=[1], qmin=-128, qmax=127, dtype=DType.I8)]
    assert tabulate_graph(g, ALWAYS).op_histogram() == {"q.requant": 1}
    g2 = Graph()
    x2 = g2.add_input("x", TensorType((4, 8), DType.I16))
    g2.outputs = [g2.add1(q.requant, [x2], multiplier=[3, 5, 7, 9, 11, 13, 15, 17], shift=[1] * 8, axis=1,
                          qmin=-128, qmax=127, dtype=DType.I8)]
    assert tabulate_graph(g2, ALWAYS).op_histogram() == {"q.requant": 1}     # per-channel


def test_a_shared_intermediate_ends_the_chain():
    g = _gelu_chain()
    g.outputs.append(g.nodes[0].outputs[0])       # the int32 GELU result is also an output
    t = tabulate_graph(g, ALWAYS)
    # the chain stops at the shared value: shiftgelu alone becomes a table with int32 entries
    assert t.op_histogram() == {"q.requant": 1, "q.table": 2}
    assert t.nodes[0].inputs[1].type == TensorType((65536,), DType.I32)
    x = np.random.default_rng(2).integers(-32768, 32768, (2, 300)).astype(np.int16)
    for a, b in zip(interp.run(t, x), interp.run(g, x)):
        np.testing.assert_array_equal(a, b)


def test_decision_comes_from_measured_costs(tmp_path):
    data = {"ns_per_element": {"nn.relu": 0.3, "q.requant": 0.35, "q.shiftgelu": 3.5,
                               "q.table[256]": 0.6, "q.table[65536]": 0.7}}
    path = tmp_path / "costs.json"
    path.write_text(__import__("json").dumps(data))
    assert costs.choose_table(["q.shiftgelu", "q.requant"], 16, 1000, str(path))
    assert not costs.choose_table(["q.requant"], 16, 1000, str(path))        # computing is cheaper
    assert not costs.choose_table(["q.shifttanh"], 16, 1000, str(path))      # never measured: keep
    assert not costs.choose_table(["q.requant"], 16, 1000, str(tmp_path / "missing.json"))


def test_default_decision_uses_the_shipped_measurements():
    assert costs._load(costs.DATA) is not None, "costmodel/data/elementwise_x86_64.json is shipped"
    t = tabulate_graph(_gelu_chain())
    assert "q.table" in t.op_histogram()
