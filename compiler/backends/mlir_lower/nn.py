"""Normalizations, softmax and pooling.

Softmax / layer norm are reductions plus broadcasting generics (IREE fuses them). Pooling pads
with -inf (max) or 0 (sum) and uses linalg.pooling_nchw_max / pooling_nchw_sum for 2-D float,
a windowed linalg.generic otherwise; ceil mode is extra high padding (the window never starts in
it), and padding past the last window is sliced off (the named ops infer the window from the extent). Average pooling divides by a per-position count computed at compile time with the
reference's own window logic, so count_include_pad and ceil mode match exactly. LRN sums the
squares over a channel window of the zero-padded input (a generic with one reduction dimension).
"""
from __future__ import annotations

import numpy as np
from iree.compiler import ir
from iree.compiler.dialects import arith, linalg, math, tensor

from compiler.backends.mlir_lower.casts import from_bf16, to_bf16
from compiler.backends.mlir_lower.linalg import pad_constant
from compiler.backends.mlir_lower.reduce import reduce_kind
from compiler.backends.mlir_lower.registry import (
    PAR,
    RED,
    LowerCtx,
    amap,
    elem_of,
    generic,
    in_f32,
    is_unsigned,
    lowers,
    scalar,
    shape_of,
    tensor_type,
)
from compiler.ir import Node
from compiler.ops import nn
from compiler.ops._util import norm_axis
from compiler.types import DType


def _bin(ctx: LowerCtx, a: ir.Value, b: ir.Value, fn) -> ir.Value:
    shape = tuple(np.broadcast_shapes(shape_of(a), shape_of(b)))
    return ctx.ewise([a, b], shape, elem_of(a), fn)


def _max_by_select(a: ir.Value, b: ir.Value) -> ir.Value:
    """arith.maximumf's NaN-propagating max as a compare and a select."""
    take = arith.ori(arith.cmpf(arith.CmpFPredicate.OGT, a, b), arith.cmpf(arith.CmpFPredicate.UNO, a, a))
    return arith.select(take, a, b)


def _softmax(ctx: LowerCtx, x: ir.Value, axis: int, log: bool) -> ir.Value:
    shape, et = shape_of(x), elem_of(x)
    # float16 on the CPU: the row max as a select, since IREE raises arith.maximumf's form to linalg.softmax,
    # whose float16 max becomes a call to fmaxf that its static link does not have
    f16_cpu = isinstance(et, ir.F16Type) and ctx.target.kind == "llvm"
    mx = ctx.reduce(x, [axis], -np.inf, _max_by_select if f16_cpu else arith.maximumf, keepdims=True)
    s = _bin(ctx, x, mx, arith.subf)
    e = ctx.ewise([s], shape, et, in_f32(math.exp))
    if isinstance(et, ir.F16Type):     # the sum in float32, rounded once (the reference's)
        f32 = ir.F32Type.get()
        tot = ctx.reduce(e, [axis], 0.0, arith.addf, keepdims=True, out_et=f32, pre=lambda a: arith.extf(f32, a))
        tot = ctx.ewise([tot], shape_of(tot), et, lambda a: arith.truncf(et, a))
    else:
        tot = ctx.reduce(e, [axis], 0.0, arith.addf, keepdims=True)
    if log:
        return _bin(ctx, s, tot, lambda a, t: arith.subf(a, in_f32(math.log)(t)))
    return _bin(ctx, e, tot, arith.divf)


def _bf16_softmax(ctx: LowerCtx, x: ir.Value, axis: int) -> ir.Value:
    """softmax of bfloat16 bits (i16) as its reference computes it, numpy on ml_dtypes arrays: x - max, exp and
    the quotient each in float32 rounded to bfloat16, the row sum accumulated in bfloat16 in order (every
    addition rounded; a reduction body IREE cannot reassociate). (A batch matmul reading it fences it on the
    CPU: linalg._fenced_lhs.)"""
    def rounded(fn):
        return lambda *a: to_bf16(fn(*(from_bf16(v) for v in a)))

    def pick_max(a, acc):
        fa, facc = from_bf16(a), from_bf16(acc)
        take = arith.ori(arith.cmpf(arith.CmpFPredicate.OGT, fa, facc), arith.cmpf(arith.CmpFPredicate.UNO, fa, fa))
        return arith.select(take, a, acc)
    mx = ctx.reduce(x, [axis], -0x80, pick_max, keepdims=True)          # 0xFF80: -inf
    e = ctx.ewise([_bin(ctx, x, mx, rounded(arith.subf))], shape_of(x), elem_of(x), rounded(math.exp))
    tot = ctx.reduce(e, [axis], 0, lambda a, acc: to_bf16(arith.addf(from_bf16(acc), from_bf16(a))), keepdims=True)
    return _bin(ctx, e, tot, rounded(arith.divf))


