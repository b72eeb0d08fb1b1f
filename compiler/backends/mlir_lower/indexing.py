"""MLIR lowerings of the indexing ops: trilu (a triangle of the last two axes, from linalg.index); gather_elements,
gather_nd and one_hot (one linalg.generic over the output, reading data-dependent positions with
tensor.extract)."""
from __future__ import annotations

from iree.compiler import ir
from iree.compiler.dialects import arith, linalg, tensor

from compiler.backends.mlir_lower.registry import (
    PAR,
    LowerCtx,
    amap,
    elem_of,
    generic,
    is_float_type,
    lowers,
    scalar,
    shape_of,
)
from compiler.ir import Node
from compiler.ops import indexing
from compiler.ops._util import norm_axis


@lowers(indexing.trilu)
def _trilu(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    x = args[0]
    shape, et = shape_of(x), elem_of(x)
    rank, k, upper = len(shape), node.attrs["k"], node.attrs["upper"]
    idx = ir.IndexType.get()

    def keep(a, _out):
        diff = arith.subi(linalg.IndexOp(rank - 1).result, linalg.IndexOp(rank - 2).result)          # j - i
        pred = arith.CmpIPredicate.sge if upper else arith.CmpIPredicate.sle
        inside = arith.cmpi(pred, diff, arith.ConstantOp(idx, k).result)
        return arith.select(inside, a, scalar(0, et))

    ident = amap(rank, range(rank))
    return generic([x], [ctx.empty(shape, et)], [ident, ident], [PAR] * rank, keep)


def _index(i: ir.Value, size: int) -> ir.Value:
    """An index element as an `index` into an axis of `size`: negative counts from the end, and what is still
    outside [0, size) is clamped into it (the reference refuses such an index; a kernel must not read out of
    bounds)."""
    idx = ir.IndexType.get()
    if is_float_type(i.type):
        i = arith.fptosi(ir.IntegerType.get_signless(64), i)
    i = arith.index_cast(idx, i)
    zero, n = arith.ConstantOp(idx, 0).result, arith.ConstantOp(idx, size).result
    i = arith.select(arith.cmpi(arith.CmpIPredicate.slt, i, zero), arith.addi(i, n), i)
    return arith.minsi(arith.maxsi(i, zero), arith.ConstantOp(idx, size - 1).result)


def _loops(rank: int) -> list[ir.Value]:
    return [linalg.IndexOp(d).result for d in range(rank)]


@lowers(indexing.gather_elements)
def _gather_elements(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    """out[i...] = x[i... with idx[i...] at `axis`]: one generic over idx, a tensor.extract of x per element."""
    x, ind = args
    xs, out = shape_of(x), shape_of(ind)
    rank = len(out)
    axis = norm_axis(node.attrs["axis"], rank)

    def body(i, _out):
        coords = _loops(rank)
        coords[axis] = _index(i, xs[axis])
        return tensor.ExtractOp(x, coords).result
    ident = amap(rank, range(rank))
    return generic([ind], [ctx.empty(out, elem_of(x))], [ident, ident], [PAR] * rank, body)


@lowers(indexing.gather_nd)
def _gather_nd(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    """out[b..., j..., r...] = x[b..., idx[b..., j..., :], r...]: the index tuple read with tensor.extract."""
    x, ind = args
    xs, ishape = shape_of(x), shape_of(ind)
    b, k = node.attrs["batch_dims"], ishape[-1]
    out = node.outputs[0].type.shape
    rank, lead = len(out), len(ishape) - 1
    idx = ir.IndexType.get()

    def body(_out):
        loops = _loops(rank)
        tup = [_index(tensor.ExtractOp(ind, loops[:lead] + [arith.ConstantOp(idx, j).result]).result, xs[b + j])
               for j in range(k)]
        return tensor.ExtractOp(x, loops[:b] + tup + loops[lead:]).result
    return generic([], [ctx.empty(out, elem_of(x))], [amap(rank, range(rank))], [PAR] * rank, body)


@lowers(indexing.one_hot)
def _one_hot(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    """values[1] where the position along the new axis equals the index (negative: from the end; outside
    [0, depth) after that: no position), values[0] elsewhere."""
    ind, values = args
    out = node.outputs[0].type.shape
    rank, depth = len(out), node.attrs["depth"]
    axis = norm_axis(node.attrs["axis"], rank)
    i64, idx = ir.IntegerType.get_signless(64), ir.IndexType.get()

    def body(i, _out):
        i = arith.fptosi(i64, i) if is_float_type(i.type) else i
        i = arith.index_cast(idx, i)
        zero, n = arith.ConstantOp(idx, 0).result, arith.ConstantOp(idx, depth).result
        i = arith.select(arith.cmpi(arith.CmpIPredicate.slt, i, zero), arith.addi(i, n), i)
        hot = arith.cmpi(arith.CmpIPredicate.eq, i, linalg.IndexOp(axis).result)
        off, on = (tensor.ExtractOp(values, [arith.ConstantOp(idx, j).result]).result for j in (0, 1))
        return arith.select(hot, on, off)
    ind_map = amap(rank, [d for d in range(rank) if d != axis])
    return generic([ind], [ctx.empty(out, elem_of(values))], [ind_map, amap(rank, range(rank))], [PAR] * rank,
                   body)
