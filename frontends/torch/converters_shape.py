"""ATen views, layout changes, indexing, concatenation, tensor factories and dtype casts."""
from __future__ import annotations

import operator

import numpy as np

from compiler.ops import elementwise as ew
from compiler.ops import shape
from frontends.torch.importer import TorchContext, converts, torch_to_numpy_dtype


@converts(str(operator.getitem))
def _getitem(ctx, node, args, kwargs):
    return args[0][args[1]]


@converts("aten.view", "aten._unsafe_view", "aten.reshape", "aten.unsqueeze", "aten.squeeze",
          "aten.flatten", "aten.view_copy", "aten.unflatten")
def _reshape(ctx: TorchContext, node, args, kwargs):
    return ctx.emit(shape.reshape, [args[0]], shape=ctx.out_shape())


@converts("aten.clone", "aten.alias", "aten.detach", "aten.lift_fresh_copy", "aten.contiguous")
def _passthrough(ctx, node, args, kwargs):
    return args[0]


@converts("aten._to_copy", "aten.to", "aten._to_dtype")
def _to_copy(ctx: TorchContext, node, args, kwargs):
    return ctx.cast(args[0], ctx.out_dtype())


@converts("aten.permute")
def _permute(ctx, node, args, kwargs):
    rank = len(ctx.shape(args[0]))
    return ctx.emit(shape.transpose, [args[0]], perm=tuple(d % rank for d in args[1]))


@converts("aten.t", "aten.transpose", "aten.numpy_T")
def _transpose(ctx, node, args, kwargs):
    rank = len(ctx.shape(args[0]))
    perm = list(range(rank))
    a, b = (args[1] % rank, args[2] % rank) if len(args) > 2 else (0, rank - 1)
    perm[a], perm[b] = perm[b], perm[a]
    return ctx.emit(shape.transpose, [args[0]], perm=tuple(perm))


@converts("aten.expand")
def _expand(ctx: TorchContext, node, args, kwargs):
    return ctx.emit(shape.expand, [args[0]], shape=ctx.out_shape())


@converts("aten.repeat")
def _repeat(ctx: TorchContext, node, args, kwargs):
    x, reps = args[0], tuple(args[1])
    rank = len(ctx.shape(x))
    if len(reps) > rank:
        x = ctx.emit(shape.reshape, [x], shape=(1,) * (len(reps) - rank) + ctx.shape(x))
    return ctx.emit(shape.tile, [x], repeats=reps)


@converts("aten.cat", "aten.concat")
def _cat(ctx: TorchContext, node, args, kwargs):
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    dt = ctx.out_dtype()
    parts = [ctx.cast(t, dt) for t in args[0] if 0 not in ctx.shape(t)]
    return ctx.emit(shape.concat, parts, axis=dim % len(ctx.out_shape()))


@converts("aten.split", "aten.split_with_sizes")
def _split(ctx: TorchContext, node, args, kwargs):
    x, sizes = args[0], args[1]
    dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
    n = ctx.shape(x)[dim]
    if isinstance(sizes, int):
        sizes = [min(sizes, n - s) for s in range(0, n, sizes)]
    outs, start = [], 0
    for s in sizes:
        outs.append(ctx.emit(shape.slice_, [x], starts=(start,), ends=(start + s,), axes=(dim,), steps=(1,)))
        start += s
    return tuple(outs)


@converts("aten.slice")
def _slice(ctx: TorchContext, node, args, kwargs):
    x = args[0]
    dim = args[1] if len(args) > 1 else 0
    start = args[2] if len(args) > 2 and args[2] is not None else 0
    end = args[3] if len(args) > 3 and args[3] is not None else 2 ** 62
    step = args[4] if len(args) > 4 else 1
    return ctx.emit(shape.slice_, [x], starts=(start,), ends=(end,), axes=(dim,), steps=(step,))


@converts("aten.select")
def _select(ctx: TorchContext, node, args, kwargs):
    """x.select(dim, i) -> gather(x, scalar i): what torch.onnx exports for x[:, i]."""
    return ctx.emit(shape.gather, [args[0], np.asarray(args[2], np.int64)], axis=args[1])


@converts("aten.embedding")
def _embedding(ctx, node, args, kwargs):
    return ctx.emit(shape.gather, [args[0], args[1]], axis=0)


@converts("aten.index_select")
def _index_select(ctx, node, args, kwargs):
    return ctx.emit(shape.gather, [args[0], args[2]], axis=args[1])


