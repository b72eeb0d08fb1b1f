"""Converters that compose IR ops, against onnxruntime: LayerNormalization with its Mean and
InvStdDev outputs, GroupNormalization, Hardmax, Softsign, ThresholdedRelu, Celu, Shrink, Mish,
MeanVarianceNormalization, EyeLike, Upsample; against onnx.reference (or numpy): LpNormalization,
Det, SpaceToDepth / DepthToSpace, CenterCropPad, Dropout's mask; random ops refused saying why."""
from __future__ import annotations

import numpy as np
import pytest

F32 = np.float32


@pytest.mark.parametrize("axis", [-1, 1])
def test_layer_norm_mean_and_inv_std_dev(check_node, rng, axis):
    x = rng.standard_normal((2, 3, 4)).astype(F32)
    shape = x.shape[axis % 3:]
    check_node("LayerNormalization", {"x": x}, 17,
               {"s": rng.standard_normal(shape).astype(F32), "b": rng.standard_normal(shape).astype(F32)},
               n_outputs=3, axis=axis, epsilon=1e-3)


def test_group_norm_per_channel_scale(check, rng):
    """Against onnxruntime; the output is typed by hand (shape inference does not expand it)."""
    from onnx import helper, numpy_helper
    x = rng.standard_normal((2, 6, 3, 3)).astype(F32)
    inits = [numpy_helper.from_array(rng.standard_normal(6).astype(F32), n) for n in ("s", "b")]
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=3, epsilon=1e-4)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, x.shape)],
                              [helper.make_tensor_value_info("y", 1, x.shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    check(model, {"x": x}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opset,axis", [(13, -1), (13, 1), (11, 1)])
def test_hardmax_first_maximum(check_node, rng, opset, axis):
    x = rng.integers(0, 3, (2, 3, 4)).astype(F32)          # ties: the first maximum wins
    check_node("Hardmax", {"x": x}, opset, axis=axis)


@pytest.mark.parametrize("op_type,attrs", [
    ("Softsign", {}), ("ThresholdedRelu", {"alpha": 0.5}), ("Celu", {"alpha": 1.5}),
    ("Shrink", {"lambd": 0.7, "bias": 0.2}), ("Mish", {})], ids=lambda v: str(v))
def test_composed_activations(check_node, rng, op_type, attrs):
    opset = 18 if op_type == "Mish" else 13
    check_node(op_type, {"x": rng.uniform(-3, 3, (3, 5)).astype(F32)}, opset, **attrs)


def _against_reference(make_model, node, feeds, opset, inits=None, rtol=1e-5, atol=1e-6):
    """The imported graph run by the interpreter matches onnx.reference; returns the outputs."""
    from onnx.reference import ReferenceEvaluator

    from compiler import interp
    from frontends.onnx import load_onnx
    model = make_model([node], feeds, list(node.output), opset, inits)
    want = ReferenceEvaluator(model).run(None, feeds)
    got = interp.run(load_onnx(model), *feeds.values())
    got = got if isinstance(got, (list, tuple)) else [got]
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.dtype, g.shape, w.dtype, w.shape)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return got


@pytest.mark.parametrize("axes", [[0, 2, 3], [1], [0, 1, 2, 3]], ids=str)
def test_mean_variance_normalization(check_node, rng, axes):
    """(The default axes are the conformance case's: onnx shape inference fails without them.)"""
    x = rng.uniform(-2, 2, (2, 3, 4, 2)).astype(F32)
    check_node("MeanVarianceNormalization", {"x": x}, 13, axes=axes)


@pytest.mark.parametrize("p,axis", [(1, 0), (1, -1), (2, 1), (2, -1)])
def test_lp_normalization_with_a_zero_slice(make_model, rng, p, axis):
    """Against numpy (onnx.reference's p=1 sums x, not |x|); a zero norm gives 0, not NaN."""
    from onnx import helper

    from compiler import interp
    from frontends.onnx import load_onnx
    x = rng.uniform(-2, 2, (3, 4, 2)).astype(F32)
    x[1, 2, :] = 0
    x[2, :, 1] = 0
    x[:, 0, 0] = 0
    node = helper.make_node("LpNormalization", ["x"], ["y"], axis=axis, p=p)
    got = interp.run(load_onnx(make_model([node], {"x": x}, ["y"], 22)), x)
    got = got[0] if isinstance(got, (list, tuple)) else got
    norm = np.linalg.norm(x, ord=p, axis=axis, keepdims=True) if p == 1 else \
        np.sqrt(np.sum(x * x, axis=axis, keepdims=True))
    want = np.divide(x, norm, out=np.zeros_like(x), where=norm != 0)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 3), (2, 4, 4), (1, 1)], ids=str)
