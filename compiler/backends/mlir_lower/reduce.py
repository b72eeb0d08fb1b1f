"""Reductions (linalg.generic with reduction iterators), argmax (a two-result reduction), the running sums and
products (cumsum, cumprod) and topk (a rank per element, then the element of each rank)."""
from __future__ import annotations

import numpy as np
from iree.compiler import ir
from iree.compiler.dialects import arith, linalg, math

from compiler.backends.mlir_lower.registry import (
    PAR,
    RED,
    LowerCtx,
    amap,
    elem_of,
    generic,
    is_unsigned,
    lowers,
    scalar,
    shape_of,
)
from compiler.diagnostics import Unsupported
from compiler.ir import Node
from compiler.ops import reduce as rd
from compiler.ops._util import norm_axis
from compiler.types import DType


def _low(dt: DType) -> float | int:
    return -np.inf if dt.is_float else 0 if dt is DType.BOOL else int(np.iinfo(dt.numpy).min)


def _high(dt: DType) -> float | int:
    return np.inf if dt.is_float else 1 if dt is DType.BOOL else int(np.iinfo(dt.numpy).max)


def reduce_kind(ctx: LowerCtx, x: ir.Value, dt: DType, kind: str, axes, keepdims: bool) -> ir.Value:
    """sum / max / min / prod / mean / l2 of x along axes in x's element type."""
    f, u = dt.is_float, is_unsigned(dt)
    if kind in ("sum", "mean", "l2"):
        pre = (lambda a: arith.mulf(a, a) if f else arith.muli(a, a)) if kind == "l2" else None
        y = ctx.reduce(x, axes, 0, lambda a, b: arith.addf(a, b) if f else arith.addi(a, b), keepdims, pre=pre)
        if kind == "l2":
            y = ctx.ewise([y], shape_of(y), elem_of(y), math.sqrt)
        if kind == "mean":
            shape = shape_of(x)
            n = int(np.prod([shape[a] for a in axes], dtype=np.int64))
            y = ctx.ewise([y], shape_of(y), elem_of(y), lambda s: arith.divf(s, scalar(float(n), s.type)))
        return y
    if kind == "prod":
        return ctx.reduce(x, axes, 1, lambda a, b: arith.mulf(a, b) if f else arith.muli(a, b), keepdims)
    if kind == "max":
        comb = arith.maximumf if f else (arith.maxui if u else arith.maxsi)
        return ctx.reduce(x, axes, _low(dt), comb, keepdims)
    comb = arith.minimumf if f else (arith.minui if u else arith.minsi)
    return ctx.reduce(x, axes, _high(dt), comb, keepdims)


_KIND = {rd.reduce_sum: "sum", rd.reduce_mean: "mean", rd.reduce_max: "max", rd.reduce_min: "min",
         rd.reduce_prod: "prod", rd.reduce_l2: "l2"}


