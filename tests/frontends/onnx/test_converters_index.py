"""Element-wise indexing converters against onnxruntime: GatherElements, GatherND,
ScatterElements (every reduction), ScatterND, OneHot, Trilu."""
from __future__ import annotations

import numpy as np
import pytest

F32 = np.float32


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_elements_negative_indices(check_node, rng, axis):
    x = rng.standard_normal((3, 4)).astype(F32)
    idx = rng.integers(-3, 3, (2, 3)).astype(np.int64)
    check_node("GatherElements", {"x": x}, 13, {"i": idx}, axis=axis)


def test_gather_elements_runtime_indices(check_node, rng):
    feeds = {"x": rng.standard_normal((2, 5)).astype(F32),
             "i": rng.integers(0, 5, (2, 7)).astype(np.int32)}
    check_node("GatherElements", feeds, 13, axis=1)


@pytest.mark.parametrize("batch_dims,idx", [(0, [[0, 1], [1, -1]]), (0, [[1], [0]]),
                                            (1, [[1], [0]])])
def test_gather_nd(check_node, rng, batch_dims, idx):
    x = rng.standard_normal((2, 2, 3)).astype(F32)
    check_node("GatherND", {"x": x}, 13, {"i": np.array(idx, np.int64)}, batch_dims=batch_dims)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_elements_reductions(check_node, rng, reduction):
    x = rng.standard_normal((3, 4)).astype(F32)
    idx = np.array([[1, 0, 2, -1], [1, 2, 0, 0]], np.int64)    # repeated targets accumulate
    upd = rng.standard_normal((2, 4)).astype(F32)
    opset = 13 if reduction == "none" else 18
    kw = {} if reduction == "none" else {"reduction": reduction}
    check_node("ScatterElements", {"x": x, "u": upd}, opset, {"i": idx},
               input_names=["x", "i", "u"], axis=0, **kw)


@pytest.mark.parametrize("reduction", ["none", "add", "max"])
def test_scatter_nd(check_node, rng, reduction):
    x = rng.standard_normal((4, 3)).astype(F32)
    idx = np.array([[0], [-1], [2]], np.int64) if reduction == "none" else \
        np.array([[0], [3], [0]], np.int64)
    upd = rng.standard_normal((3, 3)).astype(F32)
    kw = {} if reduction == "none" else {"reduction": reduction}
    check_node("ScatterND", {"x": x, "u": upd}, 18, {"i": idx}, input_names=["x", "i", "u"], **kw)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_one_hot(check_node, axis):
    idx = np.array([[0, 3, -1], [2, 9, -5]], np.int64)           # 9, -5: out of range, all off
    values = np.array([0.5, 2.0], F32)
    check_node("OneHot", {"i": idx}, 11, {"d": np.array(4, np.int64), "v": values}, axis=axis)


@pytest.mark.parametrize("upper,k", [(1, 0), (0, 0), (1, 2), (0, -1)])
def test_trilu(check_node, rng, upper, k):
    x = rng.standard_normal((2, 4, 5)).astype(F32)
    check_node("Trilu", {"x": x}, 14, {"k": np.array(k, np.int64)}, upper=upper)


def test_gather_elements_out_of_range_is_a_clear_error(make_model):
    from onnx import helper

    from compiler import interp
    from compiler.diagnostics import InvalidInput
    from frontends.onnx import load_onnx
    node = helper.make_node("GatherElements", ["x", "i"], ["y"], axis=0)
    feeds = {"x": np.zeros((2, 2), F32), "i": np.array([[0, 2]], np.int64)}
    g = load_onnx(make_model([node], feeds, ["y"], 13))
    with pytest.raises(InvalidInput, match="gather_elements: an index is out of range"):
        interp.run(g, **feeds)
