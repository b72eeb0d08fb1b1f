"""verify_integer_only: float nodes between the input quantize and the output dequantize are
found and named; a proper integer graph passes."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.diagnostics import Unsupported
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import linalg, nn, quant
from compiler.types import DType, TensorType
from passes import PASSES, PassContext, run_pipeline
from passes.dyadic import dyadic_rewrite
from passes.quantize import annotate, calibrate
from passes.verify_integer_only import verify_integer_only, verify_integer_only_pass


def _integer_graph():
    g = Graph()
    x = g.add_input("x", TensorType((2, 4), DType.F32))
    q = g.add1(quant.quantize, [x], scale=0.1, zero_point=0, dtype=DType.I8, qmin=-128, qmax=127)
    w = g.const(np.ones((4, 3), np.int8), "w")
    acc = g.add1(quant.matmul, [q, w])
    r = g.add1(quant.requant, [acc], multiplier=(1 << 30,), shift=(31,), qmin=-128, qmax=127, dtype=DType.I8)
    g.outputs = [g.add1(quant.dequantize, [r], scale=(0.05,), zero_point=(0,))]
    return g


def test_proper_integer_graph_passes():
    g = _integer_graph()
    assert verify_integer_only(g) == []
    assert verify_integer_only_pass(g) is g
    assert "verify_integer_only" in PASSES
    run_pipeline(g, ["verify_integer_only"], PassContext())


def test_softmax_in_the_middle_is_rejected_with_the_node_named(rng):
    g = Graph()
    x = g.add_input("x", TensorType((2, 4), DType.F32))
    w = g.const(rng.standard_normal((4, 4)).astype(np.float32), "w")
    s = g.add1(nn.softmax, [g.add1(linalg.matmul, [x, w])], name="attn_softmax")
    g.outputs = [g.add1(linalg.matmul, [s, w])]
    ig = dyadic_rewrite(annotate(g, calibrate(g, [[rng.standard_normal((2, 4)).astype(np.float32)]])))
    bad = verify_integer_only(ig)
    assert "attn_softmax" in [n.name for n in bad]
    with pytest.raises(Unsupported) as e:
        verify_integer_only_pass(ig)
    assert "attn_softmax" in str(e.value) and "nn.softmax" in str(e.value)
    assert e.value.code == 3


def test_boundary_ops_only_count_at_the_boundary():
    g = _integer_graph()
    y = g.outputs[0]
    g.outputs = [g.add1(ew.relu, [y], name="float_relu")]        # dequantize no longer feeds the output
    assert [n.op for n in verify_integer_only(g)] == [quant.dequantize, ew.relu]
    g2 = Graph()
    x = g2.add_input("x", TensorType((2,), DType.F32))
    h = g2.add1(ew.neg, [x])
    g2.outputs = [g2.add1(quant.quantize, [h], scale=1.0, zero_point=0, dtype=DType.I8, qmin=-128, qmax=127)]
    assert [n.op for n in verify_integer_only(g2)] == [ew.neg, quant.quantize]    # not of an input
