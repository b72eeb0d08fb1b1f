"""Sampling at coordinates computed from data: grid_sample (ONNX GridSample, any number of spatial
axes) and roi_align (ONNX RoiAlign).

The per-axis coordinate arithmetic (unnormalizing, reflecting, the pixels and weights a coordinate
reads) is written once over a small `Math` of elementwise primitives, so the numpy references here,
the TVM lowerings (compiler/backends/tvm_lower/sampling.py, which pass TVM's primitives) and the MLIR ones
(compiler/backends/mlir_lower/sampling.py: arith / math builders) compute the same formulas in the same
float32 arithmetic as onnx.reference.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from compiler.diagnostics import InvalidInput
from compiler.ops._util import need_float
from compiler.ops.registry import Attr, TypeRuleError, define
from compiler.ops.shape import cubic_weights
from compiler.types import DType, TensorType

GRID_MODES = ("nearest", "linear", "cubic")
PADDING_MODES = ("zeros", "border", "reflection")
GRID_CUBIC_A = -0.75                      # GridSample's cubic is Keys' with a = -0.75


class Math(NamedTuple):
    """Elementwise primitives the shared formulas use: numpy's here, TVM's and MLIR's in the lowerings."""
    where: Callable[[Any, Any, Any], Any]     # where(cond, a, b); a or b may be a Python number
    floor: Callable[[Any], Any]
    rint: Callable[[Any], Any]                # round half to even
    to_int: Callable[[Any], Any]              # truncate toward zero, to an integer type
    both: Callable[[Any, Any], Any]           # logical and
    scope: Callable[[], Any]                  # a Lets: names a value used several times (TVM: let)


class Lets:
    """Values named once and used several times: `let(v)` names v, `wrap(e)` is e with the names
    bound. numpy computes each value once anyway (this class); TVM's expressions would repeat it,
    so there they are let bindings, and a wrapped expression may appear once per kernel."""

    def let(self, v: Any) -> Any:
        return v

    def wrap(self, e: Any) -> Any:
        return e


NUMPY = Math(np.where, np.floor, np.rint, lambda v: np.asarray(v).astype(np.int64), np.logical_and, Lets)


# -- grid_sample ---------------------------------------------------------------------------
def _grid_sample_infer(ins: list[TensorType], a: dict[str, Any]) -> list[TensorType]:
    x, grid = ins
    need_float(x, "grid_sample")
    need_float(grid, "grid_sample grid")
    if x.rank < 3 or grid.rank != x.rank or grid.shape[0] != x.shape[0] or grid.shape[-1] != x.rank - 2:
        raise TypeRuleError(f"grid_sample of {x.shape} needs a grid (N, out..., {x.rank - 2}), got {grid.shape}")
    if a["mode"] not in GRID_MODES or a["padding_mode"] not in PADDING_MODES:
        raise TypeRuleError(f"grid_sample mode {a['mode']!r} / padding_mode {a['padding_mode']!r}")
    return [TensorType((x.shape[0], x.shape[1], *grid.shape[1:-1]), x.dtype)]


def unnormalize(n: Any, size: int, align_corners: bool) -> Any:
    """Grid value n (-1 .. 1 spans the axis) -> pixel coordinate along an axis of `size` pixels."""
    return (n + 1) / 2.0 * (size - 1) if align_corners else ((n + 1) * size - 1) / 2.0


def borders(size: int, align_corners: bool) -> tuple[float, float]:
    """The extent a grid spans along an axis: pixel centres, or pixel edges without align_corners."""
    return (0.0, size - 1.0) if align_corners else (-0.5, size - 0.5)


def reflect(x: Any, lo: float, hi: float, m: Math) -> Any:
    """x reflected off lo and hi until it lies between them (onnx.reference's _gs_reflect)."""
    span, s = hi - lo, m.scope()
    x = s.let(x)
    below, above = x < lo, x > hi
    if span <= 0:                             # a single pixel with align_corners: everything maps to it
        return s.wrap(m.where(below, lo, m.where(above, hi, x)))
    d = s.let(m.where(below, lo - x, x - hi))
    k = s.let(m.floor(d / span))
    r = s.let(d - k * span)
    odd = m.floor(k * 0.5) < k * 0.5
    return s.wrap(m.where(below, m.where(odd, hi - r, lo + r), m.where(above, m.where(odd, lo + r, hi - r), x)))


class Tap(NamedTuple):
    """One pixel a sample reads along an axis: its index (in range), weight, and whether it is a
    real pixel (False: zeros padding reads 0 there; None: every pixel is)."""
    index: Any
    weight: Any
    inside: Any


