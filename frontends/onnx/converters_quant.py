"""Quantized ONNX ops: QuantizeLinear / DequantizeLinear (the QDQ format), the QOperator ops
QLinearConv, QLinearMatMul and onnxruntime's QLinearAdd, QLinearGlobalAveragePool and QGemm
(com.microsoft), the integer contractions ConvInteger / MatMulInteger, and DynamicQuantizeLinear.

A QOperator op is imported as what ONNX defines it to be: dequantize its inputs, run the float op,
quantize the result (QLinearConv = Q(conv(DQ(x), DQ(w), DQ(b)))), so both formats reach the IR as
the same q.quantize / q.dequantize pairs around float ops. `compile(..., quantize="model")` then
turns those pairs into the grids the integer rewrite uses (passes/qdq.py). A dequantize of a constant
(the int8 weights) stays a q.dequantize node, so the weight grid survives until that pass reads it.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from compiler.ops import elementwise as ew
from compiler.ops import linalg, quant, reduce
from compiler.ops import shape as shape_ops
from compiler.ops import unary_math as um
from compiler.ops.quant import INT_RANGE
from compiler.types import DType
from frontends.onnx.context import ConvertContext, Operand, to_ir_dtype
from frontends.onnx.converters_nn import conv_attrs


# -- the two primitives ----------------------------------------------------------------------
def _grid(ctx: ConvertContext, scale_at: int, zp_at: int, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The constant scale and zero point operands (the zero point may be absent)."""
    scale = ctx.const_input(scale_at, f"{what} scale")
    if scale is None:
        raise ctx.invalid(f"{what} scale is missing")
    if ctx.attr("block_size", 0):
        raise ctx.unsupported("blocked quantization (block_size > 0)")
    return np.asarray(scale), ctx.const_input(zp_at, f"{what} zero point")


def _axis_of(ctx: ConvertContext, rank: int, size: int, default: int) -> int:
    """The normalized axis of a per-axis grid (ONNX's `axis` attribute, default `default`)."""
    return int(ctx.attr("axis", default)) % max(rank, 1) if size > 1 else 1


def dequantize(ctx: ConvertContext, x: Operand, scale: np.ndarray, zp: np.ndarray | None,
               axis: int) -> Operand:
    """(x - zp) * scale as a q.dequantize node, also for a constant x: the integer weights and their
    grid stay visible to passes/qdq.py (fold_constants folds the node in an ordinary compile)."""
    if scale.ndim > 1 or (zp is not None and zp.ndim > 1):
        raise ctx.unsupported("blocked quantization (a scale of rank > 1)")
    scales = tuple(float(s) for s in scale.reshape(-1))
    zps = tuple(int(z) for z in zp.reshape(-1)) if zp is not None else (0,) * len(scales)
    if len(zps) != len(scales):
        raise ctx.invalid(f"{len(scales)} scales but {len(zps)} zero points")
    attrs = dict(scale=scales, zero_point=zps, axis=axis)
    if isinstance(x, np.ndarray):
        y = ctx.graph.add1(quant.dequantize, [ctx.value(x, ctx.node_name + "_int")],
                           name=ctx.node_name, loc=ctx.loc, **quant.dequantize.complete_attrs(attrs))
    else:
        y = ctx.emit(quant.dequantize, [x], **attrs)
    out = int(ctx.attr("output_dtype", 0)) if ctx.node.op_type == "DequantizeLinear" else 0
    if out or scale.dtype == np.float16:    # the output has the scale's type, or output_dtype (23)
        dt = to_ir_dtype(out, "output_dtype", ctx.loc) if out else DType.F16
        y = ctx.emit(ew.cast, [y], to=dt) if dt is not DType.F32 else y
    return y


def quantize(ctx: ConvertContext, x: Operand, scale: np.ndarray, zp: np.ndarray | None, axis: int,
             dtype: DType) -> Operand:
    """saturate(round(x / scale) + zp) in `dtype`: one q.quantize per tensor, or the same formula
    in float ops per axis (q.quantize takes one scale)."""
    if dtype not in INT_RANGE or dtype is DType.I32:
        raise ctx.unsupported(f"quantizing to {dtype.value} (supported: int8, uint8, int16)")
    lo, hi = INT_RANGE[dtype]
    if ctx.np_dtype(x) != np.float32:
        x = ctx.emit(ew.cast, [x], to=DType.F32)
    scales = scale.astype(np.float32).reshape(-1)
    zps = zp.astype(np.int64).reshape(-1) if zp is not None else np.zeros(scales.size, np.int64)
    if scales.size == 1 and zps.size == 1:
        return ctx.emit(quant.quantize, [x], scale=float(scales[0]), zero_point=int(zps[0]),
                        dtype=dtype, qmin=lo, qmax=hi)
    shape = [1] * ctx.rank(x)
    shape[axis] = scales.size
    q = ctx.emit(um.round_, [ctx.emit(ew.div, [x, scales.reshape(shape)])])
    q = ctx.emit(ew.add, [q, zps.astype(np.float32).reshape(shape)])
    return ctx.emit(ew.cast, [ctx.emit(ew.clip, [q], min=float(lo), max=float(hi))], to=dtype)


