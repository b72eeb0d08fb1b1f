"""Bitwise ops on integers: and, or, xor, not, and shifts (ONNX BitShift-28 semantics)."""
from __future__ import annotations

from typing import Any

import numpy as np

from compiler.ops.elementwise import _arith_infer
from compiler.ops.registry import Attr, TypeRuleError, define
from compiler.types import TensorType


def _int_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    for t in ins:
        if not t.dtype.is_int:
            raise TypeRuleError(f"bitwise ops need integer operands, got {t.dtype.value}")
    return _arith_infer(ins, attrs) if len(ins) == 2 else [ins[0]]


def _binary(name: str, doc: str, fn):
    return define(f"nn.{name}", doc, _int_infer,
                  lambda ins, a: [np.asarray(fn(ins[0], ins[1])).astype(ins[0].dtype)], 2)


bitwise_and = _binary("bitwise_and", "x & y, broadcasting.", np.bitwise_and)
bitwise_or = _binary("bitwise_or", "x | y, broadcasting.", np.bitwise_or)
bitwise_xor = _binary("bitwise_xor", "x ^ y, broadcasting.", np.bitwise_xor)
bitwise_not = define("nn.bitwise_not", "~x.", _int_infer, lambda ins, a: [np.invert(ins[0])], 1)


def _shift_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    if attrs["direction"] not in ("left", "right"):
        raise TypeRuleError(f"bit_shift direction {attrs['direction']!r}; expected left or right")
    return _int_infer(ins, attrs)


def _shift_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x, s = np.broadcast_arrays(*ins)
    bits = x.dtype.itemsize * 8
    out_of_range = (s < 0) | (s >= bits)
    s = np.where(out_of_range, 0, s).astype(x.dtype)
    if a["direction"] == "left":
        y = np.left_shift(x, s)
        fill = np.zeros_like(x)
    else:
        y = np.right_shift(x, s)                      # arithmetic for signed types
        fill = np.where(x < 0, -1, 0).astype(x.dtype) if x.dtype.kind == "i" else np.zeros_like(x)
    return [np.where(out_of_range, fill, y).astype(x.dtype)]


bit_shift = define("nn.bit_shift", "x << s or x >> s (arithmetic for signed types; a left shift "
                   "drops the bits shifted out). A shift < 0 or >= the bit width gives what the "
                   "sign fill alone gives: -1 for a right shift of a negative x, else 0.",
                   _shift_infer, _shift_ref, 2, direction=Attr("str"))
