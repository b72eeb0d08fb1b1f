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

import ml_dtypes
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
# q.quantize / q.dequantize carry the int8 / uint8 / int16 (and int4) grids passes/qdq.py turns into
# integer code; every other quantization (uint16, uint4, int2, uint2, float8, float4, blocked grids,
# run-time scales) is imported as the float ops ONNX's formula is made of.
Q_OP_TYPES = (DType.I8, DType.U8, DType.I16, DType.I4)
QUANT_TYPES = (DType.I8, DType.U8, DType.I16, DType.U16, DType.I4, DType.U4, DType.I2, DType.U2,
               DType.F8E4M3FN, DType.F8E4M3FNUZ, DType.F8E5M2, DType.F8E5M2FNUZ, DType.F4E2M1)


def _grid(ctx: ConvertContext, scale_at: int, zp_at: int, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The constant scale and zero point operands (the zero point may be absent)."""
    scale = ctx.const_input(scale_at, f"{what} scale")
    if scale is None:
        raise ctx.invalid(f"{what} scale is missing")
    return np.asarray(scale), ctx.const_input(zp_at, f"{what} zero point")


def _axis_of(ctx: ConvertContext, rank: int, size: int, default: int) -> int:
    """The normalized axis of a per-axis grid (ONNX's `axis` attribute, default `default`)."""
    return int(ctx.attr("axis", default)) % max(rank, 1) if size > 1 else 1


def _size(ctx: ConvertContext, a: Operand) -> int:
    return int(np.prod(ctx.shape(a), dtype=np.int64))


def _ir_dtype(ctx: ConvertContext, a: Operand) -> DType:
    try:
        return DType.from_numpy(ctx.np_dtype(a))
    except ValueError:
        raise ctx.unsupported(f"element type {ctx.np_dtype(a)} is not supported") from None


def _is_vector(a: Operand | None) -> bool:
    """A constant per-tensor or per-axis grid (what q.quantize / q.dequantize take), or no zero point."""
    return a is None or (isinstance(a, np.ndarray) and a.ndim <= 1)


def _along(ctx: ConvertContext, a: Operand, axis: int, rank: int) -> Operand:
    """A scale or zero point shaped to broadcast against the rank-`rank` input: one value as a scalar,
    a vector along `axis`, a blocked grid (already x's shape) as it is."""
    shape = ctx.shape(a)
    if len(shape) > 1:
        return a
    target: tuple[int, ...] = ()
    if _size(ctx, a) > 1:
        target = tuple(-1 if i == axis else 1 for i in range(rank))
        target = tuple(_size(ctx, a) if d < 0 else d for d in target)
    if shape == target:
        return a
    return ctx.emit(shape_ops.reshape, [a], shape=target)


def _as(ctx: ConvertContext, a: Operand, dtype: DType) -> Operand:
    """`a` in `dtype` (a constant converted here, a run-time value through nn.cast)."""
    if ctx.np_dtype(a) == dtype.numpy:
        return a
    return ctx.emit(ew.cast, [a], to=dtype)


def expand_blocks(ctx: ConvertContext, a: np.ndarray | None, shape: tuple[int, ...], axis: int,
                  block: int) -> np.ndarray | None:
    """A blocked grid (block_size > 0) at x's shape: each scale or zero point repeated `block` times
    along `axis`, the last block cut to x's extent (onnx.reference's reshape_input)."""
    if a is None:
        return None
    blocks = a.shape[axis] if a.ndim == len(shape) else 0
    if a.shape[:axis] + a.shape[axis + 1:] != tuple(shape[:axis]) + tuple(shape[axis + 1:]) or \
            not (blocks - 1) * block < shape[axis] <= blocks * block:
        raise ctx.invalid(f"block_size {block} does not fit a grid of shape {list(a.shape)} to an input of "
                          f"shape {list(shape)} along axis {axis}")
    return np.repeat(a, block, axis=axis).take(range(shape[axis]), axis=axis)


def dequantize(ctx: ConvertContext, x: Operand, scale: Operand, zp: Operand | None, axis: int) -> Operand:
    """(x - zp) * scale: a q.dequantize node for an int8 / uint8 / int16 / int4 / int32 x with a constant
    per-tensor or per-axis grid, also for a constant x (the integer weights and their grid stay visible to
    passes/qdq.py; fold_constants folds the node in an ordinary compile); float ops otherwise. A float8 /
    float4 x ignores its zero point, as onnx.reference does (it must be 0)."""
    xdt = _ir_dtype(ctx, x)
    if xdt in (*quant.ACTIVATION_TYPES, DType.I32) and _is_vector(scale) and _is_vector(zp):
        y = _dequantize_node(ctx, x, scale, zp, axis)
    elif xdt.is_int or xdt.is_narrow_float:
        rank = ctx.rank(x)
        y = _as(ctx, x, DType.F32)
        if zp is not None and xdt.is_int:
            y = ctx.emit(ew.sub, [y, _as(ctx, _along(ctx, zp, axis, rank), DType.F32)])
        y = ctx.emit(ew.mul, [y, _as(ctx, _along(ctx, scale, axis, rank), DType.F32)])
    else:
        raise ctx.unsupported(f"dequantizing {xdt.value} (supported: {', '.join(d.value for d in QUANT_TYPES)}, "
                              "int32)")
    out = int(ctx.attr("output_dtype", 0)) if ctx.node.op_type == "DequantizeLinear" else 0
    dt = to_ir_dtype(out, "output_dtype", ctx.loc) if out else _ir_dtype(ctx, scale)   # (23) or the scale's
    return _as(ctx, y, dt)


def _dequantize_node(ctx: ConvertContext, x: Operand, scale: np.ndarray, zp: np.ndarray | None,
                     axis: int) -> Operand:
    """q.dequantize(x) with a constant per-tensor or per-axis grid (float32)."""
    scales = tuple(float(s) for s in scale.reshape(-1))
    zps = tuple(int(z) for z in zp.reshape(-1)) if zp is not None else (0,) * len(scales)
    if len(zps) != len(scales):
        raise ctx.invalid(f"{len(scales)} scales but {len(zps)} zero points")
    attrs = dict(scale=scales, zero_point=zps, axis=axis)
    if isinstance(x, np.ndarray):
        return ctx.graph.add1(quant.dequantize, [ctx.value(x, ctx.node_name + "_int")],
                              name=ctx.node_name, loc=ctx.loc, **quant.dequantize.complete_attrs(attrs))
    return ctx.emit(quant.dequantize, [x], **attrs)


def quantize(ctx: ConvertContext, x: Operand, scale: Operand, zp: Operand | None, axis: int,
             dtype: DType, saturate: bool = True, precision: DType | None = None) -> Operand:
    """saturate(round(x / scale) + zp) in `dtype`: one q.quantize for an int8 / uint8 / int16 / int4
    result on a constant per-tensor grid, the same formula in float ops otherwise. x / scale is
    computed in `precision`, by default in numpy's promotion of their types (onnx.reference). A float8
    result is nn.cast(x / scale, saturate) (its zero point is ignored: it must be 0), a float4 one
    nn.cast(x / scale + zp)."""
    if dtype not in QUANT_TYPES:
        raise ctx.unsupported(f"quantizing to {dtype.value} (supported: {', '.join(d.value for d in QUANT_TYPES)})")
    div_dt = precision or DType.from_numpy(np.result_type(ctx.np_dtype(x), ctx.np_dtype(scale)))
    if not div_dt.is_float:
        raise ctx.unsupported(f"x / scale in {div_dt.value}")
    x = _as(ctx, x, div_dt)
    per_tensor = _is_vector(scale) and _size(ctx, scale) == 1 and (zp is None or _size(ctx, zp) == 1)
    if dtype in Q_OP_TYPES and div_dt is DType.F32 and per_tensor and _is_vector(zp):
        lo, hi = INT_RANGE[dtype]
        return ctx.emit(quant.quantize, [x], scale=float(np.float32(scale.reshape(-1)[0])),
                        zero_point=int(zp.reshape(-1)[0]) if zp is not None else 0, dtype=dtype, qmin=lo, qmax=hi)
    rank = ctx.rank(x)
    q = ctx.emit(ew.div, [x, _as(ctx, _along(ctx, scale, axis, rank), div_dt)])
    if dtype.is_narrow_float:
        if dtype is DType.F4E2M1 and zp is not None:
            q = ctx.emit(ew.add, [q, _as(ctx, _along(ctx, zp, axis, rank), div_dt)])
        return ctx.emit(ew.cast, [q], to=dtype, saturate=saturate)
    if div_dt not in (DType.F32, DType.F64):
        q = _as(ctx, q, DType.F32)         # exact: rounds as in div_dt
    q = ctx.emit(um.round_, [q])
    if zp is not None:
        q = ctx.emit(ew.add, [q, _as(ctx, _along(ctx, zp, axis, rank), _ir_dtype(ctx, q))])
    info = ml_dtypes.iinfo(dtype.numpy)
    return ctx.emit(ew.cast, [ctx.emit(ew.clip, [q], min=float(info.min), max=float(info.max))], to=dtype)


def _out_dtype(ctx: ConvertContext, zp: Operand | None) -> DType:
    """The quantized type: the zero point's, else output_dtype (opset 21), else uint8."""
    if zp is not None:
        return _ir_dtype(ctx, zp)
    if ctx.attr("output_dtype", 0):
        return to_ir_dtype(int(ctx.attr("output_dtype")), "output_dtype", ctx.loc)
    return DType.U8


# -- QDQ --------------------------------------------------------------------------------------
def _qdq_grid(ctx: ConvertContext, x: Operand) -> tuple[Operand, Operand | None, int]:
    """QuantizeLinear / DequantizeLinear's scale and zero point (inputs 1 and 2, constants or run-time
    values) and the normalized axis; a blocked grid (block_size > 0) is expanded to x's shape."""
    block = int(ctx.attr("block_size", 0))
    if block:
        axis = int(ctx.attr("axis", 1)) % max(ctx.rank(x), 1)
        return (expand_blocks(ctx, ctx.const_input(1, "a blocked scale"), ctx.shape(x), axis, block),
                expand_blocks(ctx, ctx.const_input(2, "a blocked zero point"), ctx.shape(x), axis, block), axis)
    scale, zp = ctx.input(1), ctx.optional_input(2)
    if len(ctx.shape(scale)) > 1 or (zp is not None and len(ctx.shape(zp)) > 1):
        raise ctx.invalid("a scale or zero point of rank > 1 needs block_size > 0")
    return scale, zp, _axis_of(ctx, ctx.rank(x), _size(ctx, scale), 1)


def _convert_quantize_linear(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    x = ctx.input(0)
    precision = int(ctx.attr("precision", 0))
    scale, zp, axis = _qdq_grid(ctx, x)
    return quantize(ctx, x, scale, zp, axis, _out_dtype(ctx, zp), bool(ctx.attr("saturate", 1)),
                    to_ir_dtype(precision, "precision", ctx.loc) if precision else None)


def _convert_dequantize_linear(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    x = ctx.input(0)
    scale, zp, axis = _qdq_grid(ctx, x)
    return dequantize(ctx, x, scale, zp, axis)


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