@lowers(nn.softmax, nn.log_softmax)
def _softmax_op(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    axis = norm_axis(node.attrs["axis"], node.inputs[0].type.rank)
    if node.inputs[0].type.dtype is DType.BF16:           # only softmax: mlir.BF16_NATIVE
        return [_bf16_softmax(ctx, args[0], axis)]
    return [_softmax(ctx, args[0], axis, node.op is nn.log_softmax)]


def _normalize(ctx: LowerCtx, x: ir.Value, axes: list[int], eps: float) -> ir.Value:
    """(x - mean) / sqrt(var + eps) over `axes` (two-pass variance, as the reference)."""
    mean = reduce_kind(ctx, x, _dt(x), "mean", axes, True)
    d = _bin(ctx, x, mean, arith.subf)
    var = ctx.reduce(d, axes, 0.0, arith.addf, keepdims=True, pre=lambda a: arith.mulf(a, a))
    n = float(np.prod([shape_of(x)[a] for a in axes], dtype=np.int64))
    return _bin(ctx, d, var, lambda a, v: arith.divf(
        a, math.sqrt(arith.addf(arith.divf(v, scalar(n, v.type)), scalar(eps, v.type)))))


def _dt(x: ir.Value):
    from compiler.types import DType
    return DType.F16 if isinstance(elem_of(x), ir.F16Type) else DType.F32


@lowers(nn.layer_norm)
def _layer_norm(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    x = args[0]
    rank = len(shape_of(x))
    axes = list(range(norm_axis(node.attrs["axis"], rank), rank))
    y = _bin(ctx, _normalize(ctx, x, axes, node.attrs["epsilon"]), args[1], arith.mulf)
    if len(args) > 2:
        y = _bin(ctx, y, args[2], arith.addf)
    return [y]


def _per_channel(ctx: LowerCtx, p: ir.Value, rank: int) -> ir.Value:
    return ctx.reshape(p, (1, shape_of(p)[0]) + (1,) * (rank - 2))


@lowers(nn.batch_norm)
def _batch_norm(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    x, scale, bias, mean, var = args
    rank, eps = len(shape_of(x)), node.attrs["epsilon"]
    inv = _bin(ctx, scale, var, lambda s, v: arith.divf(s, math.sqrt(arith.addf(v, scalar(eps, v.type)))))
    y = _bin(ctx, x, _per_channel(ctx, mean, rank), arith.subf)
    y = _bin(ctx, y, _per_channel(ctx, inv, rank), arith.mulf)
    return [_bin(ctx, y, _per_channel(ctx, bias, rank), arith.addf)]


@lowers(nn.instance_norm)
def _instance_norm(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    x, scale, bias = args
    rank = len(shape_of(x))
    y = _normalize(ctx, x, list(range(2, rank)), node.attrs["epsilon"])
    y = _bin(ctx, y, _per_channel(ctx, scale, rank), arith.mulf)
    return [_bin(ctx, y, _per_channel(ctx, bias, rank), arith.addf)]


# -- pooling --------------------------------------------------------------------------
def _pool_pads(x_shape, out_shape, a) -> tuple[list[int], list[int]]:
    nsp = len(x_shape) - 2
    k, s, p, d = a["kernel"], a["strides"], a["pads"], a["dilations"]
    hi = [max(p[i + nsp], (out_shape[2 + i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 - x_shape[2 + i] - p[i])
          for i in range(nsp)]
    return [0, 0, *p[:nsp]], [0, 0, *hi]


def _window_reduce(ctx: LowerCtx, xp: ir.Value, out_shape, a, init, combine, named) -> ir.Value:
    nsp = len(out_shape) - 2
    et = elem_of(xp)
    # the windows' extent exactly: a named pooling op's verifier infers the window from it (a ceil-mode window
    # that would start on the padding is dropped by the output shape, and the padding past it must go too)
    need = [(out_shape[2 + i] - 1) * a["strides"][i] + (a["kernel"][i] - 1) * a["dilations"][i] + 1
            for i in range(nsp)]
    have = list(shape_of(xp))
    if have[2:] != need:
        sizes = have[:2] + need
        xp = tensor.extract_slice(tensor_type(sizes, et), xp, [], [], [], [0] * len(sizes), sizes, [1] * len(sizes))
    acc = ctx.full(out_shape, et, init)
    window = ctx.empty(a["kernel"], et)
    if nsp == 2 and named is not None:
        return named(xp, window, outs=[acc], strides=list(a["strides"]), dilations=list(a["dilations"]))
    nd = 2 + 2 * nsp
    s, d = a["strides"], a["dilations"]
    xmap = [0, 1] + [ir.AffineDimExpr.get(2 + i) * s[i] + ir.AffineDimExpr.get(2 + nsp + i) * d[i]
                     for i in range(nsp)]
    maps = [amap(nd, xmap), amap(nd, [2 + nsp + i for i in range(nsp)]), amap(nd, range(2 + nsp))]
    return generic([xp, window], [acc], maps, [PAR] * (2 + nsp) + [RED] * nsp,
                   lambda v, _w, acc_: combine(v, acc_))[0]


@lowers(nn.max_pool)
def _max_pool(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    x, t, a = args[0], node.inputs[0].type, node.attrs
    out = node.outputs[0].type.shape
    lo, hi = _pool_pads(t.shape, out, a)
    if t.dtype.is_float:
        low, comb, named = -np.inf, arith.maximumf, linalg.pooling_nchw_max
    else:
        low = int(np.iinfo(t.dtype.numpy).min)
        comb, named = (arith.maxui, None) if is_unsigned(t.dtype) else (arith.maxsi, linalg.pooling_nchw_max)
    xp = pad_constant(ctx, x, lo, hi, low)
    return [_window_reduce(ctx, xp, out, a, low, comb, named)]


@lowers(nn.avg_pool)
def _avg_pool(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    x, t, a = args[0], node.inputs[0].type, node.attrs
    out = node.outputs[0].type.shape
    lo, hi = _pool_pads(t.shape, out, a)
    xp = pad_constant(ctx, x, lo, hi, 0.0)
    total = _window_reduce(ctx, xp, out, a, 0.0, arith.addf, linalg.pooling_nchw_sum)
    count = nn.pool_counts(t.shape[2:], a, out[2:])
    c = ctx.const(count.astype(t.dtype.numpy))
    return [ctx.ewise([total, c], out, elem_of(total), arith.divf)]


@lowers(nn.lrn)
def _lrn(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    """x / (bias + alpha / size * sum of x^2 over `size` channels around c) ^ beta."""
    x, a = args[0], node.attrs
    shape, et = shape_of(x), elem_of(x)
    rank, size = len(shape), a["size"]
    sq = ctx.ewise([x], shape, et, lambda v: arith.mulf(v, v))
    rest = [0] * (rank - 2)
    sqp = pad_constant(ctx, sq, [0, (size - 1) // 2, *rest], [0, size // 2, *rest], 0.0)
    channel = ir.AffineDimExpr.get(1) + ir.AffineDimExpr.get(rank)
    maps = [amap(rank + 1, [0, channel, *range(2, rank)]), amap(rank + 1, [rank]), amap(rank + 1, range(rank))]
    total = generic([sqp, ctx.empty([size], et)], [ctx.full(shape, et, 0.0)], maps, [PAR] * rank + [RED],
                    lambda v, _w, acc: arith.addf(v, acc))[0]
    bias, coef, beta = (scalar(v, et) for v in (a["bias"], a["alpha"] / size, a["beta"]))
    return [ctx.ewise([x, total], shape, et,
                      lambda v, t: arith.divf(v, math.powf(arith.addf(bias, arith.mulf(coef, t)), beta)))]
