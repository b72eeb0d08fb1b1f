"""Pad and Resize converters against onnxruntime across their opset forms, modes and
coordinate transformations."""
from __future__ import annotations

import numpy as np
import pytest

F32 = np.float32
I64 = np.int64
EMPTY = np.zeros(0, F32)


def _x(rng, *shape):
    return rng.standard_normal(shape).astype(F32)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("opset", [9, 10])
def test_pad_v2_attributes(check_node, rng, mode, opset):
    check_node("Pad", {"x": _x(rng, 2, 4, 5)}, opset, pads=[0, 1, 2, 0, 2, 1], mode=mode, value=1.5)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("pads", [[0, 1, 2, 0, 2, 1], [0, -1, 1, 0, 1, -2]])
def test_pad_inputs(check_node, rng, mode, pads):
    inits = {"p": np.array(pads, I64), "v": np.array(-2.0, F32)}
    names = ["x", "p", "v"] if mode == "constant" else ["x", "p"]
    if mode != "constant":
        del inits["v"]
    check_node("Pad", {"x": _x(rng, 2, 4, 5)}, 13, inits, input_names=names, mode=mode)


def test_pad_axes_opset18_and_wrap_opset19(check_node, rng):
    check_node("Pad", {"x": _x(rng, 2, 4, 5)}, 18, {"p": np.array([1, 2, 0, 3], I64),
                                                   "ax": np.array([-1, 0], I64)},
               input_names=["x", "p", "", "ax"])
    check_node("Pad", {"x": _x(rng, 2, 4, 5)}, 19, {"p": np.array([0, 1, 2, 0, 2, 1], I64)},
               mode="wrap")


def test_pad_int_input(check_node, rng):
    x = rng.integers(-5, 5, (3, 4)).astype(np.int32)
    check_node("Pad", {"x": x}, 13, {"p": np.array([1, 0, 0, 2], I64), "v": np.array(7, np.int32)})


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [[1, 1, 2, 3], [1, 1, 0.5, 2]])
def test_resize_v10_scales(check_node, rng, mode, scales):
    check_node("Resize", {"x": _x(rng, 1, 2, 4, 6)}, 10, {"s": np.array(scales, F32)}, mode=mode)


