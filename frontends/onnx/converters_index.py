"""Converters for ONNX element-wise indexing ops: GatherElements, GatherND, ScatterElements
(and its deprecated form Scatter), ScatterND, OneHot and Trilu."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from compiler.ops import indexing
from frontends.onnx.context import ConvertContext, Operand


def _axis(ctx: ConvertContext, x: Operand) -> int:
    return int(ctx.attr("axis", 0)) % max(ctx.rank(x), 1)


def _convert_gather_elements(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    x = ctx.input(0)
    return ctx.emit(indexing.gather_elements, [x, ctx.input(1)], axis=_axis(ctx, x))


def _convert_gather_nd(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    return ctx.emit(indexing.gather_nd, [ctx.input(0), ctx.input(1)],
                    batch_dims=int(ctx.attr("batch_dims", 0)))


def _reduction(ctx: ConvertContext) -> str:
    how = ctx.attr("reduction", "none")
    if how not in indexing.REDUCTIONS:
        raise ctx.unsupported(f"reduction {how!r} (supported: {', '.join(indexing.REDUCTIONS)})")
    return how


def _convert_scatter_elements(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    x = ctx.input(0)
    return ctx.emit(indexing.scatter_elements, [x, ctx.input(1), ctx.input(2)], axis=_axis(ctx, x),
                    reduction=_reduction(ctx))


def _convert_scatter_nd(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    return ctx.emit(indexing.scatter_nd, [ctx.input(0), ctx.input(1), ctx.input(2)],
                    reduction=_reduction(ctx))


def _convert_one_hot(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    depth = ctx.const_input(1, "OneHot depth")
    if depth.size != 1:
        raise ctx.invalid(f"depth must have one element, got shape {list(depth.shape)}")
    values = ctx.input(2)
    return ctx.emit(indexing.one_hot, [ctx.input(0), values], depth=int(depth.reshape(-1)[0]),
                    axis=int(ctx.attr("axis", -1)))


def _convert_trilu(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    k = ctx.const_input(1, "Trilu k")
    k = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    return ctx.emit(indexing.trilu, [ctx.input(0)], upper=bool(ctx.attr("upper", 1)), k=k)


CONVERTERS: dict[str, Callable] = {
    "GatherElements": _convert_gather_elements, "GatherND": _convert_gather_nd,
    "ScatterElements": _convert_scatter_elements, "Scatter": _convert_scatter_elements,
    "ScatterND": _convert_scatter_nd, "OneHot": _convert_one_hot, "Trilu": _convert_trilu,
}
