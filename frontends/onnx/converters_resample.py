"""Converters for ONNX Pad (v2 attributes, v11+ inputs, v18 axes) and Resize (v10, v11, v13+,
v18 axes/keep_aspect_ratio_policy/antialias, v19 half_pixel_symmetric): every pad, size, scale
and tf_crop_and_resize roi is resolved to a static attribute. GridSample (v16 4-D, v20 N-D) and
RoiAlign (v10, v16 coordinate_transformation_mode) are IR ops; AffineGrid is a constant base grid
times the transposed affine matrices."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from compiler.ops import linalg, sampling, shape
from compiler.ops.shape import RESIZE_MODES
from frontends.onnx.context import ConvertContext, Operand

_PAD_MODES = ("constant", "reflect", "edge", "wrap")
_COORD_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                "tf_half_pixel_for_nearest", "half_pixel_symmetric", "tf_crop_and_resize")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _axes_input(ctx: ConvertContext, i: int, rank: int) -> list[int] | None:
    axes = ctx.const_input(i, "axes") if ctx.opset >= 18 else None
    return None if axes is None else [int(a) % rank for a in axes.reshape(-1)]


def _convert_pad(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    x = ctx.input(0)
    rank = ctx.rank(x)
    mode = ctx.attr("mode", "constant")
    if mode not in _PAD_MODES:
        raise ctx.unsupported(f"mode {mode!r} (supported: {', '.join(_PAD_MODES)})")
    if ctx.opset < 11:
        pads = [int(p) for p in ctx.attr("pads")]
        value = float(ctx.attr("value", 0.0))
    else:
        pads = [int(p) for p in ctx.const_input(1, "Pad pads").reshape(-1)]
        cval = ctx.const_input(2, "Pad constant_value")
        value = 0.0 if cval is None or cval.size == 0 else float(cval.reshape(-1)[0])
        axes = _axes_input(ctx, 3, rank)
        if axes is not None:
            full = [0] * (2 * rank)
            for j, a in enumerate(axes):
                full[a], full[a + rank] = pads[j], pads[j + len(axes)]
            pads = full
    if len(pads) != 2 * rank:
        raise ctx.invalid(f"{len(pads)} pads for a rank-{rank} input")
    return ctx.emit(shape.pad, [x], pads=tuple(pads), mode=mode, value=value)


def _resize_attrs(ctx: ConvertContext, rank: int) -> dict[str, Any]:
    """The nn.resize attributes besides sizes and scales."""
    mode = ctx.attr("mode", "nearest")
    if ctx.opset < 11:   # Resize-10 is Upsample with scales: asymmetric coordinates, floor
        if mode not in ("nearest", "linear"):
            raise ctx.invalid(f"mode {mode!r} (Resize-10 has nearest and linear)")
        return dict(mode=mode, coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    if mode not in RESIZE_MODES:
        raise ctx.invalid(f"mode {mode!r}")
    coord = ctx.attr("coordinate_transformation_mode", "half_pixel")
    nearest = ctx.attr("nearest_mode", "round_prefer_floor")
    if coord not in _COORD_MODES:
        raise ctx.invalid(f"coordinate_transformation_mode {coord!r}")
    if mode == "nearest" and nearest not in _NEAREST_MODES:
        raise ctx.invalid(f"nearest_mode {nearest!r}")
    attrs = dict(mode=mode, coordinate_transformation_mode=coord, nearest_mode=nearest,
                 cubic_coeff_a=float(ctx.attr("cubic_coeff_a", -0.75)),
                 exclude_outside=bool(ctx.attr("exclude_outside", 0)),
                 antialias=bool(ctx.attr("antialias", 0)) and mode != "nearest",   # nearest ignores it
                 extrapolation_value=float(ctx.attr("extrapolation_value", 0.0)))
    if coord == "tf_crop_and_resize":
        attrs["roi"] = _resize_roi(ctx, rank)
    return attrs


def _resize_axes(ctx: ConvertContext, rank: int) -> list[int]:
    """The axes Resize-18's `axes` names (every axis without it), non-negative."""
    if ctx.opset >= 18 and ctx.has_attr("axes"):
        return [int(a) % rank for a in ctx.attr("axes")]
    return list(range(rank))


def _resize_roi(ctx: ConvertContext, rank: int) -> tuple[float, ...]:
    """tf_crop_and_resize's crop as every axis' start then every axis' end (an axis Resize-18's
    `axes` leaves out keeps the whole of it)."""
    roi = _nonempty(ctx.const_input(1, "Resize roi"))
    if roi is None:
        raise ctx.invalid("coordinate_transformation_mode 'tf_crop_and_resize' needs the roi input")
    axes = _resize_axes(ctx, rank)
    roi = [float(v) for v in roi.astype(np.float32).reshape(-1)]
    if len(roi) != 2 * len(axes):
        raise ctx.invalid(f"roi has {len(roi)} values for {len(axes)} axes")
    full = [0.0] * rank + [1.0] * rank
    for j, a in enumerate(axes):
        full[a], full[a + rank] = roi[j], roi[j + len(axes)]
    return tuple(full)


def _nonempty(arr: np.ndarray | None) -> np.ndarray | None:
    return arr if arr is not None and arr.size else None