COORDS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("nearest_mode", NEAREST)
@pytest.mark.parametrize("scales", [[1, 1, 2.0, 1.5], [1, 1, 0.7, 0.5]])
def test_resize_nearest_scales(check_node, rng, coord, nearest_mode, scales):
    if coord == "align_corners" and scales[2] == 0.7:
        pytest.skip("5 * 0.7 is not an integer: onnxruntime's align_corners divides by the floored "
                    "size, the spec by 5 * 0.7 (test_resize_align_corners_uses_the_scaled_length)")
    check_node("Resize", {"x": _x(rng, 1, 2, 5, 6)}, 11,
               {"roi": EMPTY, "s": np.array(scales, F32)}, mode="nearest",
               coordinate_transformation_mode=coord, nearest_mode=nearest_mode)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_align_corners_uses_the_scaled_length(make_model, rng, mode):
    """align_corners: x_original = x * (in - 1) / (in * scale - 1), with the fractional resized
    length of the ONNX spec and its reference (onnxruntime uses the floored output size)."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    from compiler import interp
    from frontends.onnx import load_onnx
    feeds = {"x": _x(rng, 1, 1, 2, 4)}
    node = helper.make_node("Resize", ["x", "roi", "s"], ["y"], mode=mode,
                            coordinate_transformation_mode="align_corners")
    model = make_model([node], feeds, ["y"], 19, {"roi": EMPTY, "s": np.array([1, 1, 0.6, 0.6], F32)})
    want = ReferenceEvaluator(model).run(None, feeds)[0]
    np.testing.assert_allclose(interp.run(load_onnx(model), **feeds)[0], want, rtol=1e-6)


@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("scales", [[1, 1, 2.0, 1.5], [1, 1, 0.6, 0.5], [1, 2, 1, 1]])
def test_resize_linear_scales(check_node, rng, coord, scales):
    check_node("Resize", {"x": _x(rng, 1, 2, 5, 6)}, 11,
               {"roi": EMPTY, "s": np.array(scales, F32)}, mode="linear",
               coordinate_transformation_mode=coord)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("sizes", [[1, 2, 9, 4], [1, 2, 3, 13]])
def test_resize_sizes_opset13(check_node, rng, mode, coord, sizes):
    check_node("Resize", {"x": _x(rng, 1, 2, 5, 6)}, 13, {"sz": np.array(sizes, I64)},
               input_names=["x", "", "", "sz"], mode=mode, coordinate_transformation_mode=coord)


def test_resize_sizes_opset11_with_empty_scales(check_node, rng):
    check_node("Resize", {"x": _x(rng, 1, 1, 4, 4)}, 11,
               {"roi": EMPTY, "s": EMPTY, "sz": np.array([1, 1, 7, 3], I64)}, mode="linear")


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
def test_resize_axes_and_aspect_policy_opset18(check_node, rng, policy):
    check_node("Resize", {"x": _x(rng, 1, 2, 4, 6)}, 18, {"sz": np.array([7, 8], I64)},
               input_names=["x", "", "", "sz"], mode="linear", axes=[2, 3],
               keep_aspect_ratio_policy=policy)


def test_resize_1d_and_3d(check_node, rng):
    check_node("Resize", {"x": _x(rng, 2, 3, 5)}, 13, {"s": np.array([1, 1, 2.5], F32)},
               input_names=["x", "", "s"], mode="linear")
    check_node("Resize", {"x": _x(rng, 1, 1, 3, 4, 2)}, 13, {"s": np.array([1, 1, 2, 1, 3], F32)},
               input_names=["x", "", "s"], mode="nearest")


def test_resize_nearest_float32_coordinate_ties(check_node, rng):
    """(1 + 0.5) / 0.6f - 0.5 is exactly 2 in float32 (1.9999 in float64): coordinates are float32."""
    check_node("Resize", {"x": _x(rng, 1, 1, 5, 5)}, 11,
               {"roi": EMPTY, "s": np.array([1, 1, 0.6, 1], F32)}, mode="nearest",
               coordinate_transformation_mode="half_pixel", nearest_mode="floor")


def test_resize_tf_half_pixel_for_nearest(make_model, rng):
    """Resize-11 only; neither onnxruntime nor onnx.reference has the mode, so the spec formula
    x_in = (x_out + 0.5) / scale, rounded half down and clamped, is the oracle."""
    from onnx import helper

    from compiler import interp
    from frontends.onnx import load_onnx

    x = _x(rng, 1, 2, 5, 6)
    node = helper.make_node("Resize", ["x", "roi", "s"], ["y"], mode="nearest",
                            coordinate_transformation_mode="tf_half_pixel_for_nearest")
    model = make_model([node], {"x": x}, ["y"], 11,
                       {"roi": EMPTY, "s": np.array([1, 1, 1.5, 0.5], F32)})
    rows = np.clip(np.ceil((np.arange(7) + 0.5) / 1.5 - 0.5), 0, 4).astype(int)
    cols = np.clip(np.ceil((np.arange(3) + 0.5) / 0.5 - 0.5), 0, 5).astype(int)
    np.testing.assert_array_equal(interp.run(load_onnx(model), x)[0], x[:, :, rows][:, :, :, cols])


def _check_reference(make_model, feeds, node, opset, inits, rtol=1e-5, atol=1e-5):
    """load_onnx + interp against onnx.reference (the spec's own implementation)."""
    from onnx.reference import ReferenceEvaluator

    from compiler import interp
    from frontends.onnx import load_onnx
    model = make_model([node], feeds, ["y"], opset, inits)
    want = ReferenceEvaluator(model).run(None, feeds)[0]
    got = interp.run(load_onnx(model), *feeds.values())[0]
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


CUBIC_COORDS = ["half_pixel", "pytorch_half_pixel", "asymmetric", "half_pixel_symmetric"]


@pytest.mark.parametrize("coord", CUBIC_COORDS)
@pytest.mark.parametrize("a, exclude", [(-0.75, 0), (-0.5, 1)])
@pytest.mark.parametrize("scales", [[1, 1, 2.0, 1.5], [1, 1, 0.6, 0.8]])
def test_resize_cubic(check_node, rng, coord, a, exclude, scales):
    """Cubic convolution (cubic_coeff_a, exclude_outside) under each coordinate mode, vs onnxruntime."""
    check_node("Resize", {"x": _x(rng, 1, 2, 5, 6)}, 19, {"roi": EMPTY, "s": np.array(scales, F32)},
               mode="cubic", coordinate_transformation_mode=coord, cubic_coeff_a=a, exclude_outside=exclude)


def test_resize_cubic_align_corners_and_sizes(make_model, rng):
    """align_corners divides by in * scale - 1 (the spec; onnxruntime by the floored size), so the
    oracle is onnx.reference; sizes give the scales out / in."""
    from onnx import helper
    x = {"x": _x(rng, 1, 1, 4, 5)}
    node = helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="cubic",
                            coordinate_transformation_mode="align_corners")
    _check_reference(make_model, x, node, 19, {"sz": np.array([1, 1, 7, 3], I64)})


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("scales", [[1, 1, 0.6, 0.35], [1, 1, 0.8, 1.6]])
def test_resize_antialias(check_node, make_model, rng, mode, scales):
    """antialias=1 stretches the filter by 1 / scale when downscaling (upscaled axes as without)."""
    from onnx import helper
    x = _x(rng, 1, 2, 7, 9)
    inits = {"roi": EMPTY, "s": np.array(scales, F32)}
    check_node("Resize", {"x": x}, 18, inits, mode=mode, antialias=1)
    _check_reference(make_model, {"x": x}, helper.make_node("Resize", ["x", "roi", "s"], ["y"], mode=mode,
                                                            antialias=1), 18, inits)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("scales", [[1, 1, 2.3, 2.94], [1, 1, 0.6, 0.45]])
