"""Elementwise ops: unary math, broadcasting binary arithmetic and comparison, where, cast, clip."""
from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
from scipy import special

from compiler.ops._util import as_dtype, broadcast_shapes, need_float, same_dtype
from compiler.ops.registry import Attr, TypeRuleError, define
from compiler.types import DType, TensorType


def _float_unary(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    need_float(ins[0], "this op")
    return [ins[0]]


def _any_unary(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    return [ins[0]]


def _unary(name: str, doc: str, fn, infer=_float_unary, **attrs: Attr):
    return define(f"nn.{name}", doc, infer,
                  lambda ins, a: [as_dtype(fn(ins[0], a), ins[0])], 1, **attrs)


def _gelu(x: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    if a["approximate"] == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + special.erf(x / np.sqrt(2)))


relu = _unary("relu", "max(x, 0).", lambda x, a: np.maximum(x, 0), _any_unary)
sigmoid = _unary("sigmoid", "1 / (1 + exp(-x)).", lambda x, a: special.expit(x))
tanh = _unary("tanh", "Hyperbolic tangent.", lambda x, a: np.tanh(x))
exp = _unary("exp", "e^x.", lambda x, a: np.exp(x))
log = _unary("log", "Natural logarithm.", lambda x, a: np.log(x))
sqrt = _unary("sqrt", "Square root.", lambda x, a: np.sqrt(x))
reciprocal = _unary("reciprocal", "1 / x.", lambda x, a: 1 / x)
erf = _unary("erf", "Gauss error function.", lambda x, a: special.erf(x))
neg = _unary("neg", "-x.", lambda x, a: -x, _any_unary)
abs_ = _unary("abs", "|x|.", lambda x, a: np.abs(x), _any_unary)
floor = _unary("floor", "Round toward -inf.", lambda x, a: np.floor(x))
ceil = _unary("ceil", "Round toward +inf.", lambda x, a: np.ceil(x))
softplus = _unary("softplus", "log(1 + exp(x)).", lambda x, a: np.logaddexp(0, x))
hard_swish = _unary("hard_swish", "x * clamp(x / 6 + 1/2, 0, 1).",
                    lambda x, a: x * np.clip(x / 6 + 0.5, 0, 1))
leaky_relu = _unary("leaky_relu", "x if x >= 0 else alpha * x.",
                    lambda x, a: np.where(x >= 0, x, x * a["alpha"]), alpha=Attr("float", 0.01))
elu = _unary("elu", "x if x > 0 else alpha * (exp(x) - 1).",
             lambda x, a: np.where(x > 0, x, a["alpha"] * np.expm1(x)), alpha=Attr("float", 1.0))
hard_sigmoid = _unary("hard_sigmoid", "clamp(alpha * x + beta, 0, 1).",
                      lambda x, a: np.clip(a["alpha"] * x + a["beta"], 0, 1),
                      alpha=Attr("float", 0.2), beta=Attr("float", 0.5))
gelu = _unary("gelu", "x * Phi(x); approximate='tanh' uses the tanh formula.", _gelu,
              approximate=Attr("str", "none"))
clip = _unary("clip", "clamp(x, min, max); bounds may be +-inf.",
              lambda x, a: np.clip(x, a["min"], a["max"]), _any_unary,
              min=Attr("float", -np.inf), max=Attr("float", np.inf))
identity = _unary("identity", "x (removed by canonicalize).", lambda x, a: x.copy(), _any_unary)


def _not_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    if ins[0].dtype is not DType.BOOL:
        raise TypeRuleError("not needs a bool operand")
    return [ins[0]]


logical_not = define("nn.not", "Logical negation.", _not_infer, lambda ins, a: [np.logical_not(ins[0])])


ROUND_MODES = ("up", "down", "nearest")


def _cast_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    if attrs["round_mode"] not in ROUND_MODES:
        raise TypeRuleError(f"cast round_mode must be one of {ROUND_MODES}, got {attrs['round_mode']!r}")
    return [TensorType(ins[0].shape, attrs["to"])]


def e8m0_values(x: np.ndarray, saturate: bool, round_mode: str) -> np.ndarray:
    """float8_e8m0fnu(x) as ONNX Cast-24 defines it: the float32 exponent field, rounded up / down /
    to nearest by the mantissa (`nearest`: onnx.numpy_helper.to_float8e8m0's rule); inf and NaN give
    NaN (0xFF); `saturate` keeps a round-up from 0xFE to 0xFF."""
    bits = np.asarray(x, np.float32).view(np.uint32)
    exp = ((bits >> 23) & 0xFF).astype(np.int32)
    frac = bits & 0x7FFFFF
    if round_mode == "up":
        up = frac > 0
    elif round_mode == "nearest":
        up = ((bits & 0x400000) > 0) & (((bits & 0x3FFFFF) > 0) | (exp > 0))
    else:
        up = np.zeros(bits.shape, bool)
    if saturate:
        up &= exp != 0xFE
    code = np.where(exp == 0xFF, 0xFF, np.minimum(exp + up, 0xFF))
    return code.astype(np.uint8).view(DType.F8E8M0.numpy)


def _cast_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x, to = ins[0], a["to"]
    if to is DType.BOOL:
        return [x != 0]
    if to is DType.F8E8M0:
        return [e8m0_values(x, a["saturate"], a["round_mode"])]
    if to.is_narrow_float and to is not DType.F4E2M1 and a["saturate"]:
        info = ml_dtypes.finfo(to.numpy)
        x = np.clip(x.astype(np.float32) if x.dtype.itemsize < 4 else x, float(info.min), float(info.max))
    if to.is_int and np.issubdtype(x.dtype, np.floating):
        x = np.trunc(x)
    with np.errstate(over="ignore", invalid="ignore"):     # overflow and NaN have defined results
        return [x.astype(to.numpy)]


cast = define("nn.cast", "Convert the element type; float -> int truncates toward zero (a sub-byte int: "
              "0 when out of range, as ml_dtypes); to a float8 type `saturate` clamps to the largest finite "
              "value (else overflow gives inf or NaN); to float8_e8m0fnu `round_mode` (up, down, nearest) "
              "rounds the exponent.",
              _cast_infer, _cast_ref, 1, to=Attr("dtype"), saturate=Attr("bool", True),
              round_mode=Attr("str", "up"))


# -- binary -------------------------------------------------------------------
def _arith_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    return [TensorType(broadcast_shapes(*(t.shape for t in ins)), same_dtype(ins))]


def _compare_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    same_dtype(ins)
    return [TensorType(broadcast_shapes(*(t.shape for t in ins)), DType.BOOL)]


def _logic_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    if same_dtype(ins) is not DType.BOOL:
        raise TypeRuleError("logical ops need bool operands")
    return _compare_infer(ins, attrs)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer):      # C semantics: truncate toward zero
        a64, b64 = a.astype(np.int64), b.astype(np.int64)     # |INT_MIN| overflows in int8..32
        q = np.abs(a64) // np.where(b64 == 0, 1, np.abs(b64))
        return np.where((a64 < 0) != (b64 < 0), -q, q).astype(a.dtype)
    return a / b


def _pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.floating):
        return np.power(a, b)
    return np.power(a.astype(np.int64), b.astype(np.int64)).astype(a.dtype)


