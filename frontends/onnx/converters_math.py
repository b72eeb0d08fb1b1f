"""Converters for elementwise ONNX ops: arithmetic, comparisons, logic, activations, Clip, Cast,
n-ary Sum/Mean/Min/Max, Identity and Dropout."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from compiler.ops import bitwise
from compiler.ops import elementwise as ew
from compiler.ops import shape as shape_ops
from compiler.ops import unary_math as um
from compiler.ops.registry import OpDef
from compiler.types import DType
from frontends.onnx.context import ONNX_DTYPES, ConvertContext, Converter, Operand, onnx_dtype_name, to_ir_dtype

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def ir_dtype(ctx: ConvertContext, x: Operand) -> DType:
    try:
        return DType.from_numpy(ctx.np_dtype(x))
    except ValueError:
        raise ctx.unsupported(f"element type {ctx.np_dtype(x)} is not supported") from None


def _unary(op: OpDef, **defaults: float) -> Converter:
    """Unary op; `defaults` maps ONNX float attributes to their defaults (same IR names)."""
    def convert(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
        attrs = {name: float(ctx.attr(name, d)) for name, d in defaults.items()}
        return ctx.emit(op, [ctx.input(0)], **attrs)
    return convert


def _binary(op: OpDef) -> Converter:
    def convert(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
        return ctx.emit(op, [ctx.input(0), ctx.input(1)])
    return convert


def _negated(op: OpDef) -> Converter:
    """a <= b as not(a > b), a >= b as not(a < b)."""
    def convert(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
        return ctx.emit(ew.logical_not, [ctx.emit(op, [ctx.input(0), ctx.input(1)])])
    return convert


def _chain(op: OpDef) -> Converter:
    """n-ary Sum/Min/Max as a left-to-right chain of binary ops."""
    def convert(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
        acc = ctx.input(0)
        for i in range(1, ctx.num_inputs()):
            acc = ctx.emit(op, [acc, ctx.input(i)])
        return acc
    return convert


def _convert_mean(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    total = _chain(ew.add)(ctx, node)
    n = ctx.num_inputs()
    return total if n == 1 else ctx.emit(ew.mul, [total, ctx.const(1.0 / n, like=total)])


def _convert_pow(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    base, exponent = ctx.input(0), ctx.input(1)
    if ctx.np_dtype(exponent) != ctx.np_dtype(base):
        if isinstance(exponent, np.ndarray):
            exponent = exponent.astype(ctx.np_dtype(base))
        else:
            exponent = ctx.emit(ew.cast, [exponent], to=ir_dtype(ctx, base))
    return ctx.emit(ew.pow_, [base, exponent])


def _scalar(ctx: ConvertContext, i: int, what: str) -> float | None:
    arr = ctx.const_input(i, what)
    if arr is None:
        return None
    if arr.size != 1:
        raise ctx.invalid(f"{what} must be a scalar, got shape {list(arr.shape)}")
    return float(arr.reshape(-1)[0])


def _convert_clip(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    if ctx.opset < 11:
        lo = float(ctx.attr("min", -_FLOAT32_MAX))
        hi = float(ctx.attr("max", _FLOAT32_MAX))
    else:
        lo, hi = _scalar(ctx, 1, "Clip min"), _scalar(ctx, 2, "Clip max")
        lo = -np.inf if lo is None else lo
        hi = np.inf if hi is None else hi
    return ctx.emit(ew.clip, [ctx.input(0)], min=lo, max=hi)


def _convert_prelu(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    x, slope = ctx.input(0), ctx.input(1)
    xs, ss = ctx.shape(x), ctx.shape(slope)
    # A per-channel slope of shape (C,) broadcasts along axis 1 for NC... inputs (as exporters
    # intend), not along the last axis as numpy would.
    if len(ss) == 1 and len(xs) >= 3 and ss[0] == xs[1] != 1 and ss[0] != xs[-1]:
        slope = _reshape(ctx, slope, (ss[0],) + (1,) * (len(xs) - 2))
    return ctx.emit(ew.prelu, [x, slope])


def _reshape(ctx: ConvertContext, x: Operand, shape: tuple[int, ...]) -> Operand:
    return ctx.emit(shape_ops.reshape, [x], shape=shape)


def _convert_selu(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    alpha = float(ctx.attr("alpha", 1.67326319217681884765625))
    gamma = float(ctx.attr("gamma", 1.05070102214813232421875))
    y = ctx.emit(ew.elu, [ctx.input(0)], alpha=alpha)
    return ctx.emit(ew.mul, [y, ctx.const(gamma, like=y)])


def _convert_gelu(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    return ctx.emit(ew.gelu, [ctx.input(0)], approximate=ctx.attr("approximate", "none"))


def _cast_to(ctx: ConvertContext, x: Operand, elem_type: int) -> Operand:
    """Cast / CastLike to `elem_type`; `saturate` (float8 targets) and `round_mode` (float8e8m0) go to
    nn.cast. A constant cast to a type the IR lacks is done here with numpy."""
    if elem_type in ONNX_DTYPES:
        return ctx.emit(ew.cast, [x], to=ONNX_DTYPES[elem_type], saturate=bool(ctx.attr("saturate", 1)),
                        round_mode=ctx.attr("round_mode", "up"))
    if isinstance(x, np.ndarray) and elem_type != onnx.TensorProto.STRING:
        try:
            np_type = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
        except KeyError:
            raise ctx.unsupported(f"cast to {onnx_dtype_name(elem_type)}") from None
        if np_type.kind == "b":
            return x != 0
        if np_type.kind in "iu" and x.dtype.kind == "f":
            x = np.trunc(x)
        return x.astype(np_type)
    dtype = to_ir_dtype(elem_type, f"{ctx.node.op_type} target", ctx.loc)
    return ctx.emit(ew.cast, [x], to=dtype)


def _convert_cast(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    return _cast_to(ctx, ctx.input(0), int(ctx.attr("to")))


def _convert_cast_like(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    target = onnx.helper.np_dtype_to_tensor_dtype(ctx.np_dtype(ctx.input(1)))
    return _cast_to(ctx, ctx.input(0), target)


def _convert_identity(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    return ctx.emit(ew.identity, [ctx.input(0)])


def _convert_dropout(ctx: ConvertContext, node: onnx.NodeProto) -> list[Operand]:
    """Inference: y = x and an all-true mask (Dropout-7's mask: ones in the type of x)."""
    training = ctx.const_input(2, "training_mode") if ctx.opset >= 12 else None
    if training is not None and bool(training.reshape(-1)[0]):
        raise ctx.unsupported("training_mode=True is not supported (inference only)")
    x = ctx.input(0)
    mask = np.ones(ctx.shape(x), bool if ctx.opset >= 10 else ctx.np_dtype(x))
    return [ctx.emit(ew.identity, [x]), ctx.const(mask)]


def _convert_where(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    return ctx.emit(ew.where, [ctx.input(0), ctx.input(1), ctx.input(2)])


def _convert_sign(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """sign(x) = where(x > 0, 1, where(x < 0, -1, 0))."""
    x = ctx.input(0)
    zero, one = ctx.const(0, like=x), ctx.const(1, like=x)
    neg = ctx.emit(ew.where, [ctx.emit(ew.less, [x, zero]), ctx.const(-1, like=x), zero])
    return ctx.emit(ew.where, [ctx.emit(ew.greater, [x, zero]), one, neg])


def _convert_is_inf(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    return ctx.emit(um.isinf, [ctx.input(0)], detect_positive=bool(ctx.attr("detect_positive", 1)),
                    detect_negative=bool(ctx.attr("detect_negative", 1)))


def _convert_bit_shift(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    direction = ctx.attr("direction")
    if direction not in ("LEFT", "RIGHT"):
        raise ctx.invalid(f"direction {direction!r} (expected LEFT or RIGHT)")
    return ctx.emit(bitwise.bit_shift, [ctx.input(0), ctx.input(1)], direction=direction.lower())


def _convert_xor(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """a xor b = (a or b) and not (a and b), on bools."""
    a, b = ctx.input(0), ctx.input(1)
    both = ctx.emit(ew.logical_and, [a, b])
    return ctx.emit(ew.logical_and, [ctx.emit(ew.logical_or, [a, b]), ctx.emit(ew.logical_not, [both])])


def _convert_mod(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """fmod=1: C fmod (the sign of the dividend); fmod=0: the sign of the divisor, as Python's %."""
    return ctx.emit(ew.mod, [ctx.input(0), ctx.input(1)], fmod=bool(ctx.attr("fmod", 0)))


_UNARY: dict[str, OpDef] = {
    "Relu": ew.relu, "Sigmoid": ew.sigmoid, "Tanh": ew.tanh, "Exp": ew.exp, "Log": ew.log,
    "Sqrt": ew.sqrt, "Reciprocal": ew.reciprocal, "Neg": ew.neg, "Abs": ew.abs_, "Erf": ew.erf,
    "Floor": ew.floor, "Ceil": ew.ceil, "Softplus": ew.softplus, "HardSwish": ew.hard_swish,
    "Not": ew.logical_not, "Sin": um.sin, "Cos": um.cos, "Tan": um.tan, "Asin": um.asin,
    "Acos": um.acos, "Atan": um.atan, "Sinh": um.sinh, "Cosh": um.cosh, "Asinh": um.asinh,
    "Acosh": um.acosh, "Atanh": um.atanh, "Round": um.round_, "IsNaN": um.isnan,
    "BitwiseNot": bitwise.bitwise_not,
}
_BINARY: dict[str, OpDef] = {
    "Add": ew.add, "Sub": ew.sub, "Mul": ew.mul, "Div": ew.div, "Equal": ew.equal,
    "Less": ew.less, "Greater": ew.greater, "And": ew.logical_and, "Or": ew.logical_or,
    "BitwiseAnd": bitwise.bitwise_and, "BitwiseOr": bitwise.bitwise_or,
    "BitwiseXor": bitwise.bitwise_xor,
}

CONVERTERS: dict[str, Callable] = {
    **{name: _unary(op) for name, op in _UNARY.items()},
    **{name: _binary(op) for name, op in _BINARY.items()},
    "LessOrEqual": _negated(ew.greater), "GreaterOrEqual": _negated(ew.less),
    "LeakyRelu": _unary(ew.leaky_relu, alpha=0.01), "Elu": _unary(ew.elu, alpha=1.0),
    "HardSigmoid": _unary(ew.hard_sigmoid, alpha=0.2, beta=0.5),
    "Selu": _convert_selu, "Gelu": _convert_gelu, "PRelu": _convert_prelu, "Clip": _convert_clip,
    "Pow": _convert_pow, "Sum": _chain(ew.add), "Min": _chain(ew.minimum),
    "Max": _chain(ew.maximum), "Mean": _convert_mean, "Where": _convert_where,
    "Cast": _convert_cast, "CastLike": _convert_cast_like, "Identity": _convert_identity,
    "Dropout": _convert_dropout, "Sign": _convert_sign, "Mod": _convert_mod,
    "IsInf": _convert_is_inf, "BitShift": _convert_bit_shift, "Xor": _convert_xor,
}