def test_resize_half_pixel_symmetric(check_node, rng, mode, scales):
    check_node("Resize", {"x": _x(rng, 1, 1, 3, 5)}, 19, {"roi": EMPTY, "s": np.array(scales, F32)},
               mode=mode, coordinate_transformation_mode="half_pixel_symmetric")


@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
@pytest.mark.parametrize("roi", [[0, 0, 0.4, 0.6, 1, 1, 0.6, 0.8], [0, 0, -0.3, 0.5, 1, 1, 1.2, 1.7]])
def test_resize_tf_crop_and_resize(make_model, rng, mode, roi):
    """The roi crop (start fractions, then ends) resized to sizes; samples past the input take
    extrapolation_value."""
    from onnx import helper
    node = helper.make_node("Resize", ["x", "roi", "", "sz"], ["y"], mode=mode, extrapolation_value=-7.5,
                            coordinate_transformation_mode="tf_crop_and_resize")
    _check_reference(make_model, {"x": _x(rng, 1, 2, 5, 6)}, node, 19,
                     {"roi": np.array(roi, F32), "sz": np.array([1, 2, 4, 5], I64)})


def test_resize_tf_crop_and_resize_axes(make_model, rng):
    """Resize-18 axes: roi and sizes list only those axes, in their order."""
    from onnx import helper
    node = helper.make_node("Resize", ["x", "roi", "", "sz"], ["y"], mode="linear", axes=[3, 2],
                            coordinate_transformation_mode="tf_crop_and_resize")
    _check_reference(make_model, {"x": _x(rng, 1, 1, 4, 4)}, node, 19,
                     {"roi": np.array([0.6, 0.4, 0.8, 0.6], F32), "sz": np.array([3, 2], I64)})


def test_resize_tf_crop_and_resize_needs_roi(make_model, rng):
    from onnx import helper

    from compiler.diagnostics import InvalidModel
    from frontends.onnx import load_onnx
    node = helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="linear",
                            coordinate_transformation_mode="tf_crop_and_resize")
    model = make_model([node], {"x": _x(rng, 1, 1, 4, 4)}, ["y"], 19, {"sz": np.array([1, 1, 3, 3], I64)})
    with pytest.raises(InvalidModel, match="tf_crop_and_resize' needs the roi input"):
        load_onnx(model)
