"""More unary math: trigonometric and hyperbolic functions, round (half to even), and the
float tests isnan / isinf. Same conventions as `elementwise`: float in, same type out."""
from __future__ import annotations

from typing import Any

import numpy as np

from compiler.ops._util import need_float
from compiler.ops.elementwise import _unary
from compiler.ops.registry import Attr, define
from compiler.types import DType, TensorType

sin = _unary("sin", "Sine.", lambda x, a: np.sin(x))
cos = _unary("cos", "Cosine.", lambda x, a: np.cos(x))
tan = _unary("tan", "Tangent.", lambda x, a: np.tan(x))
asin = _unary("asin", "Arc sine.", lambda x, a: np.arcsin(x))
acos = _unary("acos", "Arc cosine.", lambda x, a: np.arccos(x))
atan = _unary("atan", "Arc tangent.", lambda x, a: np.arctan(x))
sinh = _unary("sinh", "Hyperbolic sine.", lambda x, a: np.sinh(x))
cosh = _unary("cosh", "Hyperbolic cosine.", lambda x, a: np.cosh(x))
asinh = _unary("asinh", "Inverse hyperbolic sine.", lambda x, a: np.arcsinh(x))
acosh = _unary("acosh", "Inverse hyperbolic cosine.", lambda x, a: np.arccosh(x))
atanh = _unary("atanh", "Inverse hyperbolic tangent.", lambda x, a: np.arctanh(x))
round_ = _unary("round", "Round to the nearest integer, ties to even.", lambda x, a: np.rint(x))


def _float_test_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    need_float(ins[0], "isnan/isinf")
    return [TensorType(ins[0].shape, DType.BOOL)]


def _isinf_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x = ins[0]
    return [(np.isposinf(x) & a["detect_positive"]) | (np.isneginf(x) & a["detect_negative"])]


isnan = define("nn.isnan", "True where x is NaN.", _float_test_infer,
               lambda ins, a: [np.isnan(ins[0])], 1)
isinf = define("nn.isinf", "True where x is +inf (if detect_positive) or -inf (if detect_negative).",
               _float_test_infer, _isinf_ref, 1, detect_positive=Attr("bool", True),
               detect_negative=Attr("bool", True))
