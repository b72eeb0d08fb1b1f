"""Lowerings of gather_elements, gather_nd, scatter_elements, scatter_nd, one_hot, trilu.

Gathers and one_hot are TE computes that normalize negative indices and clamp the rest (the
reference refuses out-of-range indices; a compiled model must not read outside its buffers).
The scatters use Relax's in-order scatter ops after the same normalization.
"""
from __future__ import annotations

from tvm import relax, te, tirx

from compiler.backends.tvm_lower.registry import LowerCtx, const, dtype_of, lowers, shape_of
from compiler.ir import Node
from compiler.ops import indexing

R = relax.op


def _norm(v: tirx.PrimExpr, size: int, dt: str) -> tirx.PrimExpr:
    """v (of dtype dt) + size when negative, then clamped to [0, size)."""
    n = tirx.const(size, dt)
    v = tirx.Select(v < tirx.const(0, dt), v + n, v)
    return tirx.max(tirx.min(v, tirx.const(size - 1, dt)), tirx.const(0, dt))


@lowers(indexing.gather_elements)
def _gather_elements(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    axis = node.attrs["axis"] % len(shape_of(args[0]))

    def fn(x: te.Tensor, idx: te.Tensor) -> te.Tensor:
        size = int(x.shape[axis])

        def body(*i):
            at = _norm(idx[i], size, str(idx.dtype))
            return x[i[:axis] + (at,) + i[axis + 1:]]
        return te.compute(idx.shape, body, name="gather_elements")
    return [ctx.emit_te(fn, args[0], args[1], name="gather_elements")]


@lowers(indexing.gather_nd)
def _gather_nd(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    b = node.attrs["batch_dims"]
    out_shape = node.outputs[0].type.shape

    def fn(x: te.Tensor, idx: te.Tensor) -> te.Tensor:
        k = int(idx.shape[-1])
        lead = len(idx.shape) - 1

        def body(*i):
            head = i[:lead]
            coords = tuple(_norm(idx[head + (j,)], int(x.shape[b + j]), str(idx.dtype))
                           for j in range(k))
            return x[tuple(head[:b]) + coords + tuple(i[lead:])]
        return te.compute(out_shape, body, name="gather_nd")
    return [ctx.emit_te(fn, args[0], args[1], name="gather_nd")]


def _normalized_indices(ctx: LowerCtx, idx: relax.Expr, sizes: relax.Expr) -> relax.Expr:
    dt = dtype_of(idx)
    neg = R.less(idx, const(0, dt))
    return ctx.emit(R.where(neg, R.add(idx, sizes), idx))


_RELAX_REDUCTION = {"none": "update", "add": "add", "mul": "mul", "max": "max", "min": "min"}


@lowers(indexing.scatter_elements)
def _scatter_elements(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    x, idx, upd = args
    axis = node.attrs["axis"] % len(shape_of(x))
    idx = _normalized_indices(ctx, idx, const(shape_of(x)[axis], dtype_of(idx)))
    return [R.scatter_elements(x, idx, upd, axis, _RELAX_REDUCTION[node.attrs["reduction"]])]


@lowers(indexing.scatter_nd)
def _scatter_nd(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    x, idx, upd = args
    k = shape_of(idx)[-1]
    sizes = const(list(shape_of(x)[:k]), dtype_of(idx))
    idx = _normalized_indices(ctx, idx, sizes)
    return [R.scatter_nd(x, idx, upd, _RELAX_REDUCTION[node.attrs["reduction"]])]


@lowers(indexing.one_hot)
def _one_hot(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    depth = node.attrs["depth"]
    out_shape = node.outputs[0].type.shape
    axis = node.attrs["axis"] % len(out_shape)

    def fn(idx: te.Tensor, values: te.Tensor) -> te.Tensor:
        def body(*i):
            v = idx[i[:axis] + i[axis + 1:]]
            if not str(v.dtype).startswith("int"):
                v = tirx.Cast("int64", tirx.trunc(v))
            v = tirx.Cast("int64", v)
            v = tirx.Select(v < tirx.const(0, "int64"), v + tirx.const(depth, "int64"), v)
            hit = v == tirx.Cast("int64", i[axis])
            return tirx.Select(hit, values[1], values[0])
        return te.compute(out_shape, body, name="one_hot")
    return [ctx.emit_te(fn, args[0], args[1], name="one_hot")]


@lowers(indexing.trilu)
def _trilu(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    k = node.attrs["k"]
    return [R.triu(args[0], k) if node.attrs["upper"] else R.tril(args[0], k)]
