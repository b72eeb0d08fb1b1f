"""ONNX ops that are compositions of IR ops: LayerNormalization with its Mean / InvStdDev
outputs, GroupNormalization, Hardmax, and the activations Softsign, ThresholdedRelu, Celu,
Shrink and Mish."""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx

from compiler.ops import elementwise as ew
from compiler.ops import indexing, nn, reduce
from compiler.ops import shape as shape_ops
from frontends.onnx.context import ConvertContext, Operand


def _stats(ctx: ConvertContext, x: Operand, axes: tuple[int, ...], eps: float) -> tuple[Operand, Operand]:
    """(mean, 1 / sqrt(var + eps)) over `axes`, kept as size-1 axes."""
    mean = ctx.emit(reduce.reduce_mean, [x], axes=axes, keepdims=True)
    centered = ctx.emit(ew.sub, [x, mean])
    var = ctx.emit(reduce.reduce_mean, [ctx.emit(ew.mul, [centered, centered])], axes=axes, keepdims=True)
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


CONVERTERS: dict[str, Callable] = {
    "LayerNormalization": _convert_layer_norm, "GroupNormalization": _convert_group_norm,
    "Hardmax": _convert_hardmax, "Softsign": _activation(_softsign),
    "ThresholdedRelu": _activation(_thresholded_relu), "Celu": _activation(_celu),
    "Shrink": _activation(_shrink), "Mish": _activation(_mish),
}
