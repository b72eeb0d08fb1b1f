"""Converters for ONNX shape and data-movement ops. Shape-like inputs (Reshape shape, Slice
params, Expand shape, Tile repeats, ...) must be constants after on-the-fly folding; Shape,
Size, Range and ConstantOfShape always fold, because every shape is static."""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx

from compiler.ops import elementwise as ew
from compiler.ops import shape
from frontends.onnx.context import ConvertContext, Operand


def _reshape(ctx: ConvertContext, x: Operand, dims: tuple[int, ...]) -> Operand:
    return ctx.emit(shape.reshape, [x], shape=tuple(int(d) for d in dims))


def _convert_reshape(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    x = ctx.input(0)
    target = [int(d) for d in ctx.const_input(1, "Reshape shape")]
    in_shape = ctx.shape(x)
    if not ctx.attr("allowzero", 0):
        target = [in_shape[i] if d == 0 else d for i, d in enumerate(target)]
    if target.count(-1) > 1:
        raise ctx.invalid(f"shape {target} has more than one -1")
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        size = math.prod(in_shape)
        if known == 0 or size % known:
            raise ctx.invalid(f"cannot reshape {list(in_shape)} to {target}")
        target[target.index(-1)] = size // known
    return _reshape(ctx, x, tuple(target))


def _convert_flatten(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    x = ctx.input(0)
    dims = ctx.shape(x)
    axis = int(ctx.attr("axis", 1))
    axis = axis + len(dims) if axis < 0 else axis
    return _reshape(ctx, x, (math.prod(dims[:axis]), math.prod(dims[axis:])))


def _axes_arg(ctx: ConvertContext, since: int) -> list[int] | None:
    """`axes` from the attribute (opset < since) or input 1."""
    axes = ctx.const_input(1, "axes") if ctx.opset >= since else ctx.attr("axes")
    return None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]


def _convert_squeeze(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    x = ctx.input(0)
    dims = ctx.shape(x)
    axes = _axes_arg(ctx, 13)
    if axes is None or not axes:
        drop = {i for i, d in enumerate(dims) if d == 1}
    else:
        drop = {a % len(dims) for a in axes}
        if any(dims[a] != 1 for a in drop):
            raise ctx.invalid(f"cannot squeeze axes {sorted(drop)} of shape {list(dims)}")
    return _reshape(ctx, x, tuple(d for i, d in enumerate(dims) if i not in drop))


def _convert_unsqueeze(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    x = ctx.input(0)
    dims = list(ctx.shape(x))
    axes = _axes_arg(ctx, 13) or []
    out_rank = len(dims) + len(axes)
    for a in sorted(a % out_rank for a in axes):
        dims.insert(a, 1)
    return _reshape(ctx, x, tuple(dims))


def _convert_transpose(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    x = ctx.input(0)
    perm = ctx.attr("perm") or list(reversed(range(ctx.rank(x))))
    return ctx.emit(shape.transpose, [x], perm=tuple(int(p) for p in perm))


def _convert_concat(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    inputs = [ctx.input(i) for i in range(ctx.num_inputs()) if ctx.has_input(i)]
    axis = int(ctx.attr("axis")) % max(ctx.rank(inputs[0]), 1)
    return ctx.emit(shape.concat, inputs, axis=axis)


def _split_sizes(ctx: ConvertContext, dim: int) -> list[int]:
    n_out = len(ctx.node.output)
    split = ctx.const_input(1, "split") if ctx.opset >= 13 else ctx.attr("split")
    if split is not None and len(split):
        return [int(s) for s in np.asarray(split).reshape(-1)]
    if ctx.has_attr("num_outputs"):      # opset 18: the last chunk may be smaller
        n = int(ctx.attr("num_outputs"))
        chunk = -(-dim // n)
        return [min(chunk, dim - i * chunk) for i in range(n)]
    if dim % n_out:
        raise ctx.invalid(f"cannot split {dim} into {n_out} equal parts")
    return [dim // n_out] * n_out


def _convert_split(ctx: ConvertContext, node: onnx.NodeProto) -> list[Operand]:
    x = ctx.input(0)
    axis = int(ctx.attr("axis", 0)) % ctx.rank(x)
    sizes = _split_sizes(ctx, ctx.shape(x)[axis])
    outs, start = [], 0
    for size in sizes:
        outs.append(ctx.emit(shape.slice_, [x], starts=(start,), ends=(start + size,), axes=(axis,),
                             steps=(1,)))
        start += size
    return outs


def _slice_params(ctx: ConvertContext, rank: int) -> list[tuple[int, ...]]:
    if ctx.opset < 10:
        starts, ends = ctx.attr("starts"), ctx.attr("ends")
        axes, steps = ctx.attr("axes"), None
    else:
        starts, ends = ctx.const_input(1, "Slice starts"), ctx.const_input(2, "Slice ends")
        axes, steps = ctx.const_input(3, "Slice axes"), ctx.const_input(4, "Slice steps")
    starts = [int(s) for s in np.asarray(starts).reshape(-1)]
    ends = [int(e) for e in np.asarray(ends).reshape(-1)]
    axes = list(range(len(starts))) if axes is None else \
        [int(a) % rank for a in np.asarray(axes).reshape(-1)]
    steps = [1] * len(starts) if steps is None else [int(s) for s in np.asarray(steps).reshape(-1)]
    return [tuple(p) for p in zip(starts, ends, axes, steps)]


def _convert_slice(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """nn.slice has ONNX's (= Python's) clamping rules, so the parameters pass through."""
    x = ctx.input(0)
    params = _slice_params(ctx, len(ctx.shape(x)))
    if any(step == 0 for *_, step in params):
        raise ctx.invalid("slice step 0")
    if not params:
        return ctx.emit(ew.identity, [x])
    starts, ends, axes, steps = zip(*params)
    return ctx.emit(shape.slice_, [x], starts=starts, ends=ends, axes=axes, steps=steps)


def _convert_gather(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    x = ctx.input(0)
    return ctx.emit(shape.gather, [x, ctx.input(1)], axis=int(ctx.attr("axis", 0)) % ctx.rank(x))


def _convert_expand(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    x = ctx.input(0)
    target = [int(d) for d in ctx.const_input(1, "Expand shape")]
    try:
        out = np.broadcast_shapes(ctx.shape(x), tuple(target))
    except ValueError:
        raise ctx.invalid(f"cannot expand {list(ctx.shape(x))} to {target}") from None
    return ctx.emit(shape.expand, [x], shape=tuple(out))


def _convert_tile(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    repeats = ctx.const_input(1, "Tile repeats")
    return ctx.emit(shape.tile, [ctx.input(0)], repeats=tuple(int(r) for r in repeats))


def _convert_shape(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    dims = ctx.shape(ctx.input(0))
    start, end = int(ctx.attr("start", 0)), ctx.attr("end")
    sel = dims[start:] if end is None else dims[start:int(end)]
    return np.array(sel, dtype=np.int64)


def _convert_size(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    return np.array(math.prod(ctx.shape(ctx.input(0))), dtype=np.int64)


def _convert_constant(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    for name, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                        ("value_int", np.int64), ("value_ints", np.int64)):
        if ctx.has_attr(name):
            return np.array(ctx.attr(name), dtype=dtype)
    if ctx.has_attr("value"):
        return np.asarray(ctx.attr("value"))
    raise ctx.unsupported(f"attribute {[a.name for a in node.attribute]} is not supported")


def _convert_constant_of_shape(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    dims = tuple(int(d) for d in ctx.const_input(0, "ConstantOfShape shape"))
    value = ctx.attr("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    return np.full(dims, value[0], dtype=value.dtype)


def _convert_range(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    start, limit, delta = (ctx.const_input(i, f"Range {w}")
                           for i, w in enumerate(("start", "limit", "delta")))
    dtype = start.dtype
    if dtype.kind in "iu":
        s, lim, d = int(start), int(limit), int(delta)
        n = max(-(-(lim - s) // d), 0)
    else:
        s, lim, d = start.item(), limit.item(), delta.item()
        n = max(math.ceil((lim - s) / d), 0)
    return (np.asarray(start) + np.arange(n).astype(dtype) * np.asarray(delta)).astype(dtype)


CONVERTERS: dict[str, Callable] = {
    "Reshape": _convert_reshape, "Flatten": _convert_flatten, "Squeeze": _convert_squeeze,
    "Unsqueeze": _convert_unsqueeze, "Transpose": _convert_transpose, "Concat": _convert_concat,
    "Split": _convert_split, "Slice": _convert_slice, "Gather": _convert_gather,
    "Expand": _convert_expand, "Tile": _convert_tile, "Shape": _convert_shape,
    "Size": _convert_size, "Constant": _convert_constant,
    "ConstantOfShape": _convert_constant_of_shape, "Range": _convert_range,
}