@lowers(*_KIND)
def _reduce(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    t = node.inputs[0].type
    axes = [norm_axis(a, t.rank) for a in node.attrs["axes"]]
    if node.op is rd.reduce_mean and not t.dtype.is_float:
        # numpy: float64 sum / n, then truncation back to the integer type
        i64, f64 = ir.IntegerType.get_signless(64), ir.F64Type.get()
        u = is_unsigned(t.dtype)
        x = ctx.ewise(args, t.shape, i64, lambda a: arith.extui(i64, a) if u else arith.extsi(i64, a))
        s = ctx.reduce(x, axes, 0, arith.addi, node.attrs["keepdims"])
        n = float(np.prod([t.shape[a] for a in axes], dtype=np.int64))
        out_et = elem_of(args[0])
        return [ctx.ewise([s], shape_of(s), out_et, lambda v: arith.trunci(out_et, arith.fptosi(
            i64, arith.divf(arith.sitofp(f64, v), scalar(n, f64)))) if ir.IntegerType(out_et).width < 64
            else arith.fptosi(i64, arith.divf(arith.sitofp(f64, v), scalar(n, f64))))]
    return [reduce_kind(ctx, args[0], t.dtype, _KIND[node.op], axes, node.attrs["keepdims"])]


@lowers(rd.argmax)
def _argmax(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    x, t = args[0], node.inputs[0].type
    axis, last = norm_axis(node.attrs["axis"], t.rank), node.attrs["select_last_index"]
    rank = t.rank
    keep = [i for i in range(rank) if i != axis]
    oshape = [t.shape[i] for i in keep]
    i64 = ir.IntegerType.get_signless(64)
    et = elem_of(x)
    init_v = ctx.full(oshape, et, _low(t.dtype))
    init_i = ctx.full(oshape, i64, 0)
    f, u = t.dtype.is_float, is_unsigned(t.dtype)

    def body(v, best, idx):
        i = arith.index_cast(i64, linalg.IndexOp(axis).result)
        if f:      # NaN wins (numpy: the first NaN); then strictly greater (or >= for the last index)
            gt = arith.cmpf(arith.CmpFPredicate.OGE if last else arith.CmpFPredicate.OGT, v, best)
            v_nan = arith.cmpf(arith.CmpFPredicate.UNO, v, v)
            b_nan = arith.cmpf(arith.CmpFPredicate.UNO, best, best)
            nan_first = arith.andi(v_nan, arith.xori(b_nan, scalar(1, b_nan.type)))
            take = arith.ori(arith.andi(gt, arith.xori(b_nan, scalar(1, b_nan.type))), nan_first)
        else:
            P = arith.CmpIPredicate
            pred = (P.uge if u else P.sge) if last else (P.ugt if u else P.sgt)
            take = arith.cmpi(pred, v, best)
        # first element always taken (so all -inf / all INT_MIN picks index 0, or the last)
        first = arith.cmpi(arith.CmpIPredicate.eq, i, scalar(0, i64))
        take = arith.ori(take, first)
        return arith.select(take, v, best), arith.select(take, i, idx)

    maps = [amap(rank, range(rank)), amap(rank, keep), amap(rank, keep)]
    iters = [RED if i == axis else PAR for i in range(rank)]
    _, idx = generic([x], [init_v, init_i], maps, iters, body)
    if node.attrs["keepdims"]:
        idx = ctx.reshape(idx, node.outputs[0].type.shape)
    return [idx]


@lowers(rd.cumsum, rd.cumprod)
def _cumulative(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    """out[..., i, ...] = the sum (product) of x[..., k, ...] over k <= i (exclusive: k < i; reverse: k >= i or
    k > i): one generic over the output and k, each term masked to the identity outside the range. Quadratic in
    the axis length, which suits the short axes of masks and positions (a scan would be linear)."""
    x, t = args[0], node.inputs[0].type
    axis, rank = norm_axis(node.attrs["axis"], t.rank), t.rank
    f, prod = t.dtype.is_float, node.op is rd.cumprod
    P = arith.CmpIPredicate
    pred = {(False, False): P.ule, (True, False): P.ult, (False, True): P.uge, (True, True): P.ugt}[
        (bool(node.attrs["exclusive"]), bool(node.attrs["reverse"]))]
    et = elem_of(x)
    ident = 1 if prod else 0

    def body(v, acc):
        inside = arith.cmpi(pred, linalg.IndexOp(rank).result, linalg.IndexOp(axis).result)
        v = arith.select(inside, v, scalar(ident, et))
        if prod:
            return arith.mulf(acc, v) if f else arith.muli(acc, v)
        return arith.addf(acc, v) if f else arith.addi(acc, v)

    xmap = amap(rank + 1, [rank if d == axis else d for d in range(rank)])
    return generic([x], [ctx.full(t.shape, et, ident)], [xmap, amap(rank + 1, range(rank))],
                   [PAR] * rank + [RED], body)


@lowers(rd.topk)
def _topk(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    """The reference's order, exactly: a stable ascending sort of the key x (smallest) or -x (largest; numpy's
    negation: integers wrap, so INT_MIN leads, and unsigned values are negated as int64), NaN after every number.
    First the rank of each element (how many come before it: a smaller key, or an equal key at a lower index; one
    generic, quadratic in the axis), then output p along the axis takes the element of rank p. IREE's own sort
    is a serial loop per row as well."""
    x, t = args[0], node.inputs[0].type
    dt, rank, largest = t.dtype, t.rank, node.attrs["largest"]
    axis = norm_axis(node.attrs["axis"], rank)
    out = list(node.outputs[0].type.shape)
    i64 = ir.IntegerType.get_signless(64)
    if 0 in out:
        return [ctx.empty(out, elem_of(x)), ctx.empty(out, i64)]
    if dt is DType.BOOL and largest:
        raise Unsupported("topk largest of bool on mlir: the reference negates the booleans, which numpy refuses",
                          node.loc)
    P, F = arith.CmpIPredicate, arith.CmpFPredicate
    if dt.is_float:
        key = ctx.ewise([x], t.shape, elem_of(x), arith.negf) if largest else x

        def less(a, b):           # numpy's sort order: a < b, or b NaN and a not
            nan_b = arith.andi(arith.cmpf(F.UNO, b, b), arith.cmpf(F.ORD, a, a))
            return arith.ori(arith.cmpf(F.OLT, a, b), nan_b)
    else:
        if largest and is_unsigned(dt):
            key = ctx.ewise([x], t.shape, i64, lambda v: arith.subi(scalar(0, i64), ctx.cast_int(v, i64, False)))
        elif largest:
            key = ctx.ewise([x], t.shape, elem_of(x), lambda v: arith.subi(scalar(0, v.type), v))
        else:
            key = x
        pred = P.ult if is_unsigned(dt) and not largest else P.slt

        def less(a, b):
            return arith.cmpi(pred, a, b)

    def count(ki, kj, acc):       # element i (dimension `axis`), element j (the last dimension) before it?
        earlier = arith.cmpi(P.ult, linalg.IndexOp(rank).result, linalg.IndexOp(axis).result)
        tie = arith.andi(arith.xori(less(ki, kj), scalar(True, earlier.type)), earlier)
        return arith.addi(acc, arith.extui(i64, arith.ori(less(kj, ki), tie)))

    n = rank + 1
    along = amap(n, [rank if d == axis else d for d in range(rank)])
    ident = amap(n, range(rank))
    ranks = generic([key, key], [ctx.full(t.shape, i64, 0)], [ident, along, ident], [PAR] * rank + [RED],
                    count)[0]

    def pick(v, r, val, idx):      # output p (dimension `axis`) takes the element r (the last dimension) of rank p
        hit = arith.cmpi(P.eq, r, arith.index_cast(i64, linalg.IndexOp(axis).result))
        return arith.select(hit, v, val), arith.select(hit, arith.index_cast(i64, linalg.IndexOp(rank).result), idx)

    return generic([x, ranks], [ctx.full(out, elem_of(x), 0), ctx.full(out, i64, 0)], [along, along, ident, ident],
                   [PAR] * rank + [RED], pick)
