"""ATen element-wise indexing: gather, advanced indexing (index.Tensor), scatter, one_hot."""
from __future__ import annotations

import math

import numpy as np

from compiler.ops import elementwise as ew
from compiler.ops import indexing, shape
from frontends.common import Operand
from frontends.torch.importer import TorchContext, converts


@converts("aten.gather")
def _gather(ctx: TorchContext, node, args, kwargs):
    x, dim, idx = args[:3]
    return ctx.emit(indexing.gather_elements, [x, idx], axis=dim % max(len(ctx.shape(x)), 1))


def _normalized(ctx: TorchContext, idx: Operand, size: int) -> Operand:
    """Index + size where negative (torch's rule), as int64."""
    if ctx.np_dtype(idx) == np.bool_:
        raise ctx.unsupported("boolean mask indexing (the result's shape depends on the data)")
    idx = ctx.cast(idx, np.dtype(np.int64))
    neg = ctx.emit(ew.less, [idx, np.asarray(0, np.int64)])
    return ctx.emit(ew.where, [neg, ctx.emit(ew.add, [idx, np.asarray(size, np.int64)]), idx])


@converts("aten.index.Tensor")
def _index(ctx: TorchContext, node, args, kwargs):
    """x[i0, i1, ...] with index tensors (None: the whole axis). The indexed axes become one
    flat axis and a single gather reads it at sum(i_k * stride_k); when the indexed axes are
    not adjacent, torch puts the broadcast index axes first, so they are moved there."""
    x, indices = args[0], list(args[1])
    dims = ctx.shape(x)
    indexed = [k for k, i in enumerate(indices) if i is not None]
    if not indexed:
        return x
    adjacent = indexed == list(range(indexed[0], indexed[-1] + 1))
    if not adjacent:
        rest = [k for k in range(len(dims)) if k not in indexed]
        x = ctx.emit(shape.transpose, [x], perm=tuple(indexed + rest))
        dims = ctx.shape(x)
        indices = [indices[k] for k in indexed]
        indexed = list(range(len(indexed)))
    first = indexed[0]
    sizes = [dims[k] for k in indexed]
    flat: Operand | None = None
    for k, size in zip(indexed, sizes):
        stride = math.prod(sizes[indexed.index(k) + 1:])
        term = _normalized(ctx, indices[k], size)
        if stride != 1:
            term = ctx.emit(ew.mul, [term, np.asarray(stride, np.int64)])
        flat = term if flat is None else ctx.emit(ew.add, [flat, term])
    merged = dims[:first] + (math.prod(sizes),) + dims[first + len(indexed):]
    x = ctx.emit(shape.reshape, [x], shape=merged)
    return ctx.emit(shape.gather, [x, flat], axis=first)


@converts("aten.scatter.src", "aten.scatter.value", "aten.scatter_add", "aten.scatter.reduce",
          "aten.scatter.value_reduce")
def _scatter(ctx: TorchContext, node, args, kwargs):
    x, dim, idx, src = args[:4]
    name = str(node.target)
    reduce = "add" if "scatter_add" in name else \
        {None: "none", "add": "add", "multiply": "mul"}.get(kwargs.get("reduce", args[4] if len(args) > 4 else None))
    if reduce is None:
        raise ctx.unsupported(f"scatter reduce={kwargs.get('reduce')!r}")
    dt = ctx.np_dtype(x)
    if isinstance(src, (int, float, bool)):             # scatter.value: a scalar source
        src = np.full(ctx.shape(idx), src, dt)
    idx_shape = ctx.shape(idx)
    if ctx.shape(src) != idx_shape:                     # torch reads only the leading block of src
        src = ctx.emit(shape.slice_, [src], starts=(0,) * len(idx_shape), ends=idx_shape,
                       axes=tuple(range(len(idx_shape))), steps=(1,) * len(idx_shape))
    return ctx.emit(indexing.scatter_elements, [x, idx, src], axis=dim % len(ctx.shape(x)),
                    reduction=reduce)