def _binary(name: str, doc: str, fn, infer=_arith_infer):
    def ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
        out = np.asarray(fn(ins[0], ins[1]))
        return [out if infer is not _arith_infer else as_dtype(out, ins[0])]
    return define(f"nn.{name}", doc, infer, ref, 2)


add = _binary("add", "x + y, broadcasting.", np.add)
sub = _binary("sub", "x - y, broadcasting.", np.subtract)
mul = _binary("mul", "x * y, broadcasting.", np.multiply)
div = _binary("div", "x / y, broadcasting; integer division truncates toward zero.", _div)
pow_ = _binary("pow", "x ** y, broadcasting.", _pow)
minimum = _binary("min", "Elementwise minimum (NaN propagates).", np.minimum)
maximum = _binary("max", "Elementwise maximum (NaN propagates).", np.maximum)
prelu = _binary("prelu", "x if x >= 0 else slope * x (slope broadcasts to x).",
                lambda x, s: np.where(x >= 0, x, x * s))
equal = _binary("equal", "x == y.", np.equal, _compare_infer)
less = _binary("less", "x < y.", np.less, _compare_infer)
greater = _binary("greater", "x > y.", np.greater, _compare_infer)
logical_and = _binary("and", "x and y.", np.logical_and, _logic_infer)
logical_or = _binary("or", "x or y.", np.logical_or, _logic_infer)


def _mod_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    if same_dtype(ins) is DType.BOOL:
        raise TypeRuleError("mod needs numeric operands, got bool")
    return _arith_infer(ins, attrs)


def _mod_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return [as_dtype((np.fmod if a["fmod"] else np.mod)(ins[0], ins[1]), ins[0])]


mod = define("nn.mod", "x mod y, broadcasting. fmod: C's fmod, the remainder of the division truncated "
             "toward zero (its sign is x's); else Python's, of the floored division (its sign is y's, a zero "
             "result takes y's sign too). Integer x mod 0 is 0; float x mod 0 is NaN.",
             _mod_infer, _mod_ref, 2, fmod=Attr("bool", False))


def _where_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    if ins[0].dtype is not DType.BOOL:
        raise TypeRuleError("where's condition must be bool")
    dt = same_dtype(ins[1:], "where's branches")
    return [TensorType(broadcast_shapes(*(t.shape for t in ins)), dt)]


where = define("nn.where", "cond ? x : y, broadcasting.", _where_infer,
               lambda ins, a: [np.where(ins[0], ins[1], ins[2])], 3)
