"""GridSample, AffineGrid and RoiAlign through the ONNX frontend against onnx.reference, and
grid_sample, roi_align and the cubic / antialiased / cropping resize through the TVM backend
against the reference interpreter (several ops share one graph to keep compile time down)."""
from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from compiler import interp
from compiler.diagnostics import Unsupported
from compiler.ir import Graph
from compiler.ops import sampling
from compiler.ops import shape as sh
from compiler.types import DType, TensorType
from frontends.onnx import load_onnx

F32, I64 = DType.F32, DType.I64


def _model(node: onnx.NodeProto, feeds: dict[str, np.ndarray], opset: int,
           inits: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    infos = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
             for k, v in feeds.items()]
    graph = helper.make_graph([node], "t", infos, [onnx.ValueInfoProto(name="y")],
                              [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10 if opset >= 21 else 8
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _check_reference(node: onnx.NodeProto, feeds: dict[str, np.ndarray], opset: int,
                     inits: dict[str, np.ndarray] | None = None) -> None:
    model = _model(node, feeds, opset, inits)
    want = ReferenceEvaluator(model).run(None, feeds)[0]
    got = interp.run(load_onnx(model), *feeds.values())[0]
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _grid(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Grid values inside and past [-1, 1], with the borders and exact half pixels among them."""
    g = rng.uniform(-2.6, 2.6, shape).astype(np.float32)
    g.flat[:8] = [-1, 1, 0, 0.5, -1.25, 1.75, -0.2, 0.2]
    return g


@pytest.mark.parametrize("mode, padding", itertools.product(["nearest", "linear", "cubic"],
                                                            ["zeros", "border", "reflection"]))
@pytest.mark.parametrize("align_corners", [0, 1])
def test_grid_sample_2d(mode, padding, align_corners):
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((2, 3, 4, 5)).astype(np.float32), "g": _grid(rng, (2, 3, 6, 2))}
    node = helper.make_node("GridSample", ["x", "g"], ["y"], mode=mode, padding_mode=padding,
                            align_corners=align_corners)
    _check_reference(node, feeds, 20)


@pytest.mark.parametrize("mode, padding", [("nearest", "zeros"), ("linear", "border"), ("linear", "reflection"),
                                           ("cubic", "zeros")])
def test_grid_sample_3d(mode, padding):
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((1, 2, 3, 4, 5)).astype(np.float32), "g": _grid(rng, (1, 2, 3, 2, 3))}
    _check_reference(helper.make_node("GridSample", ["x", "g"], ["y"], mode=mode, padding_mode=padding), feeds, 20)


@pytest.mark.parametrize("mode, mode_20", [("bilinear", "linear"), ("bicubic", "cubic"), ("nearest", "nearest")])
def test_grid_sample_16_mode_names(mode, mode_20):
    """GridSample-16 spells linear and cubic bilinear and bicubic (onnx.reference knows the 20 names)."""
    rng = np.random.default_rng(2)
    feeds = {"x": rng.standard_normal((1, 2, 4, 4)).astype(np.float32), "g": _grid(rng, (1, 3, 3, 2))}
    node = helper.make_node("GridSample", ["x", "g"], ["y"], mode=mode, align_corners=1)
    got = interp.run(load_onnx(_model(node, feeds, 16)), *feeds.values())[0]
    ref = _model(helper.make_node("GridSample", ["x", "g"], ["y"], mode=mode_20, align_corners=1), feeds, 20)
    np.testing.assert_allclose(got, ReferenceEvaluator(ref).run(None, feeds)[0], rtol=1e-5, atol=1e-5)


def test_grid_sample_single_pixel_reflection():
    """A one-pixel axis with align_corners reflects everything onto that pixel (onnx.reference divides
    by zero there; onnxruntime agrees with these values)."""
    x = np.arange(6, dtype=np.float32).reshape(1, 2, 1, 3)
    g = np.array([[[[-0.7, 0.3], [1.9, -2.2]]]], np.float32)
    node = helper.make_node("GridSample", ["x", "g"], ["y"], mode="linear", padding_mode="reflection",
                            align_corners=1)
    got = interp.run(load_onnx(_model(node, {"x": x, "g": g}, 20)), x, g)[0]
    np.testing.assert_allclose(got, [[[[0.3, 1.1]], [[3.3, 4.1]]]], rtol=1e-6)


@pytest.mark.parametrize("size", [(2, 1, 3, 4), (2, 1, 3, 4, 2)])
@pytest.mark.parametrize("align_corners", [0, 1])
def test_affine_grid(size, align_corners):
    """A constant base grid times the transposed affine matrices (matmul, no new op)."""
    rank = len(size) - 2
    theta = np.random.default_rng(3).standard_normal((2, rank, rank + 1)).astype(np.float32)
    node = helper.make_node("AffineGrid", ["theta", "size"], ["y"], align_corners=align_corners)
    _check_reference(node, {"theta": theta}, 20, {"size": np.array(size, np.int64)})
    model = _model(node, {"theta": theta}, 20, {"size": np.array(size, np.int64)})
    assert {n.op.name for n in load_onnx(model).nodes} == {"nn.transpose", "nn.matmul", "nn.reshape"}


def _rois(rng: np.random.Generator, n: int, extent: float) -> np.ndarray:
    """RoIs (x1, y1, x2, y2) partly past the image, some smaller than a pixel, one inverted."""
    lo = rng.uniform(-3, extent, (n, 2))
    rois = np.concatenate([lo, lo + rng.uniform(0.3, extent / 2, (n, 2))], axis=1).astype(np.float32)
    rois[0] = [4, 5, 3, 4.5]
    return rois


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("coord", ["half_pixel", "output_half_pixel"])
def test_roi_align(mode, sampling_ratio, coord):
    rng = np.random.default_rng(4)
    feeds = {"x": rng.standard_normal((2, 3, 10, 12)).astype(np.float32), "rois": _rois(rng, 5, 12),
             "b": np.array([0, 1, 1, 0, 1], np.int64)}
    node = helper.make_node("RoiAlign", ["x", "rois", "b"], ["y"], mode=mode, sampling_ratio=sampling_ratio,
                            coordinate_transformation_mode=coord, spatial_scale=0.75, output_height=3,
                            output_width=4)
    _check_reference(node, feeds, 16)


def test_roi_align_10_is_output_half_pixel():
    """RoiAlign-10 predates coordinate_transformation_mode: its RoIs are output_half_pixel (as
    onnxruntime; onnx.reference applies the newer default half_pixel to it)."""
    rng = np.random.default_rng(5)
    feeds = {"x": rng.standard_normal((1, 2, 6, 6)).astype(np.float32), "rois": _rois(rng, 3, 6),
             "b": np.zeros(3, np.int64)}
    node = helper.make_node("RoiAlign", ["x", "rois", "b"], ["y"], output_height=2, output_width=2)
    got = interp.run(load_onnx(_model(node, feeds, 10)), *feeds.values())[0]
    ref = _model(helper.make_node("RoiAlign", ["x", "rois", "b"], ["y"], output_height=2, output_width=2,
                                  coordinate_transformation_mode="output_half_pixel"), feeds, 16)
    np.testing.assert_allclose(got, ReferenceEvaluator(ref).run(None, feeds)[0], rtol=1e-5, atol=1e-5)


# -- TVM against the interpreter --------------------------------------------------------
tvm_backend = pytest.importorskip("compiler.backends.tvm")


def _tvm_check(g: Graph, inputs: list[np.ndarray], rtol: float = 1e-4, atol: float = 1e-5) -> None:
    from compiler.target import Target
    want = interp.run(g, *inputs)
    got = tvm_backend.BACKEND.build(g, Target("llvm")).run(inputs)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and a.dtype == b.dtype, f"output {i}"
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"output {i}")


GRID_CASES = [dict(mode=m, padding_mode=p, align_corners=c) for m, p, c in
              [("nearest", "reflection", False), ("linear", "zeros", False), ("linear", "border", True),
               ("cubic", "reflection", True), ("cubic", "zeros", False)]]


@pytest.mark.parametrize("dims", [2, 3])
def test_tvm_grid_sample(dims):
    rng = np.random.default_rng(6)
    xs, gs = ((2, 3, 4, 5), (2, 3, 6, 2)) if dims == 2 else ((1, 2, 3, 4, 5), (1, 2, 3, 2, 3))
    g = Graph()
    x, grid = g.add_input("x", TensorType(xs, F32)), g.add_input("g", TensorType(gs, F32))
    g.outputs = [g.add1(sampling.grid_sample, [x, grid], **c) for c in (GRID_CASES if dims == 2 else GRID_CASES[1:3])]
    _tvm_check(g, [rng.standard_normal(xs).astype(np.float32), _grid(rng, gs)])


def test_tvm_grid_sample_float64_data_float32_grid():
    rng = np.random.default_rng(7)
    g = Graph()
    x = g.add_input("x", TensorType((1, 2, 5, 4), DType.F64))
    grid = g.add_input("g", TensorType((1, 3, 3, 2), F32))
    g.outputs = [g.add1(sampling.grid_sample, [x, grid], mode="cubic", padding_mode="border")]
    _tvm_check(g, [rng.standard_normal((1, 2, 5, 4)), _grid(rng, (1, 3, 3, 2))], rtol=1e-6, atol=1e-6)


def test_tvm_roi_align():
    rng = np.random.default_rng(8)
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 10, 12), F32))
    rois = g.add_input("rois", TensorType((5, 4), F32))
    b = g.add_input("b", TensorType((5,), I64))
    common = dict(output_height=3, output_width=4, sampling_ratio=2, spatial_scale=0.75)
    g.outputs = [g.add1(sampling.roi_align, [x, rois, b], mode=m, half_pixel=h, **common)
                 for m, h in [("avg", True), ("max", False)]]
    _tvm_check(g, [rng.standard_normal((2, 3, 10, 12)).astype(np.float32), _rois(rng, 5, 12),
                   np.array([0, 1, 1, 0, 1], np.int64)])


def test_tvm_roi_align_adaptive_sampling_is_unsupported():
    from compiler.target import Target
    g = Graph()
    x = g.add_input("x", TensorType((1, 1, 6, 6), F32))
    rois = g.add_input("rois", TensorType((2, 4), F32))
    b = g.add_input("b", TensorType((2,), I64))
    g.outputs = [g.add1(sampling.roi_align, [x, rois, b], sampling_ratio=0)]
    with pytest.raises(Unsupported, match="roi_align with sampling_ratio 0 on the tvm backend"):
        tvm_backend.BACKEND.build(g, Target("llvm"))


def test_tvm_resize_cubic_antialias_and_crop():
    """The taps-based resize lowering: cubic (a, exclude_outside), antialiased linear and cubic,
    tf_crop_and_resize with extrapolation (nearest and linear), float and integer inputs."""
    rng = np.random.default_rng(9)
    g = Graph()
    x = g.add_input("x", TensorType((1, 2, 5, 6), F32))
    xi = g.add_input("xi", TensorType((1, 2, 5, 6), DType.I32))
    up = dict(sizes=(1, 2, 9, 8), scales=(1.0, 1.0, 1.8, 4 / 3))
    down = dict(sizes=(1, 2, 3, 2), scales=(1.0, 1.0, 0.6, 1 / 3))
    crop = dict(coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=-3.0,
                roi=(0, 0, -0.2, 0.3, 1, 1, 0.7, 1.4), **up)
    g.outputs = [g.add1(sh.resize, [x], mode="cubic", **up),
                 g.add1(sh.resize, [x], mode="cubic", cubic_coeff_a=-0.5, exclude_outside=True,
                        coordinate_transformation_mode="half_pixel_symmetric", **down),
                 g.add1(sh.resize, [x], mode="linear", antialias=True, **down),
                 g.add1(sh.resize, [x], mode="cubic", antialias=True, **down),
                 g.add1(sh.resize, [x], mode="nearest", **crop),
                 g.add1(sh.resize, [x], mode="linear", **crop),
                 g.add1(sh.resize, [xi], mode="cubic", **up)]
    _tvm_check(g, [rng.standard_normal((1, 2, 5, 6)).astype(np.float32),
                   rng.integers(-50, 50, (1, 2, 5, 6)).astype(np.int32)])


def test_mlir_refuses_a_nearest_crop_and_resize_it_cannot_extrapolate():
    """Resize's nearest mode with tf_crop_and_resize has no extrapolation value on MLIR: refused by name (grid_sample
    and roi_align are lowered: tests/backends/test_mlir_sampling.py)."""
    pytest.importorskip("iree.compiler")
    from compiler.backends.mlir import BACKEND
    from compiler.target import Target
    g = Graph()
    x = g.add_input("x", TensorType((1, 1, 4, 4), F32))
    g.outputs = [g.add1(sh.resize, [x], mode="nearest", sizes=(1, 1, 3, 3), scales=(1.0, 1.0, 0.75, 0.75),
                        coordinate_transformation_mode="tf_crop_and_resize", roi=(0, 0, 0, 0.5, 1, 1, 1, 1.5))]
    with pytest.raises(Unsupported, match="tf_crop_and_resize extrapolation on the mlir backend"):
        BACKEND.build(g, Target("llvm"))
