"""Reinterpreting element types: `nn.bitcast` keeps every element's bits and changes its type (ONNX
BitCast-26). Source and target have the same bit width; bool counts as 8 bits."""
from __future__ import annotations

from typing import Any

import numpy as np

from compiler.ops.registry import Attr, TypeRuleError, define
from compiler.types import DType, TensorType


def _bitcast_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    src, to = ins[0].dtype, attrs["to"]
    if src.bits != to.bits:
        raise TypeRuleError(f"bitcast needs types of one bit width, got {src.value} ({src.bits} bits) "
                            f"and {to.value} ({to.bits} bits)")
    return [TensorType(ins[0].shape, to)]


def bitcast_values(x: np.ndarray, to: DType) -> np.ndarray:
    """x's bits read as `to` (numpy view; ml_dtypes keep a sub-byte value in the low bits of its
    byte). A bool is true where the byte is nonzero."""
    if to is DType.BOOL:
        return x.view(np.uint8) != 0
    return np.require(x, requirements="C").view(to.numpy)   # ascontiguousarray makes 0-d 1-d


bitcast = define("nn.bitcast", "Reinterpret each element's bits as type `to` (same bit width; a bool is "
                 "true where its byte is nonzero).", _bitcast_infer,
                 lambda ins, a: [bitcast_values(ins[0], a["to"])], 1, native_bf16=True, to=Attr("dtype"))
