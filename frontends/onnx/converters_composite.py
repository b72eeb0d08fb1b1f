"""ONNX ops that are compositions of IR ops: LayerNormalization with its Mean / InvStdDev
outputs, GroupNormalization, MeanVarianceNormalization, LpNormalization, Hardmax, Det (an
unrolled LU factorization), Upsample (Resize-10), and the activations Softsign, ThresholdedRelu,
Celu, Shrink and Mish."""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx

from compiler.ops import elementwise as ew
from compiler.ops import indexing, nn, reduce
from compiler.ops import shape as shape_ops
from frontends.onnx.context import ConvertContext, Operand
from frontends.onnx.converters_resample import _convert_resize as convert_resize


def _moments(ctx: ConvertContext, x: Operand,
             axes: tuple[int, ...]) -> tuple[Operand, Operand, Operand]:
    """(mean, x - mean, variance) over `axes`, the statistics kept as size-1 axes."""
    mean = ctx.emit(reduce.reduce_mean, [x], axes=axes, keepdims=True)
    centered = ctx.emit(ew.sub, [x, mean])
    var = ctx.emit(reduce.reduce_mean, [ctx.emit(ew.mul, [centered, centered])], axes=axes, keepdims=True)
    return mean, centered, var


def _stats(ctx: ConvertContext, x: Operand, axes: tuple[int, ...], eps: float) -> tuple[Operand, Operand]:
    """(mean, 1 / sqrt(var + eps)) over `axes`, kept as size-1 axes."""
    mean, _, var = _moments(ctx, x, axes)
    std = ctx.emit(ew.sqrt, [ctx.emit(ew.add, [var, ctx.const(eps, like=var)])])
    return mean, ctx.emit(ew.reciprocal, [std])


def _convert_layer_norm(ctx: ConvertContext, node: onnx.NodeProto) -> list[Operand]:
    """Y by nn.layer_norm; Mean and InvStdDev (when used) by reductions over the same axes."""
    x = ctx.input(0)
    rank = ctx.rank(x)
    axis = int(ctx.attr("axis", -1)) % rank
    eps = float(ctx.attr("epsilon", 1e-5))
    if int(ctx.attr("stash_type", 1)) != 1:
        raise ctx.unsupported("stash_type other than 1 (float32 statistics)")
    inputs = [x, ctx.input(1)] + ([ctx.input(2)] if ctx.has_input(2) else [])
    y = ctx.emit(nn.layer_norm, inputs, axis=axis, epsilon=eps)
    if not (ctx.output_used(1) or ctx.output_used(2)):
        return [y]
    mean, inv_std = _stats(ctx, x, tuple(range(axis, rank)), eps)
    return [y, mean, inv_std]


