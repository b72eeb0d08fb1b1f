"""Converters for ONNX reductions (axes as attribute or input, normalized to explicit
non-negative lists), ArgMax/ArgMin, CumSum/CumProd and TopK."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from compiler.ops import elementwise as ew
from compiler.ops import reduce
from compiler.ops.registry import OpDef
from frontends.onnx.context import ConvertContext, Operand

# The opset from which each reduction takes `axes` as an input rather than an attribute.
_AXES_INPUT_SINCE = {"ReduceSum": 13}
_AXES_INPUT_DEFAULT = 18


def reduce_axes(ctx: ConvertContext, rank: int) -> tuple[int, ...] | None:
    """The sorted non-negative axes to reduce, or None for a no-op (noop_with_empty_axes)."""
    if ctx.opset >= _AXES_INPUT_SINCE.get(ctx.node.op_type, _AXES_INPUT_DEFAULT):
        axes = ctx.const_input(1, "axes")
    else:
        axes = ctx.attr("axes")
    if axes is None or len(axes) == 0:
        if ctx.attr("noop_with_empty_axes", 0):
            return None
        return tuple(range(rank))
    normalized = sorted({int(a) % rank for a in np.asarray(axes).reshape(-1)}) if rank else []
    return tuple(normalized)


def _reduce(op: OpDef, pre: OpDef | None = None, post: OpDef | None = None) -> Callable:
    """post(reduce(pre(x))); ReduceL1 = sum(abs), ReduceLogSum = log(sum), ..."""
    def convert(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
        x = ctx.input(0)
        axes = reduce_axes(ctx, ctx.rank(x))
        if pre is ew.mul:
            x = ctx.emit(ew.mul, [x, x])
        elif pre is not None:
            x = ctx.emit(pre, [x])
        if axes is None:
            y = ctx.emit(ew.identity, [x])
        else:
            y = ctx.emit(op, [x], axes=axes, keepdims=bool(ctx.attr("keepdims", 1)))
        return y if post is None else ctx.emit(post, [y])
    return convert


def _convert_reduce_log_sum_exp(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """log(sum(exp(x - m))) + m with m = max(x), for stability."""
    x = ctx.input(0)
    axes = reduce_axes(ctx, ctx.rank(x))
    if axes is None:
        return ctx.emit(ew.identity, [x])
    keep = bool(ctx.attr("keepdims", 1))
    m = ctx.emit(reduce.reduce_max, [x], axes=axes, keepdims=True)
    e = ctx.emit(ew.exp, [ctx.emit(ew.sub, [x, m])])
    s = ctx.emit(ew.log, [ctx.emit(reduce.reduce_sum, [e], axes=axes, keepdims=keep)])
    if not keep:
        m = ctx.emit(reduce.reduce_max, [m], axes=axes, keepdims=False)
    return ctx.emit(ew.add, [s, m])


def _convert_argmax(ctx: ConvertContext, node: onnx.NodeProto, negate: bool = False) -> Operand:
    x = ctx.input(0)
    if negate:
        if ctx.np_dtype(x).kind == "u":
            raise ctx.unsupported("ArgMin of unsigned integers is not supported")
        x = ctx.emit(ew.neg, [x])
    return ctx.emit(reduce.argmax, [x], axis=int(ctx.attr("axis", 0)) % max(ctx.rank(x), 1),
                    keepdims=bool(ctx.attr("keepdims", 1)),
                    select_last_index=bool(ctx.attr("select_last_index", 0)))


def _convert_argmin(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """argmin(x) = argmax(-x) (float and signed integers)."""
    return _convert_argmax(ctx, node, negate=True)


def _cumulative(op: OpDef) -> Callable:
    """CumSum / CumProd: the axis input must be a constant."""
    def convert(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
        x = ctx.input(0)
        axis = ctx.const_input(1, f"{node.op_type} axis")
        return ctx.emit(op, [x], axis=int(axis.reshape(-1)[0]) % ctx.rank(x),
                        exclusive=bool(ctx.attr("exclusive", 0)), reverse=bool(ctx.attr("reverse", 0)))
    return convert


def _convert_topk(ctx: ConvertContext, node: onnx.NodeProto) -> list[Operand]:
    x = ctx.input(0)
    if ctx.opset < 10:
        k = int(ctx.attr("k"))
    else:
        k = int(ctx.const_input(1, "TopK K").reshape(-1)[0])
    values, indices = ctx.emit_multi(reduce.topk, [x], k=k,
                                     axis=int(ctx.attr("axis", -1)) % ctx.rank(x),
                                     largest=bool(ctx.attr("largest", 1)))
    return [values, indices]


CONVERTERS: dict[str, Callable] = {
    "ReduceMean": _reduce(reduce.reduce_mean), "ReduceSum": _reduce(reduce.reduce_sum),
    "ReduceMax": _reduce(reduce.reduce_max), "ReduceMin": _reduce(reduce.reduce_min),
    "ReduceProd": _reduce(reduce.reduce_prod), "ReduceL2": _reduce(reduce.reduce_l2),
    "ReduceL1": _reduce(reduce.reduce_sum, pre=ew.abs_),
    "ReduceSumSquare": _reduce(reduce.reduce_sum, pre=ew.mul),
    "ReduceLogSum": _reduce(reduce.reduce_sum, post=ew.log),
    "ReduceLogSumExp": _convert_reduce_log_sum_exp,
    "ArgMax": _convert_argmax, "ArgMin": _convert_argmin,
    "CumSum": _cumulative(reduce.cumsum), "CumProd": _cumulative(reduce.cumprod),
    "TopK": _convert_topk,
}
