"""grid_sample and roi_align through the MLIR (IREE) backend against the reference interpreter: every
interpolation / padding mode and align_corners, 1-, 2- and 3-D grids; roi_align's avg / max, half_pixel
on and off, sampling_ratio 0 (adaptive) and fixed, RoIs past the image, inverted and huge; float16 and
float64; a cuda (PTX) build. Several ops share one graph: an IREE compile costs ~1-2 s."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("iree.compiler")
pytest.importorskip("iree.runtime")

from compiler import interp
from compiler.backends.mlir import BACKEND
from compiler.ir import Graph
from compiler.ops import sampling
from compiler.target import Target
from compiler.types import DType, TensorType

TARGET = Target("llvm", num_threads=1)
F16, F32, F64, I32, I64 = DType.F16, DType.F32, DType.F64, DType.I32, DType.I64
T = TensorType
PADS = list(itertools.product(["zeros", "border", "reflection"], [False, True]))


# rtol = atol per output dtype: float16's results are rounded once from float32 sums (the reference's from
# float64); float64's coordinates and weights are float32 as the reference's
TOL = {np.dtype(np.float16): 1e-3, np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-6}


def check(g: Graph, inputs: list[np.ndarray]) -> None:
    want = interp.run(g, *inputs)
    got = BACKEND.build(g, TARGET).run(inputs)
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and a.dtype == b.dtype, f"output {i}"
        tol = TOL[b.dtype]
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"output {i}")


def _grid(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Grid values inside and past [-1, 1], with the borders and exact half pixels among them."""
    g = rng.uniform(-2.6, 2.6, shape).astype(np.float32)
    g.flat[:8] = [-1, 1, 0, 0.5, -1.25, 1.75, -0.2, 0.2]
    return g


def _rois(rng: np.random.Generator, n: int, extent: float) -> np.ndarray:
    """RoIs (x1, y1, x2, y2) partly past the image, some smaller than a pixel, one inverted."""
    lo = rng.uniform(-3, extent, (n, 2))
    rois = np.concatenate([lo, lo + rng.uniform(0.3, extent / 2, (n, 2))], axis=1).astype(np.float32)
    rois[0] = [4, 5, 3, 4.5]
    return rois


# -- grid_sample -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_mlir_grid_sample_2d(mode):
    """Every padding mode with and without align_corners (a graph per interpolation mode)."""
    rng = np.random.default_rng(0)
    g = Graph()
    x, grid = g.add_input("x", T((2, 3, 4, 5), F32)), g.add_input("g", T((2, 3, 6, 2), F32))
    g.outputs = [g.add1(sampling.grid_sample, [x, grid], mode=mode, padding_mode=p, align_corners=c)
                 for p, c in PADS]
    check(g, [rng.standard_normal((2, 3, 4, 5)).astype(np.float32), _grid(rng, (2, 3, 6, 2))])


def test_mlir_grid_sample_1d_3d_and_one_pixel_axes():
    """1-D grids in every mode; a one-pixel axis (reflection onto it with align_corners) with grid values
    far past the image; 3-D grids in a sample of the modes."""
    rng = np.random.default_rng(1)
    g = Graph()
    x1, g1 = g.add_input("x1", T((2, 2, 5), F32)), g.add_input("g1", T((2, 7, 1), F32))
    xp, gp = g.add_input("xp", T((1, 2, 1, 3), F32)), g.add_input("gp", T((1, 4, 3, 2), F32))
    x3, g3 = g.add_input("x3", T((1, 2, 3, 4, 5), F32)), g.add_input("g3", T((1, 2, 3, 2, 3), F32))
    for m in ("nearest", "linear", "cubic"):
        g.outputs += [g.add1(sampling.grid_sample, [x1, g1], mode=m, padding_mode=p, align_corners=c)
                      for p, c in PADS]
        g.outputs += [g.add1(sampling.grid_sample, [xp, gp], mode=m, padding_mode=p, align_corners=c)
                      for p, c in PADS]
    g.outputs += [g.add1(sampling.grid_sample, [x3, g3], mode=m, padding_mode=p, align_corners=c)
                  for m, p, c in [("nearest", "zeros", False), ("nearest", "reflection", True),
                                  ("linear", "border", True), ("linear", "reflection", False),
                                  ("cubic", "zeros", True), ("cubic", "reflection", False)]]
    far = _grid(rng, (1, 4, 3, 2))
    far.flat[8:12] = [30.3, -41.7, 1e4, -7.5]
    check(g, [rng.standard_normal((2, 2, 5)).astype(np.float32), _grid(rng, (2, 7, 1)),
              rng.standard_normal((1, 2, 1, 3)).astype(np.float32), far,
              rng.standard_normal((1, 2, 3, 4, 5)).astype(np.float32), _grid(rng, (1, 2, 3, 2, 3))])


def test_mlir_grid_sample_float16_and_float64():
    """float16 data and grid (coordinates in float32, as the reference); float64 data on a float32 grid
    (sums in float64)."""
    rng = np.random.default_rng(2)
    g = Graph()
    xh, gh = g.add_input("xh", T((1, 2, 4, 5), F16)), g.add_input("gh", T((1, 3, 3, 2), F16))
    xd, gd = g.add_input("xd", T((1, 2, 5, 4), F64)), g.add_input("gd", T((1, 3, 3, 2), F32))
    half = [g.add1(sampling.grid_sample, [xh, gh], mode=m, padding_mode=p)
            for m, p in [("cubic", "reflection"), ("linear", "zeros"), ("nearest", "border")]]
    double = [g.add1(sampling.grid_sample, [xd, gd], mode=m, padding_mode=p, align_corners=True)
              for m, p in [("cubic", "border"), ("linear", "reflection")]]
    inputs = [rng.standard_normal((1, 2, 4, 5)).astype(np.float16), _grid(rng, (1, 3, 3, 2)).astype(np.float16),
              rng.standard_normal((1, 2, 5, 4)), _grid(rng, (1, 3, 3, 2))]
    g.outputs = half + double
    check(g, inputs)