def _out_dtype(ctx: ConvertContext, zp: np.ndarray | None) -> DType:
    """The quantized type: the zero point's, else output_dtype (opset 21), else uint8."""
    if zp is not None:
        try:
            return DType.from_numpy(zp.dtype)
        except ValueError:
            raise ctx.unsupported(f"a {zp.dtype} zero point (supported: int8, uint8, int16)") from None
    if ctx.attr("output_dtype", 0):
        return to_ir_dtype(int(ctx.attr("output_dtype")), "output_dtype", ctx.loc)
    return DType.U8


# -- QDQ --------------------------------------------------------------------------------------
def _convert_quantize_linear(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    x = ctx.input(0)
    if int(ctx.attr("precision", 0)) not in (0, onnx.TensorProto.FLOAT):
        raise ctx.unsupported("precision other than float32")
    scale, zp = _grid(ctx, 1, 2, "QuantizeLinear")
    return quantize(ctx, x, scale, zp, _axis_of(ctx, ctx.rank(x), scale.size, 1), _out_dtype(ctx, zp))


def _convert_dequantize_linear(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    x = ctx.input(0)
    scale, zp = _grid(ctx, 1, 2, "DequantizeLinear")
    return dequantize(ctx, x, scale, zp, _axis_of(ctx, ctx.rank(x), scale.size, 1))


# -- QOperator: DQ -> float op -> Q ------------------------------------------------------------
def _dq_input(ctx: ConvertContext, at: int, axis: int = 1) -> Operand:
    """Input `at` (an integer tensor with scale at+1 and zero point at+2), dequantized; a per-channel
    grid lies along `axis` (these ops have no axis attribute)."""
    x = ctx.input(at)
    scale, zp = _grid(ctx, at + 1, at + 2, f"input #{at}")
    return dequantize(ctx, x, scale, zp, axis % max(ctx.rank(x), 1) if scale.size > 1 else 1)


def _q_output(ctx: ConvertContext, y: Operand, at: int) -> Operand:
    """y quantized with the scale at input `at` and the zero point at `at`+1."""
    scale, zp = _grid(ctx, at, at + 1, "output")
    return quantize(ctx, y, scale, zp, 1, _out_dtype(ctx, zp))


def _dq_bias(ctx: ConvertContext, at: int, a_at: int, b_at: int) -> Operand:
    """A 1-D int32 bias, dequantized with scale a_scale * b_scale (per channel), zero point 0."""
    s = np.asarray(ctx.const_input(a_at, "input scale"), np.float32) * \
        np.asarray(ctx.const_input(b_at, "weight scale"), np.float32)
    return dequantize(ctx, ctx.input(at), s.reshape(-1), None, 0)


def _convert_qlinear_conv(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """QLinearConv(x, xs, xz, w, ws, wz, ys, yz[, B]) = Q(conv(DQ(x), DQ(w), DQ(B)), ys, yz)."""
    x, w = _dq_input(ctx, 0), _dq_input(ctx, 3, axis=0)
    ins = [x, w] + ([_dq_bias(ctx, 8, 1, 4)] if ctx.has_input(8) else [])
    y = ctx.emit(linalg.conv, ins, **conv_attrs(ctx, ctx.shape(x), ctx.shape(w)))
    return _q_output(ctx, y, 6)


def _convert_qlinear_matmul(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """QLinearMatMul(a, as, az, b, bs, bz, ys, yz) = Q(DQ(a) @ DQ(b)); per-row a / per-column b grids."""
    a = _dq_input(ctx, 0, axis=max(ctx.rank(ctx.input(0)) - 2, 0))
    b = _dq_input(ctx, 3, axis=-1)
    return _q_output(ctx, ctx.emit(linalg.matmul, [a, b]), 6)


def _convert_qlinear_add(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """com.microsoft.QLinearAdd(a, as, az, b, bs, bz, ys, yz) = Q(DQ(a) + DQ(b))."""
    return _q_output(ctx, ctx.emit(ew.add, [_dq_input(ctx, 0), _dq_input(ctx, 3)]), 6)


def _convert_qlinear_global_avg_pool(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """com.microsoft.QLinearGlobalAveragePool(x, xs, xz, ys, yz) = Q(mean of DQ(x) over the spatial axes)."""
    x = _dq_input(ctx, 0)
    rank = ctx.rank(x)
    axes = tuple(range(1, rank - 1)) if ctx.attr("channels_last", 0) else tuple(range(2, rank))
    return _q_output(ctx, ctx.emit(reduce.reduce_mean, [x], axes=axes, keepdims=True), 3)


def _convert_qgemm(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """com.microsoft.QGemm(a, as, az, b, bs, bz[, C int32][, ys, yz]) = [Q](alpha * A' B' + DQ(C)); no
    output grid: a float result."""
    a = _dq_input(ctx, 0)
    trans_b = bool(ctx.attr("transB", 0))
    b = _dq_input(ctx, 3, axis=0 if trans_b else 1)
    if ctx.attr("transA", 0):
        a = ctx.emit(shape_ops.transpose, [a], perm=(1, 0))
    if trans_b:
        b = ctx.emit(shape_ops.transpose, [b], perm=(1, 0))
    y = ctx.emit(linalg.matmul, [a, b])
    alpha = float(ctx.attr("alpha", 1.0))
    if alpha != 1.0:
        y = ctx.emit(ew.mul, [y, np.float32(alpha)])
    if ctx.has_input(6):
        y = ctx.emit(ew.add, [y, _dq_bias(ctx, 6, 1, 4)])
    return _q_output(ctx, y, 7) if ctx.has_input(7) else y


# -- integer contractions ----------------------------------------------------------------------
def _scalar_zp(ctx: ConvertContext, at: int, what: str) -> int:
    """A zero point that is one value (per-row / per-column zero points must all agree)."""
    zp = ctx.const_input(at, f"{what} zero point")
    if zp is None:
        return 0
    values = set(np.asarray(zp, np.int64).reshape(-1).tolist())
    if len(values) > 1:
        raise ctx.unsupported(f"{what} zero points that differ per row/column (q.matmul and q.conv take one)")
    return values.pop() if values else 0


def _convert_matmul_integer(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """MatMulInteger(a, b, az, bz) -> q.matmul(a, b; a_zero_point, b_zero_point), int32."""
    return ctx.emit(quant.matmul, [ctx.input(0), ctx.input(1)], a_zero_point=_scalar_zp(ctx, 2, "a"),
                    b_zero_point=_scalar_zp(ctx, 3, "b"))


def _convert_conv_integer(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """ConvInteger(x, w, xz, wz) -> q.conv(x, w - wz; x_zero_point), int32. q.conv has no weight zero
    point: a nonzero one (per tensor or per output channel) is subtracted from the weight, which must
    then be a constant that still fits int8."""
    x, w = ctx.input(0), ctx.input(1)
    wz = ctx.const_input(3, "w zero point")
    if wz is not None and np.any(wz):
        w = ctx.const_input(1, "a weight with a zero point")
        shifted = w.astype(np.int64) - np.asarray(wz, np.int64).reshape((-1,) + (1,) * (w.ndim - 1))
        if shifted.min() < -128 or shifted.max() > 127:
            raise ctx.unsupported("w - w_zero_point does not fit int8")
        w = shifted.astype(np.int8)
    return ctx.emit(quant.conv, [x, w], x_zero_point=_scalar_zp(ctx, 2, "x"),
                    **conv_attrs(ctx, ctx.shape(x), ctx.shape(w)))


def _convert_dynamic_quantize_linear(ctx: ConvertContext, node: onnx.NodeProto) -> list[Operand]:
    """DynamicQuantizeLinear(x) -> (y uint8, scale, zero point) from x's range [min(0, min x),
    max(0, max x)] over 255 steps, in float ops (the grid is data-dependent, so not q.quantize)."""
    x = ctx.input(0)
    axes = tuple(range(ctx.rank(x)))
    zero = np.float32(0.0)
    lo = ctx.emit(ew.minimum, [ctx.emit(reduce.reduce_min, [x], axes=axes, keepdims=False), zero])
    hi = ctx.emit(ew.maximum, [ctx.emit(reduce.reduce_max, [x], axes=axes, keepdims=False), zero])
    scale = ctx.emit(ew.div, [ctx.emit(ew.sub, [hi, lo]), np.float32(255.0)])
    zp = ctx.emit(ew.clip, [ctx.emit(um.round_, [ctx.emit(ew.div, [ctx.emit(ew.neg, [lo]), scale])])],
                  min=0.0, max=255.0)
    y = ctx.emit(ew.add, [ctx.emit(um.round_, [ctx.emit(ew.div, [x, scale])]), zp])
    y = ctx.emit(ew.cast, [ctx.emit(ew.clip, [y], min=0.0, max=255.0)], to=DType.U8)
    return [y, scale, ctx.emit(ew.cast, [zp], to=DType.U8)]


CONVERTERS: dict[str, Callable] = {
    "QuantizeLinear": _convert_quantize_linear, "DequantizeLinear": _convert_dequantize_linear,
    "QLinearConv": _convert_qlinear_conv, "QLinearMatMul": _convert_qlinear_matmul,
    "ConvInteger": _convert_conv_integer, "MatMulInteger": _convert_matmul_integer,
    "DynamicQuantizeLinear": _convert_dynamic_quantize_linear,
    "com.microsoft.QLinearAdd": _convert_qlinear_add,
    "com.microsoft.QLinearGlobalAveragePool": _convert_qlinear_global_avg_pool,
    "com.microsoft.QGemm": _convert_qgemm,
}
