"""MLIR lowerings of the indexing ops: trilu (a triangle of the last two axes, from linalg.index); gather_elements,
gather_nd and one_hot (one linalg.generic over the output, reading data-dependent positions with
tensor.extract); scatter_elements and scatter_nd (one linalg.generic over the output that scans, in order, the
updates that may reach each element)."""
from __future__ import annotations

from collections.abc import Callable

from iree.compiler import ir
from iree.compiler.dialects import arith, linalg, tensor

from compiler.backends.mlir_lower.registry import (
    PAR,
    RED,
    LowerCtx,
    amap,
    elem_of,
    generic,
    is_float_type,
    is_unsigned,
    lowers,
    scalar,
    shape_of,
)
from compiler.ir import Node
from compiler.ops import indexing
from compiler.ops._util import norm_axis
from compiler.types import DType


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


# -- scatter_elements / scatter_nd ------------------------------------------------------------------------------
# Each output element starts from x and folds in, one by one in the order the reference applies them (numpy's
# ufunc.at: row-major over the index positions), the updates whose target it is: a reduction dimension over the
# update positions that may reach it, the combining masked by "is the target this element". Quadratic (output x
# updates along the scanned dims) but exact: duplicates resolve as the reference does them (none: the last wins;
# float add/mul: in that order), and nothing is written through an index, so an index still out of range after
# the negative ones are counted from the end reaches no element (the reference refuses it).
def _combine(how: str, dt: DType) -> Callable[[ir.Value, ir.Value], ir.Value]:
    """acc combined with one update v as numpy's `how` (none/add/mul/max/min) ufunc computes it for `dt`."""
    if how == "none":
        return lambda acc, v: v
    f, u = dt.is_float, is_unsigned(dt)
    if dt is DType.BOOL:          # numpy: bool add / max is or, mul / min is and
        return arith.ori if how in ("add", "max") else arith.andi
    if how == "add":
        return arith.addf if f else arith.addi
    if how == "mul":
        return arith.mulf if f else arith.muli
    if not f:
        return {("max", False): arith.maxsi, ("max", True): arith.maxui,
                ("min", False): arith.minsi, ("min", True): arith.minui}[(how, u)]
    # numpy's float maximum(acc, v) on x86: acc when acc is NaN or strictly greater, else v (a NaN v, and v of an
    # equal value: +0 / -0 keep v's sign); float16's loop keeps acc on equal values. arith.maximumf orders
    # -0 < +0 instead, so the select is spelled out.
    P = arith.CmpFPredicate
    pred = {("max", False): P.OGT, ("max", True): P.OGE, ("min", False): P.OLT, ("min", True): P.OLE}[
        (how, dt is DType.F16)]

    def pick(acc: ir.Value, v: ir.Value) -> ir.Value:
        keep = arith.ori(arith.cmpf(P.UNO, acc, acc), arith.cmpf(pred, acc, v))
        return arith.select(keep, acc, v)
    return pick


def _target(i: ir.Value, size: int) -> ir.Value:
    """A scatter index as an `index`, negative ones counted from the end (never clamped: see above)."""
    i = arith.index_cast(ir.IndexType.get(), i)
    zero, n = arith.ConstantOp(ir.IndexType.get(), 0).result, arith.ConstantOp(ir.IndexType.get(), size).result
    return arith.select(arith.cmpi(arith.CmpIPredicate.slt, i, zero), arith.addi(i, n), i)


def _pad(ctx: LowerCtx, v: ir.Value, shape: list[int], fill: ir.Value) -> ir.Value:
    """v extended to `shape` (no smaller in any dimension) with `fill` past its end."""
    vs, rank = shape_of(v), len(shape)
    idx = ir.IndexType.get()
    grow = [d for d in range(rank) if vs[d] < shape[d]]

    def body(_out):
        loops = _loops(rank)
        coords = [arith.minsi(loops[d], arith.ConstantOp(idx, vs[d] - 1).result) if d in grow else loops[d]
                  for d in range(rank)]
        inside = scalar(True, ir.IntegerType.get_signless(1))
        for d in grow:
            inside = arith.andi(inside, arith.cmpi(arith.CmpIPredicate.ult, loops[d],
                                                   arith.ConstantOp(idx, vs[d]).result))
        return arith.select(inside, tensor.ExtractOp(v, coords).result, fill)
    return generic([], [ctx.empty(shape, elem_of(v))], [amap(rank, range(rank))], [PAR] * rank, body)[0]


@lowers(indexing.scatter_elements)
def _scatter_elements(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    """Output o reads the updates u = o with r at `axis`, r = 0, 1, ... (the only ones that can reach o), and
    combines upd[u] where idx[u] (normalized) is o's coordinate on the axis. Where idx is shorter than x off the
    axis, idx is first padded to x's extent with an index that reaches nothing (the axis size)."""
    x, ind, upd = args
    xs, ishape = shape_of(x), shape_of(ind)
    rank = len(xs)
    if 0 in xs or 0 in ishape:
        return [x]
    axis = norm_axis(node.attrs["axis"], rank)
    combine = _combine(node.attrs["reduction"], node.inputs[0].type.dtype)
    box = [ishape[d] if d == axis else xs[d] for d in range(rank)]
    if box != list(ishape):         # (an extract_slice / insert_slice of x around the generic fails in IREE 3.13)
        ind = _pad(ctx, ind, box, scalar(xs[axis], elem_of(ind)))
        upd = _pad(ctx, upd, box, scalar(0, elem_of(upd)))

    def body(i, v, acc):
        hit = arith.cmpi(arith.CmpIPredicate.eq, _target(i, xs[axis]), linalg.IndexOp(axis).result)
        return arith.select(hit, combine(acc, v), acc)
    umap = amap(rank + 1, [rank if d == axis else d for d in range(rank)])
    return generic([ind, upd], [x], [umap, umap, amap(rank + 1, range(rank))], [PAR] * rank + [RED], body)


@lowers(indexing.scatter_nd)
def _scatter_nd(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    """Output o = (o[:k], tail) reads upd[j..., tail] for every index position j (reduction dimensions, row-major)
    and combines it where the tuple idx[j..., :] (normalized) is o[:k]."""
    x, ind, upd = args
    xs, ishape = shape_of(x), shape_of(ind)
    rank, k, lead = len(xs), ishape[-1], len(ishape) - 1
    if 0 in xs or 0 in ishape[:-1]:
        return [x]
    combine = _combine(node.attrs["reduction"], node.inputs[0].type.dtype)
    idx = ir.IndexType.get()
    dims = rank + lead

    def body(v, acc):
        loops = _loops(dims)
        hit = scalar(True, ir.IntegerType.get_signless(1))
        for c in range(k):
            t = _target(tensor.ExtractOp(ind, loops[rank:] + [arith.ConstantOp(idx, c).result]).result, xs[c])
            hit = arith.andi(hit, arith.cmpi(arith.CmpIPredicate.eq, t, loops[c]))
        return arith.select(hit, combine(acc, v), acc)
    upd_map = amap(dims, list(range(rank, dims)) + list(range(k, rank)))
    return generic([upd], [x], [upd_map, amap(dims, range(rank))], [PAR] * rank + [RED] * lead, body)