# -- roi_align ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("half_pixel", [True, False])
def test_mlir_roi_align(mode, half_pixel):
    """Adaptive (0) and fixed sampling_ratio, several output sizes and spatial scales."""
    rng = np.random.default_rng(3)
    g = Graph()
    x = g.add_input("x", T((2, 3, 10, 12), F32))
    rois, b = g.add_input("rois", T((5, 4), F32)), g.add_input("b", T((5,), I64))
    g.outputs = [g.add1(sampling.roi_align, [x, rois, b], mode=mode, half_pixel=half_pixel, sampling_ratio=s,
                        output_height=oh, output_width=ow, spatial_scale=scale)
                 for s, oh, ow, scale in [(0, 3, 4, 0.75), (2, 3, 4, 0.75), (0, 1, 1, 1.0), (1, 2, 5, 0.5)]]
    check(g, [rng.standard_normal((2, 3, 10, 12)).astype(np.float32), _rois(rng, 5, 12),
              np.array([0, 1, 1, 0, 1], np.int64)])


def test_mlir_roi_align_extreme_rois():
    """RoIs around, inside, far past and larger than the image (many adaptive samples per bin), one of
    sub-pixel size, an inverted one; int32 batch indices."""
    rng = np.random.default_rng(4)
    g = Graph()
    x = g.add_input("x", T((2, 2, 7, 9), F32))
    rois, b = g.add_input("rois", T((6, 4), F32)), g.add_input("b", T((6,), I32))
    cases = [("avg", True, 0, 1, 1, 1.0), ("max", True, 0, 2, 3, 0.5), ("max", False, 0, 1, 1, 1.0),
             ("avg", False, 3, 2, 2, 0.25), ("max", True, 1, 3, 1, 1.0), ("avg", True, 0, 5, 4, 0.1)]
    g.outputs = [g.add1(sampling.roi_align, [x, rois, b], mode=m, half_pixel=h, sampling_ratio=s,
                        output_height=oh, output_width=ow, spatial_scale=scale)
                 for m, h, s, oh, ow, scale in cases]
    boxes = np.array([[-30, -20, 40, 35], [0, 0, 8, 6], [2.5, 1.5, 2.7, 1.6], [100, 100, 120, 130],
                      [-50, 2, -10, 5], [3, 3, 2, 1]], np.float32)
    check(g, [rng.standard_normal((2, 2, 7, 9)).astype(np.float32), boxes, np.array([0, 1, 1, 0, 1, 0], np.int32)])


def test_mlir_roi_align_float16_and_float64():
    rng = np.random.default_rng(5)
    g = Graph()
    xh, rh = g.add_input("xh", T((1, 2, 6, 6), F16)), g.add_input("rh", T((3, 4), F16))
    xd, rd = g.add_input("xd", T((1, 2, 6, 6), F64)), g.add_input("rd", T((3, 4), F64))
    b = g.add_input("b", T((3,), I64))
    half = [g.add1(sampling.roi_align, [xh, rh, b], mode=m, output_height=2, output_width=2) for m in ("avg", "max")]
    double = [g.add1(sampling.roi_align, [xd, rd, b], mode=m, output_height=2, output_width=3, sampling_ratio=s)
              for m, s in (("avg", 0), ("max", 2))]
    boxes = _rois(rng, 3, 6)
    inputs = [rng.standard_normal((1, 2, 6, 6)).astype(np.float16), boxes.astype(np.float16),
              rng.standard_normal((1, 2, 6, 6)), boxes.astype(np.float64), np.zeros(3, np.int64)]
    g.outputs = half + double
    check(g, inputs)


def test_mlir_cuda_builds_grid_sample_and_roi_align():
    """No GPU needed: the PTX exists (roi_align's adaptive sample loops are scf.for in the kernel)."""
    g = Graph()
    x, grid = g.add_input("x", T((2, 3, 4, 5), F32)), g.add_input("g", T((2, 3, 6, 2), F32))
    x3, g3 = g.add_input("x3", T((1, 2, 3, 4, 5), F16)), g.add_input("g3", T((1, 2, 3, 2, 3), F16))
    xr = g.add_input("xr", T((2, 3, 10, 12), F32))
    rois, b = g.add_input("rois", T((5, 4), F32)), g.add_input("b", T((5,), I64))
    g.outputs = [g.add1(sampling.grid_sample, [x, grid], mode="cubic", padding_mode="reflection", align_corners=True),
                 g.add1(sampling.grid_sample, [x3, g3], mode="nearest", padding_mode="zeros"),
                 g.add1(sampling.roi_align, [xr, rois, b], mode="max", output_height=3, output_width=4),
                 g.add1(sampling.roi_align, [xr, rois, b], sampling_ratio=2, output_height=2, output_width=2)]
    ptx = BACKEND.build(g, Target("cuda", arch="sm_90")).source("ptx")
    assert ".target sm_90" in ptx and ptx.count(".entry") >= 4