def _resize_geometry(ctx: ConvertContext,
                     in_shape: tuple[int, ...]) -> tuple[list[int], list[float]]:
    """Per-axis output sizes and the (float32-rounded, as onnxruntime) scales."""
    rank = len(in_shape)
    if ctx.opset < 11:
        scales_in, sizes_in = _nonempty(ctx.const_input(1, "Resize scales")), None
    else:
        scales_in = _nonempty(ctx.const_input(2, "Resize scales"))
        sizes_in = _nonempty(ctx.const_input(3, "Resize sizes"))
    axes = _resize_axes(ctx, rank)
    in_f32 = np.array(in_shape, np.float32)
    sizes, scales = list(in_shape), [1.0] * rank
    if sizes_in is not None:
        want = {a: int(s) for a, s in zip(axes, sizes_in.reshape(-1))}
        policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            ratios = [np.float32(want[a]) / in_f32[a] for a in axes]
            common = min(ratios) if policy == "not_larger" else max(ratios)
            want = {a: int(np.floor(common * in_f32[a] + np.float32(0.5))) for a in axes}
            for a in axes:
                sizes[a], scales[a] = want[a], float(common)
        else:
            for a in axes:
                sizes[a] = want[a]
                scales[a] = float(np.float32(want[a]) / in_f32[a])
    elif scales_in is not None:
        for a, s in zip(axes, scales_in.astype(np.float32).reshape(-1)):
            scales[a] = float(s)
            sizes[a] = int(np.floor(s * in_f32[a]))
    else:
        raise ctx.invalid("Resize needs scales or sizes")
    return sizes, scales


def _convert_resize(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    x = ctx.input(0)
    attrs = _resize_attrs(ctx, ctx.rank(x))
    sizes, scales = _resize_geometry(ctx, ctx.shape(x))
    return ctx.emit(shape.resize, [x], sizes=tuple(sizes), scales=tuple(scales), **attrs)


_GRID_MODES = {"bilinear": "linear", "bicubic": "cubic", "nearest": "nearest",   # GridSample-16's names
               "linear": "linear", "cubic": "cubic"}


def _convert_grid_sample(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    x, grid = ctx.input(0), ctx.input(1)
    mode = ctx.attr("mode", "bilinear" if ctx.opset < 20 else "linear")
    pad = ctx.attr("padding_mode", "zeros")
    if mode not in _GRID_MODES or pad not in sampling.PADDING_MODES:
        raise ctx.invalid(f"mode {mode!r} / padding_mode {pad!r}")
    return ctx.emit(sampling.grid_sample, [x, grid], mode=_GRID_MODES[mode], padding_mode=pad,
                    align_corners=bool(ctx.attr("align_corners", 0)))


def _affine_base_grid(spatial: tuple[int, ...], align_corners: bool) -> np.ndarray:
    """(prod(spatial), rank + 1): each output point's normalized coordinates, innermost axis first,
    then 1 (onnx.reference's construct_original_grid, in float64)."""
    def axis(n: int) -> np.ndarray:
        if align_corners:
            return -1 + np.arange(n) * (2.0 / (n - 1)) if n > 1 else np.full(1, -1.0)
        return -1 + 1.0 / n + np.arange(n) * (2.0 / n)
    coords = np.meshgrid(*[axis(n) for n in spatial], indexing="ij")
    return np.stack([c.reshape(-1) for c in reversed(coords)] + [np.ones(int(np.prod(spatial)))], axis=1)


def _convert_affine_grid(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """grid[n] = base @ theta[n]^T: a constant base grid times the transposed affine matrices."""
    theta = ctx.input(0)
    size = [int(s) for s in ctx.const_input(1, "AffineGrid size").reshape(-1)]
    n, rows, cols = ctx.shape(theta)
    spatial = tuple(size[2:])
    if len(spatial) not in (2, 3) or rows != len(spatial) or cols != rows + 1 or size[0] != n:
        raise ctx.invalid(f"theta {ctx.shape(theta)} does not fit size {size}")
    base = ctx.const(_affine_base_grid(spatial, bool(ctx.attr("align_corners", 0))), like=theta)
    t = ctx.emit(shape.transpose, [theta], perm=(0, 2, 1))
    grid = ctx.emit(linalg.matmul, [base, t])
    return ctx.emit(shape.reshape, [grid], shape=(n, *spatial, rows))


def _convert_roi_align(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """RoiAlign-10 has no coordinate_transformation_mode: its RoIs are output_half_pixel."""
    coord = ctx.attr("coordinate_transformation_mode", "output_half_pixel" if ctx.opset < 16 else "half_pixel")
    if coord not in ("half_pixel", "output_half_pixel"):
        raise ctx.invalid(f"coordinate_transformation_mode {coord!r}")
    return ctx.emit(sampling.roi_align, [ctx.input(0), ctx.input(1), ctx.input(2)],
                    mode=ctx.attr("mode", "avg"), output_height=int(ctx.attr("output_height", 1)),
                    output_width=int(ctx.attr("output_width", 1)),
                    sampling_ratio=int(ctx.attr("sampling_ratio", 0)),
                    spatial_scale=float(ctx.attr("spatial_scale", 1.0)), half_pixel=coord == "half_pixel")


CONVERTERS: dict[str, Callable] = {"Pad": _convert_pad, "Resize": _convert_resize,
                                   "GridSample": _convert_grid_sample, "AffineGrid": _convert_affine_grid,
                                   "RoiAlign": _convert_roi_align}
