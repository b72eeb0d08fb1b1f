"""Kernel-level ops: what the backends emit as one kernel each.

`k.fused` is an anchor op (conv, matmul, q.conv, q.matmul, pooling, a reduction, Shiftmax) with the
elementwise ops that consume its result, held as a body: a small Graph of existing ops whose
inputs are the fused node's operands. It has no meaning of its own: its reference runs the
interpreter over the body. The body may start with `layout.unpack` of a blocked operand and end
with `layout.pack`; that is how a kernel states the layouts it reads and writes. `tile` is the
register tile the tile pass chose (empty: the kernel's default). `inplace` is the operand whose buffer
the result may overwrite (-1: none); passes/inplace.py sets it where that operand dies here.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from compiler.ops.registry import Attr, TypeRuleError, define
from compiler.types import TensorType


def _fused_infer(ins: list[TensorType], a: dict[str, Any]) -> list[TensorType]:
    body = a["body"]
    if len(ins) != len(body.inputs):
        raise TypeRuleError(f"fused kernel takes {len(body.inputs)} operands (its body's inputs), got {len(ins)}")
    for i, (t, v) in enumerate(zip(ins, body.inputs)):
        if (t.shape, t.dtype) != (v.type.shape, v.type.dtype):
            raise TypeRuleError(f"operand {i} is {t}, the body's input '{v.name}' is {v.type}")
    return [v.type for v in body.outputs]


def _fused_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    from compiler import interp
    return interp.run(a["body"], *ins)


fused = define("k.fused", "One kernel: the interpreter over `body` (an anchor op and its elementwise epilogue).",
               _fused_infer, _fused_ref, (0, -1),
               kernel=Attr("str"), body=Attr("graph"), tile=Attr("ints", ()), inplace=Attr("int", -1))


def anchor_of(body) -> Any:
    """The body's anchor node: the first node that is neither a layout conversion (a packed weight's
    unpack included) nor a prologue op (what the fusion pass lets join in front of an operand: a
    transpose, a cast, a requant)."""
    from compiler.ops import elementwise, layout, quant, shape
    skip = (layout.pack, layout.unpack, layout.unpack_weight, shape.transpose, elementwise.cast,
            quant.requant)
    return next(n for n in body.nodes if n.op not in skip)


def widened_result(body) -> bool:
    """The body's result (before a final pack) is a float16 value cast to float32: what a float16 GEMM can write
    widened, exactly (ResNet's last conv in FP16, read by a float32 global pool)."""
    from compiler.ops import elementwise, layout
    from compiler.types import DType
    last = body.outputs[0].producer
    while last is not None and last.op is layout.pack:
        last = last.inputs[0].producer
    return last is not None and last.op is elementwise.cast and last.outputs[0].type.dtype is DType.F32 and \
        last.inputs[0].type.dtype is DType.F16
