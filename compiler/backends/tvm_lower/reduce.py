"""Lowerings of reductions, argmax, cumulative sums and products, and top-k."""
from __future__ import annotations

import math

import numpy as np
from tvm import relax, te, tirx

from compiler.backends.tvm_lower.registry import LowerCtx, const, dtype_of, lowers, shape_of
from compiler.ir import Node
from compiler.ops import reduce as rd

R = relax.op
_SIMPLE = {rd.reduce_sum: R.sum, rd.reduce_max: R.max, rd.reduce_min: R.min, rd.reduce_prod: R.prod}


def _axes(node: Node, x: relax.Expr) -> list[int]:
    rank = len(shape_of(x))
    return sorted(a % rank for a in node.attrs["axes"])


@lowers(*_SIMPLE)
def _reduce(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    # Integer sums and products wrap in the element type: equal, mod 2^bits, to numpy's
    # wider accumulation followed by the cast back.
    x = args[0]
    axes, dt = _axes(node, x), dtype_of(x)
    out = node.outputs[0].type
    if any(shape_of(x)[a] == 0 for a in axes):       # an empty set: the reduction's identity
        return [const(np.full(out.shape, _identity(node, out.dtype.numpy)), dt)]
    if dt == "bool":                                 # TVM has no bool min/max: reduce as uint8
        y = ctx.emit(_SIMPLE[node.op](R.astype(x, "uint8"), axes, node.attrs["keepdims"]))
        return [R.not_equal(y, const(0, "uint8"))]
    if dt.startswith("float") and node.op in (rd.reduce_max, rd.reduce_min):
        return [ctx.emit_te(_float_extreme_te, x, axes, node.attrs["keepdims"], node.op is rd.reduce_max,
                            name="reduce_max" if node.op is rd.reduce_max else "reduce_min")]
    return [_SIMPLE[node.op](x, axes, node.attrs["keepdims"])]


def _float_extreme_te(x: te.Tensor, axes: list[int], keepdims: bool, is_max: bool) -> te.Tensor:
    """Float max / min starting from -inf / +inf, as numpy does: TVM's own starts from the lowest finite
    value, so the max of an all -inf row (a fully masked attention row) came out finite."""
    shape = [int(d) for d in x.shape]
    raxes = [te.reduce_axis((0, shape[a]), name=f"r{a}") for a in axes]
    pick = tirx.max if is_max else tirx.min
    red = te.comm_reducer(lambda a, b: pick(a, b), lambda t: tirx.const(-math.inf if is_max else math.inf, t),
                          name="float_max" if is_max else "float_min")
    out_shape = [1 if i in axes else d for i, d in enumerate(shape)] if keepdims else \
        [d for i, d in enumerate(shape) if i not in axes]

    def f(*idx):
        full, k, j = [], 0, 0
        for i in range(len(shape)):
            if i in axes:
                full.append(raxes[k])
                k, j = k + 1, j + (1 if keepdims else 0)
            else:
                full.append(idx[j])
                j += 1
        return red(x[tuple(full)], axis=raxes)
    return te.compute(out_shape, f, name="reduce")


def _identity(node: Node, dt: np.dtype):
    if node.op is rd.reduce_sum:
        return 0
    if node.op is rd.reduce_prod:
        return 1
    return rd.lowest(dt, highest=node.op is rd.reduce_min)


def _truncdiv_const_te(t: te.Tensor, n: int) -> te.Tensor:
    return te.compute(t.shape, lambda *i: tirx.truncdiv(t[i], tirx.const(n, t.dtype)),
                      name="mean_div")


@lowers(rd.reduce_mean)
def _reduce_mean(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    x = args[0]
    axes, dt = _axes(node, x), dtype_of(x)
    if dt.startswith("float"):
        return [R.mean(x, axes, node.attrs["keepdims"])]
    # numpy: the exact mean, truncated when cast back; sum in int64 so nothing wraps
    n = math.prod(shape_of(x)[a] for a in axes)
    total = ctx.emit(R.sum(R.astype(x, "int64"), axes, node.attrs["keepdims"]))
    q = ctx.emit_te(_truncdiv_const_te, total, n, name="mean_div")
    return [R.astype(q, dt)]


@lowers(rd.reduce_l2)
def _reduce_l2(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    x = args[0]
    axes, dt = _axes(node, x), dtype_of(x)
    if not dt.startswith("float"):
        # numpy: x*x wraps in the element type, the sum is exact, sqrt in float64, truncated back
        sq = ctx.emit(R.astype(R.multiply(x, x), "float64"))
        s = ctx.emit(R.sqrt(R.sum(sq, axes, node.attrs["keepdims"])))
        return [R.astype(s, dt)]
    return [R.sqrt(R.sum(R.multiply(x, x), axes, node.attrs["keepdims"]))]


@lowers(rd.argmax)
def _argmax(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    x = args[0]
    axis = node.attrs["axis"] % len(shape_of(x))
    keep = node.attrs["keepdims"]
    if not node.attrs["select_last_index"]:
        return [R.argmax(x, axis, keep)]
    idx = ctx.emit(R.argmax(ctx.emit(R.flip(x, axis)), axis, keep))
    last = relax.const(shape_of(x)[axis] - 1, "int64")
    return [R.subtract(last, idx)]


_SCANS = {rd.cumsum: R.cumsum, rd.cumprod: R.cumprod}


@lowers(*_SCANS)
def _cumulative(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    x = args[0]
    axis = node.attrs["axis"] % len(shape_of(x))
    if node.attrs["reverse"]:
        x = ctx.emit(R.flip(x, axis))
    y = _SCANS[node.op](x, axis, dtype_of(x), node.attrs["exclusive"])
    if node.attrs["reverse"]:
        y = R.flip(ctx.emit(y), axis)
    return [y]


@lowers(rd.topk)
def _topk(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    a = node.attrs
    both = ctx.emit(R.topk(args[0], a["k"], a["axis"], "both", a["largest"], "int64"))
    return [relax.TupleGetItem(both, 0), relax.TupleGetItem(both, 1)]
