"""Reduction, ArgMax/ArgMin, CumSum/CumProd and TopK converters against onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.ops import elementwise as ew
from compiler.ops import reduce

F32 = np.float32
REDUCE_OPS = ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2",
              "ReduceL1", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"]


def _x(rng, *shape):
    return rng.uniform(0.5, 1.5, shape).astype(F32)


def _axes_input_opset(op_type: str) -> int:
    return 13 if op_type == "ReduceSum" else 18


@pytest.mark.parametrize("op_type", REDUCE_OPS)
@pytest.mark.parametrize("axes,keepdims", [([1], 1), ([-1, 0], 0), (None, 1), (None, 0)])
def test_reduce_axes_attribute(check_node, rng, op_type, axes, keepdims):
    attrs = {"keepdims": keepdims} | ({"axes": axes} if axes is not None else {})
    check_node(op_type, {"x": _x(rng, 2, 3, 4)}, 11, **attrs)


@pytest.mark.parametrize("op_type", REDUCE_OPS)
@pytest.mark.parametrize("axes,keepdims", [([2, 0], 1), ([-2], 0)])
def test_reduce_axes_input(check_node, rng, op_type, axes, keepdims):
    check_node(op_type, {"x": _x(rng, 2, 3, 4)}, _axes_input_opset(op_type),
               {"axes": np.array(axes, np.int64)}, keepdims=keepdims)


@pytest.mark.parametrize("op_type", ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceL2"])
def test_reduce_empty_axes(check_node, rng, op_type):
    g = check_node(op_type, {"x": _x(rng, 2, 3)}, _axes_input_opset(op_type), keepdims=0)
    assert g.nodes[-1].attrs["axes"] == (0, 1)


@pytest.mark.parametrize("op_type", ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceProd"])
def test_reduce_noop_with_empty_axes_is_identity(check_node, rng, op_type):
    g = check_node(op_type, {"x": _x(rng, 2, 3)}, _axes_input_opset(op_type),
                   noop_with_empty_axes=1)
    assert [n.op for n in g.nodes] == [ew.identity]


def test_reduce_axes_are_normalized(check_node, rng):
    g = check_node("ReduceMean", {"x": _x(rng, 2, 3, 4)}, 13, axes=[-1, 1])
    assert g.nodes[0].op is reduce.reduce_mean and g.nodes[0].attrs["axes"] == (1, 2)


def test_reduce_int(check_node, rng):
    x = rng.integers(-9, 9, (3, 4)).astype(np.int32)
    check_node("ReduceSum", {"x": x}, 13, {"axes": np.array([1], np.int64)})
    check_node("ReduceMax", {"x": x}, 13, axes=[0], keepdims=0)


@pytest.mark.parametrize("op_type", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("attrs", [{}, {"axis": 1, "keepdims": 0},
                                   {"axis": -1, "select_last_index": 1}])
def test_arg_reductions(check_node, rng, op_type, attrs):
    x = rng.integers(0, 3, (3, 4, 5)).astype(F32)     # many ties
    check_node(op_type, {"x": x}, 12, **attrs)


@pytest.mark.parametrize("axis", [0, -1])
@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumsum(check_node, rng, axis, exclusive, reverse):
    check_node("CumSum", {"x": _x(rng, 3, 4)}, 14, {"axis": np.array(axis, np.int64)},
               exclusive=exclusive, reverse=reverse)


def test_cumsum_int(check_node, rng):
    x = rng.integers(-5, 5, (2, 6)).astype(np.int64)
    check_node("CumSum", {"x": x}, 11, {"axis": np.array([1], np.int32)})


@pytest.mark.parametrize("axis", [0, -1])
@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumprod(check_node, rng, axis, exclusive, reverse):
    g = check_node("CumProd", {"x": _x(rng, 3, 4)}, 26, {"axis": np.array(axis, np.int64)},
                   exclusive=exclusive, reverse=reverse)
    assert [n.op for n in g.nodes] == [reduce.cumprod]


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float64])
def test_cumprod_types(check_node, rng, dtype):
    x = rng.integers(-3, 4, (2, 5)).astype(dtype)
    check_node("CumProd", {"x": x}, 26, {"axis": np.array(1, np.int32)}, exclusive=1)


@pytest.mark.parametrize("attrs", [{}, {"axis": 0}, {"largest": 0}, {"axis": 1, "largest": 0}])
def test_topk(check_node, rng, attrs):
    x = rng.permutation(60).reshape(3, 4, 5).astype(F32)
    check_node("TopK", {"x": x}, 11, {"k": np.array([3], np.int64)}, n_outputs=2, **attrs)


def test_topk_opset10_and_attribute_form(check_node, rng):
    x = rng.permutation(24).reshape(4, 6).astype(F32)
    check_node("TopK", {"x": x}, 10, {"k": np.array([2], np.int64)}, n_outputs=2)
    check_node("TopK", {"x": x}, 9, n_outputs=2, k=4, axis=0)
