"""ONNX data-layout ops composed of IR shape ops: SpaceToDepth and DepthToSpace (DCR and CRD
modes) as reshape / transpose / reshape, CenterCropPad as one pad whose negative pads crop, and
EyeLike, whose output only depends on the (static) input shape and so is a constant."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from compiler.ops import shape as shape_ops
from frontends.onnx.context import ConvertContext, Operand, to_ir_dtype

_BLOCK_MODES = ("DCR", "CRD")


def _blocks(ctx: ConvertContext, x: Operand) -> tuple[tuple[int, int, int, int], int, str]:
    """((N, C, H, W), blocksize, mode) of a SpaceToDepth / DepthToSpace node."""
    dims = ctx.shape(x)
    if len(dims) != 4:
        raise ctx.invalid(f"the input must be 4-D (N, C, H, W), got shape {list(dims)}")
    block = int(ctx.attr("blocksize", 0))
    if block < 1:
        raise ctx.invalid(f"blocksize must be positive, got {block}")
    mode = ctx.attr("mode", "DCR")
    if mode not in _BLOCK_MODES:
        raise ctx.invalid(f"mode {mode!r} (expected DCR or CRD)")
    return dims, block, mode


def _rearrange(ctx: ConvertContext, x: Operand, split: tuple[int, ...], perm: tuple[int, ...],
               out: tuple[int, ...]) -> Operand:
    """reshape(transpose(reshape(x, split), perm), out)."""
    y = ctx.emit(shape_ops.reshape, [x], shape=split)
    y = ctx.emit(shape_ops.transpose, [y], perm=perm)
    return ctx.emit(shape_ops.reshape, [y], shape=out)


def _convert_space_to_depth(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """(N, C, H, W) -> (N, C * b * b, H / b, W / b); DCR puts the block offsets before the
    channel (depth, column, row order of the output channels), CRD after it."""
    x = ctx.input(0)
    (n, c, h, w), b, mode = _blocks(ctx, x)
    if h % b or w % b:
        raise ctx.invalid(f"H x W = {h} x {w} is not divisible by blocksize {b}")
    perm = (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4)
    return _rearrange(ctx, x, (n, c, h // b, b, w // b, b), perm, (n, c * b * b, h // b, w // b))


def _convert_depth_to_space(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """(N, C, H, W) -> (N, C / (b * b), H * b, W * b), the inverse of SpaceToDepth in each mode."""
    x = ctx.input(0)
    (n, c, h, w), b, mode = _blocks(ctx, x)
    if c % (b * b):
        raise ctx.invalid(f"{c} channels are not divisible by blocksize^2 = {b * b}")
    depth = c // (b * b)
    if mode == "DCR":
        split, perm = (n, b, b, depth, h, w), (0, 3, 4, 1, 5, 2)
    else:
        split, perm = (n, depth, b, b, h, w), (0, 1, 4, 2, 5, 3)
    return _rearrange(ctx, x, split, perm, (n, depth, h * b, w * b))


def _center_pads(size: int, want: int) -> tuple[int, int]:
    """(begin, end) pads taking an axis of `size` to `want`, centred: negative pads crop; an odd
    difference puts the extra element at the end."""
    diff = want - size
    sign, mag = (1, diff) if diff >= 0 else (-1, -diff)
    return sign * (mag // 2), sign * (mag - mag // 2)


def _convert_center_crop_pad(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """Crop or zero-pad the `axes` (default: all) to `shape`, centred, as one pad."""
    x = ctx.input(0)
    dims = ctx.shape(x)
    rank = len(dims)
    want = [int(s) for s in ctx.const_input(1, "CenterCropPad shape").reshape(-1)]
    axes = [int(a) for a in ctx.attr("axes", range(rank))]
    if any(not -rank <= a < rank for a in axes) or len({a % rank for a in axes}) != len(axes):
        raise ctx.invalid(f"axes {axes} are not distinct axes of a rank-{rank} input")
    if len(want) != len(axes):
        raise ctx.invalid(f"shape has {len(want)} sizes for {len(axes)} axes")
    if min(want, default=0) < 0:
        raise ctx.invalid(f"shape {want} has a negative size")
    pads = [0] * (2 * rank)
    for a, size in zip(axes, want):
        a %= rank
        pads[a], pads[a + rank] = _center_pads(dims[a], size)
    return ctx.emit(shape_ops.pad, [x], pads=tuple(pads), mode="constant", value=0.0)


def _convert_eye_like(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """Ones on the k-th diagonal of a 2-D tensor shaped like the input, in `dtype` (default: the
    input's type); a constant, since the shape is static."""
    x = ctx.input(0)
    dims = ctx.shape(x)
    if len(dims) != 2:
        raise ctx.invalid(f"the input must be 2-D, got shape {list(dims)}")
    elem = int(ctx.attr("dtype", 0))
    dtype = ctx.np_dtype(x) if elem == 0 else to_ir_dtype(elem, "EyeLike dtype", ctx.loc).numpy
    return ctx.const(np.eye(dims[0], dims[1], k=int(ctx.attr("k", 0)), dtype=dtype))


CONVERTERS: dict[str, Callable] = {
    "SpaceToDepth": _convert_space_to_depth, "DepthToSpace": _convert_depth_to_space,
    "CenterCropPad": _convert_center_crop_pad, "EyeLike": _convert_eye_like,
}
