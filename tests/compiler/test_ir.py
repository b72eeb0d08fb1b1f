"""The IR: building, verifying, printing, cloning, and the op registry's completeness."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import interp
from compiler.ir import Graph, Node, Value
from compiler.ops import all_ops, elementwise as ew, linalg, nn, shape
from compiler.ops.reduce import topk
from compiler.ops.registry import TypeRuleError
from compiler.types import DType, TensorType
from compiler.verify import VerifyError, verify


def small_cnn() -> Graph:
    rng = np.random.default_rng(0)
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 8, 8), DType.F32))
    w = g.const(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    y = g.add1(linalg.conv, [x, w], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))
    y = g.add1(ew.relu, [y])
    y = g.add1(nn.max_pool, [y], kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0), dilations=(1, 1))
    y = g.add1(shape.reshape, [y], shape=(1, 64))
    g.outputs = [y]
    return g


def test_registry_every_op_is_complete():
    names = set()
    for op in all_ops():
        assert op.doc and op.infer and op.reference, op.name
        assert "." in op.name and op.name not in names
        names.add(op.name)
    assert len(names) >= 60


def test_graph_build_infers_types():
    g = small_cnn()
    assert [str(v.type) for v in g.outputs] == ["tensor<1x64xf32>"]
    verify(g)


def test_type_rule_rejects_bad_attrs():
    g = Graph()
    x = g.add_input("x", TensorType((2, 3), DType.F32))
    with pytest.raises(TypeRuleError, match="cannot reshape"):
        g.add1(shape.reshape, [x], shape=(4, 2))
    with pytest.raises(TypeRuleError, match="needs attribute 'perm'"):
        g.add1(shape.transpose, [x])
    with pytest.raises(TypeRuleError, match="do not broadcast"):
        g.add1(ew.add, [x, g.const(np.zeros((4,), np.float32))])


def test_verify_catches_use_before_def():
    g = small_cnn()
    g.nodes[0], g.nodes[1] = g.nodes[1], g.nodes[0]
    with pytest.raises(VerifyError, match="used before it is defined"):
        verify(g)


def test_verify_catches_wrong_stored_type():
    g = small_cnn()
    g.nodes[1].outputs[0].type = TensorType((1, 4, 8, 9), DType.F32)
    with pytest.raises(VerifyError, match="type rule gives"):
        verify(g)


def test_printer_is_mlir_generic_syntax():
    text = str(small_cnn())
    assert text.startswith("func.func @main(%arg0: tensor<1x3x8x8xf32>) -> (tensor<1x64xf32>) {")
    assert '"nn.conv"(%arg0, %0) {strides = [1, 1], pads = [1, 1, 1, 1], dilations = [1, 1], groups = 1}' in text
    assert '"func.return"' in text


def test_clone_is_independent_and_equal():
    g = small_cnn()
    c = g.clone()
    assert str(c) == str(g)
    c.nodes[1].outputs[0].name = "changed"
    assert g.nodes[1].outputs[0].name != "changed"
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(interp.run(g, x)[0], interp.run(c, x)[0])


def test_interp_checks_inputs():
    from compiler.diagnostics import InvalidInput
    g = small_cnn()
    with pytest.raises(InvalidInput, match=r"input 'x' must be float32\[1, 3, 8, 8\]"):
        interp.run(g, np.zeros((1, 3, 8, 7), np.float32))
    with pytest.raises(InvalidInput, match="takes 1 input"):
        interp.run(g)


def test_multi_output_node():
    g = Graph()
    x = g.add_input("x", TensorType((2, 5), DType.F32))
    vals, idx = g.add(topk, [x], k=2, axis=1)
    g.outputs = [vals, idx]
    verify(g)
    a = np.array([[1, 5, 3, 5, 0], [2, 2, 2, 1, 9]], np.float32)
    v, i = interp.run(g, a)
    np.testing.assert_array_equal(i, [[1, 3], [4, 0]])
    assert v.dtype == np.float32 and i.dtype == np.int64
    assert isinstance(vals.producer, Node) and isinstance(vals, Value)