def test_det_matches_numpy(make_model, rng, shape):
    """Partial pivoting: a zero leading entry, a singular matrix and random ones."""
    from onnx import helper
    x = rng.standard_normal(shape).astype(F32)
    if len(shape) == 3:
        x[0, 0, 0] = 0                     # needs a row swap
        x[1, 2] = 2 * x[1, 0]              # singular
    got = _against_reference(make_model, helper.make_node("Det", ["x"], ["y"]), {"x": x}, 11,
                             rtol=1e-4, atol=1e-5)
    assert got[0].shape == shape[:-2]


@pytest.mark.parametrize("op_type,mode,opset", [
    ("SpaceToDepth", "DCR", 28), ("SpaceToDepth", "CRD", 28), ("SpaceToDepth", None, 13),
    ("DepthToSpace", "DCR", 13), ("DepthToSpace", "CRD", 13)])
def test_space_depth_rearrangements(make_model, rng, op_type, mode, opset):
    from onnx import helper
    shape = (2, 3, 4, 6) if op_type == "SpaceToDepth" else (2, 8, 3, 2)
    x = rng.standard_normal(shape).astype(F32)
    node = helper.make_node(op_type, ["x"], ["y"], blocksize=2, **({"mode": mode} if mode else {}))
    _against_reference(make_model, node, {"x": x}, opset)


@pytest.mark.parametrize("want,axes", [([5, 7, 3], None), ([2, 9], [0, -2]), ([4, 2], [1, 2])],
                         ids=str)
def test_center_crop_pad(make_model, rng, want, axes):
    """Crop and pad at once, odd differences (the extra element goes at the end)."""
    from onnx import helper
    x = rng.standard_normal((4, 6, 3)).astype(F32)
    node = helper.make_node("CenterCropPad", ["x", "s"], ["y"], **({"axes": axes} if axes else {}))
    _against_reference(make_model, node, {"x": x}, 18, {"s": np.array(want, np.int64)})


@pytest.mark.parametrize("shape,attrs", [((4, 4), {}), ((3, 5), {"k": 2, "dtype": 1}),
                                         ((5, 3), {"k": -1, "dtype": 6})], ids=str)
def test_eye_like(check_node, rng, shape, attrs):
    check_node("EyeLike", {"x": rng.standard_normal(shape).astype(F32)}, 9, **attrs)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_upsample_is_resize_10(check_node, rng, mode):
    x = rng.standard_normal((1, 2, 3, 4)).astype(F32)
    check_node("Upsample", {"x": x}, 9, {"scales": np.array([1, 1, 2, 1.5], F32)}, mode=mode)


@pytest.mark.parametrize("opset", [9, 10, 13])
def test_dropout_mask_is_all_true_in_inference(make_model, rng, opset):
    """Dropout-12+ with a ratio (and no training_mode); Dropout-7's mask has x's type."""
    from onnx import helper

    from compiler import interp
    from frontends.onnx import load_onnx
    x = rng.standard_normal((3, 4)).astype(F32)
    inputs = ["x", "r"] if opset >= 12 else ["x"]
    node = helper.make_node("Dropout", inputs, ["y", "mask"], ratio=0.3) if opset < 12 else \
        helper.make_node("Dropout", inputs, ["y", "mask"])
    inits = {"r": np.array(0.5, F32)} if opset >= 12 else None
    if opset >= 10:
        _against_reference(make_model, node, {"x": x}, opset, inits)
    model = make_model([node], {"x": x}, ["y"], opset, inits)   # shape inference skips a T mask
    model.graph.output.append(helper.make_tensor_value_info("mask", 1 if opset < 10 else 9, x.shape))
    y, mask = interp.run(load_onnx(model), x)
    np.testing.assert_array_equal(y, x)
    assert mask.all() and mask.dtype == (np.bool_ if opset >= 10 else F32)


def test_random_ops_are_refused_saying_why(make_model, rng):
    from onnx import helper

    from compiler.diagnostics import Unsupported
    from frontends.onnx import load_onnx
    node = helper.make_node("Bernoulli", ["x"], ["y"], name="coin")
    model = make_model([node], {"x": rng.uniform(0, 1, (2, 3)).astype(F32)}, ["y"], 15)
    with pytest.raises(Unsupported, match=r"Bernoulli: random sampling .*deterministic.*'coin'"):
        load_onnx(model)