def grid_coord(n: Any, size: int, a: dict[str, Any], m: Math) -> Any:
    """Grid value n -> the coordinate sampled along an axis of `size`: unnormalized, rounded half
    to even for nearest, then clamped (border) or reflected (reflection) when past the borders."""
    lo, hi = borders(size, a["align_corners"])
    x = unnormalize(n, size, a["align_corners"])
    if a["mode"] == "nearest":
        x = m.rint(x)
    if a["padding_mode"] == "border":
        return m.where(x < lo, 0.0, m.where(x > hi, size - 1.0, x))
    if a["padding_mode"] == "reflection":
        return reflect(x, lo, hi, m)
    return x


def grid_taps(x: Any, size: int, a: dict[str, Any], m: Math) -> list[Tap]:
    """The pixels coordinate x (from grid_coord) reads along an axis of `size`: 1 for nearest, 2
    linear, 4 cubic; pixels past the image clamped (border), reflected, or marked outside (zeros)."""
    mode, pad = a["mode"], a["padding_mode"]
    lo, hi = borders(size, a["align_corners"])
    if mode == "nearest":
        pixels = [(x, 1.0)]
    else:
        x0 = m.floor(x)
        t = x - x0
        pixels = [(x0, 1 - t), (x0 + 1, t)] if mode == "linear" else \
            [(x0 + (k - 1), w) for k, w in enumerate(cubic_weights(t, GRID_CUBIC_A))]
    taps = []
    for at, w in pixels:
        if pad == "reflection":
            at = reflect(at, lo, hi, m)
        s = m.scope()
        i = s.let(m.to_int(at))
        inside = s.wrap(m.both(i >= 0, i <= size - 1)) if pad == "zeros" else None
        taps.append(Tap(s.wrap(m.where(i < 0, 0, m.where(i > size - 1, size - 1, i))), w, inside))
    return taps


def _grid_sample_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    """Sum over the corners of the tap window of the weight product times the pixel (0 outside)."""
    x, grid = ins
    spatial = x.shape[2:]
    g = grid.astype(np.float32)
    # grid[..., 0] is the innermost (x) axis: reverse to the tensor's axis order
    axes = [grid_taps(grid_coord(g[..., len(spatial) - 1 - d], size, a, NUMPY), size, a, NUMPY)
            for d, size in enumerate(spatial)]
    batch = np.arange(x.shape[0]).reshape((-1,) + (1,) * (g.ndim - 2))
    data = np.moveaxis(x, 1, -1).astype(np.float64)            # (N, spatial..., C)
    out = np.zeros(g.shape[:-1] + (x.shape[1],))
    for corner in itertools.product(*axes):
        w = np.ones(g.shape[:-1])
        inside = np.ones(g.shape[:-1], bool)
        for tap in corner:
            w = w * tap.weight
            if tap.inside is not None:
                inside &= tap.inside
        pix = data[(batch, *[tap.index for tap in corner])]
        out += np.where(inside, w, 0.0)[..., None] * np.where(inside[..., None], pix, 0.0)
    return [np.moveaxis(out, -1, 1).astype(x.dtype)]


grid_sample = define("nn.grid_sample", "ONNX GridSample: out[n, c, o...] samples x[n, c] at grid[n, o...] "
                     "(normalized, innermost axis first), nearest/linear/cubic, with zeros/border/reflection "
                     "padding.", _grid_sample_infer, _grid_sample_ref, 2,
                     mode=Attr("str", "linear"), padding_mode=Attr("str", "zeros"),
                     align_corners=Attr("bool", False))


# -- roi_align -----------------------------------------------------------------------------
def _roi_align_infer(ins: list[TensorType], a: dict[str, Any]) -> list[TensorType]:
    x, rois, idx = ins
    need_float(x, "roi_align")
    if x.rank != 4 or rois.rank != 2 or rois.shape[1] != 4 or idx.shape != (rois.shape[0],):
        raise TypeRuleError(f"roi_align needs x (N, C, H, W), rois (R, 4), batch indices (R,); got "
                            f"{x.shape}, {rois.shape}, {idx.shape}")
    if rois.dtype != x.dtype or idx.dtype not in (DType.I32, DType.I64):
        raise TypeRuleError("roi_align rois must have the input's type, batch indices int32/int64")
    if a["mode"] not in ("avg", "max") or min(a["output_height"], a["output_width"]) < 1 or a["sampling_ratio"] < 0:
        raise TypeRuleError(f"roi_align mode {a['mode']!r}, output {a['output_height']}x{a['output_width']}, "
                            f"sampling_ratio {a['sampling_ratio']}")
    return [TensorType((rois.shape[0], x.shape[1], a["output_height"], a["output_width"]), x.dtype)]


class RoiBox(NamedTuple):
    """One axis of a RoI in input pixels: its start and its bin size."""
    start: Any
    bin: Any