@converts("aten.constant_pad_nd")
def _pad(ctx: TorchContext, node, args, kwargs):
    x, pad = args[0], list(args[1])
    value = args[2] if len(args) > 2 else 0.0
    rank = len(ctx.shape(x))
    begins, ends = [0] * rank, [0] * rank
    for i in range(len(pad) // 2):                # torch lists (begin, end) from the last axis
        begins[rank - 1 - i], ends[rank - 1 - i] = pad[2 * i], pad[2 * i + 1]
    return ctx.emit(shape.pad, [x], pads=tuple(begins + ends), value=float(value))


def _factory(ctx: TorchContext, fill) -> np.ndarray:
    return np.full(ctx.out_shape(), fill, dtype=ctx.out_dtype())


@converts("aten.full", "aten.full_like", "aten.new_full")
def _full(ctx, node, args, kwargs):
    fill = args[1] if "new_full" not in str(node.target) else args[2]
    return _factory(ctx, fill)


@converts("aten.zeros", "aten.zeros_like", "aten.new_zeros", "aten.empty", "aten.empty_like",
          "aten.new_empty")
def _zeros(ctx, node, args, kwargs):
    return _factory(ctx, 0)


@converts("aten.ones", "aten.ones_like", "aten.new_ones")
def _ones(ctx, node, args, kwargs):
    return _factory(ctx, 1)


@converts("aten.scalar_tensor")
def _scalar_tensor(ctx, node, args, kwargs):
    return _factory(ctx, args[0])


@converts("aten.arange")
def _arange(ctx: TorchContext, node, args, kwargs):
    nums = [a for a in args if isinstance(a, (int, float))]
    if len(nums) != len(args):
        raise ctx.unsupported("arange bounds must be known at compile time")
    return np.arange(*nums).astype(ctx.out_dtype())


@converts("aten.upsample_nearest2d", "aten.upsample_bilinear2d")
def _upsample(ctx: TorchContext, node, args, kwargs):
    x = args[0]
    out = ctx.out_shape()
    in_shape = ctx.shape(x)
    scales = tuple(o / i for o, i in zip(out, in_shape))
    if "nearest" in str(node.target):
        return ctx.emit(shape.resize, [x], sizes=out, scales=scales, mode="nearest",
                        coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    align = args[2] if len(args) > 2 else kwargs.get("align_corners", False)
    return ctx.emit(shape.resize, [x], sizes=out, scales=scales, mode="linear",
                    coordinate_transformation_mode="align_corners" if align else "pytorch_half_pixel")


@converts("aten.sym_size")
def _sym_size(ctx, node, args, kwargs):
    return int(ctx.shape(args[0])[args[1]])


@converts("aten.type_as")
def _type_as(ctx: TorchContext, node, args, kwargs):
    return ctx.cast(args[0], torch_to_numpy_dtype(node.args[1].meta["val"].dtype))


@converts("aten.masked_fill")
def _masked_fill(ctx: TorchContext, node, args, kwargs):
    dt = ctx.out_dtype()
    return ctx.emit(ew.where, [args[1], ctx.as_operand(args[2], dt), args[0]])


@converts("aten._assert_tensor_metadata", "aten._assert_scalar", "aten.sym_constrain_range_for_size",
          "aten._assert_async")
def _no_op(ctx, node, args, kwargs):
    """Export-time checks: the shapes they guard are static here."""
    return None


@converts("aten.as_strided")
def _as_strided(ctx: TorchContext, node, args, kwargs):
    """A strided view of a contiguous tensor: a reshape when the strides are the contiguous ones
    (what flatten after a global pool exports to), else a gather of the flat positions."""
    x, size, stride = args[0], tuple(args[1]), tuple(args[2])
    offset = args[3] if len(args) > 3 and args[3] is not None else 0
    src = node.args[0].meta["val"]
    if not src.is_contiguous():
        raise ctx.unsupported("as_strided of a non-contiguous tensor")
    contiguous = tuple(int(np.prod(size[i + 1:])) for i in range(len(size)))
    if offset == 0 and int(np.prod(size)) == int(np.prod(ctx.shape(x))) and \
            all(s == c for s, c, d in zip(stride, contiguous, size) if d > 1):
        return ctx.emit(shape.reshape, [x], shape=size)
    flat = ctx.emit(shape.reshape, [x], shape=(int(np.prod(ctx.shape(x))),))
    idx = offset + sum(np.arange(d).reshape([-1 if i == k else 1 for i in range(len(size))]) * s
                       for k, (d, s) in enumerate(zip(size, stride)))
    return ctx.emit(shape.gather, [flat, np.asarray(idx, np.int64)], axis=0)
