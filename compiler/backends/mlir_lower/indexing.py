"""MLIR lowerings of the indexing ops: trilu (a triangle of the last two axes, from linalg.index)."""
from __future__ import annotations

from iree.compiler import ir
from iree.compiler.dialects import arith, linalg

from compiler.backends.mlir_lower.registry import PAR, LowerCtx, amap, elem_of, generic, lowers, scalar, shape_of
from compiler.ir import Node
from compiler.ops import indexing


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