def roi_box(lo: Any, hi: Any, bins: int, a: dict[str, Any], m: Math) -> RoiBox:
    """The RoI's extent along an axis from its corner coordinates (float32, as onnx.reference):
    scaled, shifted half a pixel with half_pixel, at least one pixel without."""
    shift = 0.5 if a["half_pixel"] else 0.0
    start, end = lo * a["spatial_scale"] - shift, hi * a["spatial_scale"] - shift
    length = end - start
    if not a["half_pixel"]:
        length = m.where(length < 1.0, 1.0, length)
    return RoiBox(start, length / bins)


def roi_grid(box: RoiBox, a: dict[str, Any], m: Math) -> Any:
    """Samples per bin along the axis: sampling_ratio, or ceil(bin size) when it is 0."""
    return a["sampling_ratio"] if a["sampling_ratio"] > 0 else m.to_int(-m.floor(-box.bin))


def roi_sample_coord(box: RoiBox, b: Any, i: Any, grid: Any) -> Any:
    """Where sample i (of `grid`) of bin b lies along the axis (float32, as onnx.reference)."""
    return box.start + b * box.bin + (i + 0.5) * box.bin / grid


def roi_sample_taps(y: Any, size: int, m: Math) -> tuple[Tap, Tap]:
    """The two pixels a sample at y reads along an axis of `size` (bilinear, edge-clamped); both
    weights 0 when y lies more than a pixel outside (onnx.reference's pre_calc)."""
    inside = m.both(y >= -1.0, y <= float(size))
    y = m.where(y < 0, 0.0, y)
    low = m.to_int(y)
    edge = low >= size - 1
    low = m.where(edge, size - 1, low)
    high = m.where(edge, low, low + 1)
    frac = m.where(edge, 0.0, y - low)
    return (Tap(m.where(inside, low, 0), m.where(inside, 1.0 - frac, 0.0), None),
            Tap(m.where(inside, high, 0), m.where(inside, frac, 0.0), None))


def _roi_align_one(x: np.ndarray, roi: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    """RoiAlign of one RoI over x (C, H, W) -> (C, PH, PW), in float64 from float32 coordinates."""
    ph, pw = a["output_height"], a["output_width"]
    roi = roi.astype(np.float32)
    box_y = roi_box(roi[1], roi[3], ph, a, NUMPY)
    box_x = roi_box(roi[0], roi[2], pw, a, NUMPY)
    gy, gx = max(int(roi_grid(box_y, a, NUMPY)), 0), max(int(roi_grid(box_x, a, NUMPY)), 0)
    if gy * gx == 0:                           # an empty RoI (half_pixel, x2 < x1) has no samples
        return np.zeros((x.shape[0], ph, pw))
    by, iy = np.arange(ph)[:, None], np.arange(gy)[None, :]
    bx, ix = np.arange(pw)[:, None], np.arange(gx)[None, :]
    ty = roi_sample_taps(roi_sample_coord(box_y, by.astype(np.float32), iy.astype(np.float32), np.float32(gy)),
                         x.shape[1], NUMPY)
    tx = roi_sample_taps(roi_sample_coord(box_x, bx.astype(np.float32), ix.astype(np.float32), np.float32(gx)),
                         x.shape[2], NUMPY)
    data = x.astype(np.float64)
    terms = []                                 # (C, PH, GY, PW, GX) per corner: weight * pixel
    for ya, xa in itertools.product(ty, tx):
        w = (ya.weight[:, :, None, None] * xa.weight[None, None]).astype(np.float64)
        terms.append(w * data[:, ya.index[:, :, None, None], xa.index[None, None]])
    if a["mode"] == "avg":
        return sum(terms).sum(axis=(2, 4)) / (gy * gx)
    return np.max(np.maximum.reduce(terms), axis=(2, 4))


def _roi_align_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x, rois, idx = ins
    if np.any((idx < 0) | (idx >= x.shape[0])):
        raise InvalidInput(f"roi_align: a batch index is out of range [0, {x.shape[0]})")
    out = np.zeros((rois.shape[0], x.shape[1], a["output_height"], a["output_width"]))
    for r in range(rois.shape[0]):
        out[r] = _roi_align_one(x[idx[r]], rois[r], a)
    return [out.astype(x.dtype)]


roi_align = define("nn.roi_align", "ONNX RoiAlign: each RoI (x1, y1, x2, y2) of rois, on the image its batch "
                   "index names, pooled to output_height x output_width bins by the average or max of "
                   "bilinear samples (sampling_ratio per bin, or adaptive when 0).",
                   _roi_align_infer, _roi_align_ref, 3, mode=Attr("str", "avg"), output_height=Attr("int", 1),
                   output_width=Attr("int", 1), sampling_ratio=Attr("int", 0),
                   spatial_scale=Attr("float", 1.0), half_pixel=Attr("bool", True))