def _convert_group_norm(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """Normalize (N, G, C/G * spatial) per group; opset 21 scales per channel, opset 18 per group."""
    x, scale, bias = ctx.input(0), ctx.input(1), ctx.input(2)
    dims = ctx.shape(x)
    n, c, groups = dims[0], dims[1], int(ctx.attr("num_groups"))
    if c % groups:
        raise ctx.invalid(f"{c} channels do not split into {groups} groups")
    if int(ctx.attr("stash_type", 1)) != 1:
        raise ctx.unsupported("stash_type other than 1 (float32 statistics)")
    grouped = ctx.emit(shape_ops.reshape, [x], shape=(n, groups, math.prod(dims[1:]) // groups))
    mean, inv_std = _stats(ctx, grouped, (2,), float(ctx.attr("epsilon", 1e-5)))
    normed = ctx.emit(ew.mul, [ctx.emit(ew.sub, [grouped, mean]), inv_std])
    per_channel = (c,) + (1,) * (len(dims) - 2)
    if ctx.shape(scale) == (groups,) and groups != c:     # GroupNormalization-18: per group
        normed = ctx.emit(ew.add, [ctx.emit(ew.mul, [normed, _reshape(ctx, scale, (groups, 1))]),
                                   _reshape(ctx, bias, (groups, 1))])
        return ctx.emit(shape_ops.reshape, [normed], shape=dims)
    y = ctx.emit(shape_ops.reshape, [normed], shape=dims)
    return ctx.emit(ew.add, [ctx.emit(ew.mul, [y, _reshape(ctx, scale, per_channel)]),
                             _reshape(ctx, bias, per_channel)])


def _reshape(ctx: ConvertContext, x: Operand, shape: tuple[int, ...]) -> Operand:
    return ctx.emit(shape_ops.reshape, [x], shape=shape)


def _convert_hardmax(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """one_hot(argmax) along the axis (opset < 13: over the input flattened to 2-D at axis)."""
    x = ctx.input(0)
    dims = ctx.shape(x)
    rank = len(dims)
    if ctx.opset >= 13:
        axis, flat = int(ctx.attr("axis", -1)) % rank, x
    else:
        axis0 = int(ctx.attr("axis", 1)) % rank
        flat = _reshape(ctx, x, (math.prod(dims[:axis0]), math.prod(dims[axis0:])))
        axis = 1
    idx = ctx.emit(reduce.argmax, [flat], axis=axis, keepdims=False)
    values = np.array([0, 1], ctx.np_dtype(x))
    y = ctx.emit(indexing.one_hot, [idx, values], depth=ctx.shape(flat)[axis], axis=axis)
    return y if flat is x else _reshape(ctx, y, dims)


def _convert_mvn(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """(x - mean) / (sqrt(variance) + 1e-9) over `axes` (default N, H, W), as the ONNX function
    body computes it (the variance taken centred, which is the same value, never negative)."""
    x = ctx.input(0)
    rank = ctx.rank(x)
    axes = [int(a) for a in ctx.attr("axes", (0, 2, 3))]
    if any(not -rank <= a < rank for a in axes):
        raise ctx.invalid(f"axes {axes} are out of range for a rank-{rank} input")
    _, centered, var = _moments(ctx, x, tuple(sorted({a % rank for a in axes})))
    std = ctx.emit(ew.add, [ctx.emit(ew.sqrt, [var]), ctx.const(1e-9, like=var)])
    return ctx.emit(ew.div, [centered, std])


def _convert_lp_norm(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """x / ||x||_p along `axis` for p = 1 or 2; 0 where the norm is 0 (all of x there is 0, so
    dividing by 1 instead gives it)."""
    x = ctx.input(0)
    rank = ctx.rank(x)
    axis = int(ctx.attr("axis", -1))
    if not -rank <= axis < rank:
        raise ctx.invalid(f"axis {axis} is out of range for a rank-{rank} input")
    axes, p = (axis % rank,), int(ctx.attr("p", 2))
    if p == 1:
        norm = ctx.emit(reduce.reduce_sum, [ctx.emit(ew.abs_, [x])], axes=axes, keepdims=True)
    elif p == 2:
        norm = ctx.emit(reduce.reduce_l2, [x], axes=axes, keepdims=True)
    else:
        raise ctx.invalid(f"p={p} (LpNormalization defines p = 1 and p = 2)")
    zero = ctx.emit(ew.equal, [norm, ctx.const(0, like=norm)])
    return ctx.emit(ew.div, [x, ctx.emit(ew.where, [zero, ctx.const(1, like=norm), norm])])


# -- Det: LU factorization with partial pivoting, unrolled over the columns -------------------
def _column(ctx: ConvertContext, a: Operand, k: int) -> Operand:
    """a[:, :, k] of the (B, n, n) matrices, as (B, n)."""
    b, n, _ = ctx.shape(a)
    col = ctx.emit(shape_ops.slice_, [a], starts=(k,), ends=(k + 1,), axes=(2,), steps=(1,))
    return _reshape(ctx, col, (b, n))


def _row(ctx: ConvertContext, a: Operand, k: int) -> Operand:
    """a[:, k:k+1, :] of the (B, n, n) matrices."""
    return ctx.emit(shape_ops.slice_, [a], starts=(k,), ends=(k + 1,), axes=(1,), steps=(1,))


def _swap_in_pivot(ctx: ConvertContext, a: Operand, k: int) -> tuple[Operand, Operand]:
    """`a` with row k swapped for the row p >= k whose column-k entry is largest in magnitude
    (the first such, as LAPACK's getrf), and the sign of that swap (B,): -1 where p != k."""
    b, n, _ = ctx.shape(a)
    rows = np.arange(n)
    magnitude = ctx.emit(ew.abs_, [_column(ctx, a, k)])
    candidates = ctx.emit(ew.where, [rows >= k, magnitude, ctx.const(-1, like=magnitude)])
    p = ctx.emit(reduce.argmax, [candidates], axis=1, keepdims=False)
    at_p = _reshape(ctx, ctx.emit(ew.equal, [_reshape(ctx, p, (b, 1)), rows]), (b, n, 1))
    zero = ctx.const(0, like=a)
    row_p = ctx.emit(reduce.reduce_sum, [ctx.emit(ew.where, [at_p, a, zero])], axes=(1,), keepdims=True)
    swapped = ctx.emit(ew.where, [at_p, _row(ctx, a, k), a])
    swapped = ctx.emit(ew.where, [(rows == k).reshape(n, 1), row_p, swapped])
    stays = ctx.emit(ew.equal, [p, ctx.const(k, like=p)])
    return swapped, ctx.emit(ew.where, [stays, ctx.const(1, like=a), ctx.const(-1, like=a)])


def _eliminate_below(ctx: ConvertContext, a: Operand, pivot: Operand, k: int) -> Operand:
    """`a` minus the multiples of row k that zero column k below it. A zero pivot means the
    column is zero from row k down (the pivot is its largest entry), so its factors are 0."""
    b, n, _ = ctx.shape(a)
    zero = ctx.const(0, like=a)
    safe = ctx.emit(ew.where, [ctx.emit(ew.equal, [pivot, zero]), ctx.const(1, like=a), pivot])
    factors = ctx.emit(ew.div, [_column(ctx, a, k), _reshape(ctx, safe, (b, 1))])
    factors = ctx.emit(ew.where, [np.arange(n) > k, factors, zero])
    return ctx.emit(ew.sub, [a, ctx.emit(ew.mul, [_reshape(ctx, factors, (b, n, 1)), _row(ctx, a, k)])])


def _determinant(ctx: ConvertContext, a: Operand) -> Operand:
    """det of the (B, n, n) matrices `a`, shape (B,): the product of the pivots of Gaussian
    elimination with partial pivoting, negated at each row swap (numpy.linalg.det's LU)."""
    b, n, _ = ctx.shape(a)
    det: Operand = ctx.const(np.ones(b), like=a)
    for k in range(n):
        sign = None
        if k < n - 1:
            a, sign = _swap_in_pivot(ctx, a, k)
        pivot = _reshape(ctx, ctx.emit(shape_ops.slice_, [_column(ctx, a, k)], starts=(k,),
                                       ends=(k + 1,), axes=(1,), steps=(1,)), (b,))
        det = ctx.emit(ew.mul, [det, pivot if sign is None else ctx.emit(ew.mul, [pivot, sign])])
        if k < n - 1:
            a = _eliminate_below(ctx, a, pivot, k)
    return det


def _convert_det(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """Determinants of the (..., n, n) input's trailing square matrices, shape (...)."""
    x = ctx.input(0)
    dims = ctx.shape(x)
    if len(dims) < 2 or dims[-1] != dims[-2]:
        raise ctx.invalid(f"the input must be (..., n, n) square matrices, got shape {list(dims)}")
    if ctx.np_dtype(x).kind != "f":
        raise ctx.invalid(f"the input must be float, got {ctx.np_dtype(x)}")
    batch = dims[:-2]
    det = _determinant(ctx, _reshape(ctx, x, (math.prod(batch),) + dims[-2:]))
    return _reshape(ctx, det, batch)


def _convert_upsample(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """Upsample-9 (scales as input 1; the checker refuses the deprecated op from opset 10 on) is
    Resize-10: asymmetric coordinates, floor rounding for nearest, 'nearest' or 'linear'."""
    return convert_resize(ctx, node)


def _activation(fn: Callable[[ConvertContext, Operand], Operand]) -> Callable:
    def convert(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
        return fn(ctx, ctx.input(0))
    return convert


def _softsign(ctx: ConvertContext, x: Operand) -> Operand:
    denominator = ctx.emit(ew.add, [ctx.emit(ew.abs_, [x]), ctx.const(1, like=x)])
    return ctx.emit(ew.div, [x, denominator])


def _thresholded_relu(ctx: ConvertContext, x: Operand) -> Operand:
    alpha = float(ctx.attr("alpha", 1.0))
    keep = ctx.emit(ew.greater, [x, ctx.const(alpha, like=x)])
    return ctx.emit(ew.where, [keep, x, ctx.const(0, like=x)])


def _celu(ctx: ConvertContext, x: Operand) -> Operand:
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1)) = elu(x / alpha) * alpha."""
    alpha = float(ctx.attr("alpha", 1.0))
    scaled = ctx.emit(ew.div, [x, ctx.const(alpha, like=x)])
    return ctx.emit(ew.mul, [ctx.emit(ew.elu, [scaled], alpha=1.0), ctx.const(alpha, like=x)])


def _shrink(ctx: ConvertContext, x: Operand) -> Operand:
    lambd, bias = float(ctx.attr("lambd", 0.5)), float(ctx.attr("bias", 0.0))
    below = ctx.emit(ew.less, [x, ctx.const(-lambd, like=x)])
    above = ctx.emit(ew.greater, [x, ctx.const(lambd, like=x)])
    zero = ctx.const(0, like=x)
    up = ctx.emit(ew.where, [above, ctx.emit(ew.sub, [x, ctx.const(bias, like=x)]), zero])
    return ctx.emit(ew.where, [below, ctx.emit(ew.add, [x, ctx.const(bias, like=x)]), up])


def _mish(ctx: ConvertContext, x: Operand) -> Operand:
    return ctx.emit(ew.mul, [x, ctx.emit(ew.tanh, [ctx.emit(ew.softplus, [x])])])


# Ops refused on purpose, with the reason the importer's unsupported-ops error gives.
REFUSED: dict[str, str] = dict.fromkeys(
    ("Bernoulli", "Multinomial", "RandomNormal", "RandomNormalLike", "RandomUniform",
     "RandomUniformLike"),
    "random sampling is out of scope for a deterministic compiler (feed the random tensor as "
    "a model input instead)")


CONVERTERS: dict[str, Callable] = {
    "LayerNormalization": _convert_layer_norm, "GroupNormalization": _convert_group_norm,
    "MeanVarianceNormalization": _convert_mvn, "LpNormalization": _convert_lp_norm,
    "Det": _convert_det, "Upsample": _convert_upsample,
    "Hardmax": _convert_hardmax, "Softsign": _activation(_softsign),
    "ThresholdedRelu": _activation(_thresholded_relu), "Celu": _activation(_celu),
    "Shrink": _activation(_shrink), "Mish": _activation(_mish),
}
