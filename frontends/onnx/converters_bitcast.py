"""ONNX BitCast-26: the input's bits read as another element type of the same width (nn.bitcast)."""
from __future__ import annotations

from collections.abc import Callable

import onnx

from compiler.ops.bitcast import bitcast
from frontends.onnx.context import ConvertContext, Operand, to_ir_dtype


def _convert_bitcast(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    to = to_ir_dtype(int(ctx.attr("to")), "BitCast target", ctx.loc)
    return ctx.emit(bitcast, [ctx.input(0)], to=to)


CONVERTERS: dict[str, Callable] = {"BitCast": _convert_bitcast}
