"""Converters for ONNX Pad (v2 attributes, v11+ inputs, v18 axes) and Resize (v10, v11, v13+,
v18 axes/keep_aspect_ratio_policy): every pad, size and scale is resolved to a static attribute."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from compiler.ops import shape
from frontends.onnx.context import ConvertContext, Operand

_PAD_MODES = ("constant", "reflect", "edge", "wrap")
_COORD_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                "tf_half_pixel_for_nearest")
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


def _resize_attrs(ctx: ConvertContext) -> tuple[str, str, str]:
    mode = ctx.attr("mode", "nearest")
    if mode not in ("nearest", "linear"):
        raise ctx.unsupported(f"mode {mode!r} (supported: nearest, linear)")
    if ctx.opset < 11:   # Resize-10 is Upsample with scales: asymmetric coordinates, floor
        return mode, "asymmetric", "floor"
    coord = ctx.attr("coordinate_transformation_mode", "half_pixel")
    nearest = ctx.attr("nearest_mode", "round_prefer_floor")
    if coord not in _COORD_MODES:
        raise ctx.unsupported(f"coordinate_transformation_mode {coord!r} "
                              f"(supported: {', '.join(_COORD_MODES)})")
    if mode == "nearest" and nearest not in _NEAREST_MODES:
        raise ctx.invalid(f"nearest_mode {nearest!r}")
    if ctx.attr("antialias", 0) and mode != "nearest":
        raise ctx.unsupported("antialias=1 is not supported")
    return mode, coord, nearest


def _nonempty(arr: np.ndarray | None) -> np.ndarray | None:
    return arr if arr is not None and arr.size else None


def _resize_geometry(ctx: ConvertContext,
                     in_shape: tuple[int, ...]) -> tuple[list[int], list[float]]:
    """Per-axis output sizes and the (float32-rounded, as onnxruntime) scales."""
    rank = len(in_shape)
    if ctx.opset < 11:
        scales_in, sizes_in, axes = _nonempty(ctx.const_input(1, "Resize scales")), None, None
    else:
        scales_in = _nonempty(ctx.const_input(2, "Resize scales"))
        sizes_in = _nonempty(ctx.const_input(3, "Resize sizes"))
        axes = [int(a) % rank for a in ctx.attr("axes")] if ctx.has_attr("axes") else None
    axes = axes if axes is not None else list(range(rank))
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
    mode, coord, nearest = _resize_attrs(ctx)
    sizes, scales = _resize_geometry(ctx, ctx.shape(x))
    return ctx.emit(shape.resize, [x], sizes=tuple(sizes), scales=tuple(scales), mode=mode,
                    coordinate_transformation_mode=coord, nearest_mode=nearest)


CONVERTERS: dict[str, Callable] = {"Pad": _convert_pad, "Resize": _convert_resize}
