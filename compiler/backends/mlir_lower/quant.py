"""The integer ops of quantized graphs, bit-exact with compiler/ops/quant.py.

- q.quantize:   divf by the float32 scale (never a reciprocal multiply), math.roundeven (ties to
                even = numpy rint), clamp to [qmin - zp, qmax - zp] in f32 (exact small integers),
                fptosi, + zp, trunci.
- q.dequantize: (extsi/extui to i64 - zp) -> sitofp f32 -> mulf scale (per tensor or per channel).
- q.requant:    arith in i64: ext, subi in_zp, muli m, addi 2^(c-1) (0 when c = 0), shrsi c, addi
                zp, maxsi/minsi clamp, trunci. m, c, rounding term per channel are i64 constants
                broadcast along `axis`. tosa.rescale is not used: it requires shift >= 2 (the rule
                allows c = 0 and 1) and an int32 multiply by an i32 input zero point.
- q.conv / q.matmul: int8 operands (and int16 ones, zero point 0) go straight into linalg conv/matmul
                with an i32 accumulator (sign-extending default cast); a nonzero zero point or a uint8 operand is first
                widened (i16; i32 on cuda) with the zero point subtracted (so padding contributes exactly 0).
                int32 wraps as the reference's int64 -> int32 cast does.
- q.table:      linalg.generic + tensor.extract at index(x) - min(dtype).
- q.resize_linear: linalg.generic over the output reading the reference's i32 index / weight tables
                (q.resize_linear_tables) along H and W, 4 tensor.extract taps, (ext(x) - zp) * wy * wx summed
                in i32, + 2^(2F-1), shrsi 2F, + zp, clamp, trunci.
"""
from __future__ import annotations

import numpy as np
from iree.compiler import ir
from iree.compiler.dialects import arith, linalg, math, tensor

from compiler.backends.mlir_lower import mfree
from compiler.backends.mlir_lower.linalg import conv, conv_bias, matmul
from compiler.backends.mlir_lower.registry import (
    PAR,
    LowerCtx,
    amap,
    elem_type,
    generic,
    is_unsigned,
    lowers,
    scalar,
    shape_of,
)
from compiler.diagnostics import Unsupported
from compiler.ir import Node
from compiler.ops import quant as q
from compiler.ops._util import norm_axis
from compiler.types import DType

I64 = DType.I64


def _per_axis(ctx: LowerCtx, values, rank: int, axis: int, dt: DType) -> ir.Value | None:
    """A per-channel constant shaped to broadcast along axis, or None for one value."""
    arr = np.asarray(values, dtype=dt.numpy)
    if arr.size == 1:
        return None
    shape = [1] * rank
    shape[norm_axis(axis, rank)] = arr.size
    return ctx.const(arr.reshape(shape), dt)


@lowers(q.quantize)
def _quantize(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    a = node.attrs
    t = node.outputs[0].type
    et = elem_type(t.dtype)
    zp, lo, hi = a["zero_point"], a["qmin"] - a["zero_point"], a["qmax"] - a["zero_point"]
    scale = float(np.float32(a["scale"]))

    def body(x):
        i32 = ir.IntegerType.get_signless(32)
        r = math.roundeven(arith.divf(x, scalar(scale, x.type)))
        r = arith.minimumf(arith.maximumf(r, scalar(float(lo), x.type)), scalar(float(hi), x.type))
        v = arith.addi(arith.fptosi(i32, r), scalar(zp, i32))
        return v if ir.IntegerType(et).width == 32 else arith.trunci(et, v)
    return [ctx.ewise(args, t.shape, et, body)]


def _to_i64(v: ir.Value, dt: DType) -> ir.Value:
    i64 = ir.IntegerType.get_signless(64)
    if ir.IntegerType(v.type).width == 64:
        return v
    return arith.extui(i64, v) if is_unsigned(dt) else arith.extsi(i64, v)


@lowers(q.dequantize)
def _dequantize(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    a, t = node.attrs, node.inputs[0].type
    f32 = ir.F32Type.get()
    s_c = _per_axis(ctx, a["scale"], t.rank, a["axis"], DType.F32)
    z_c = _per_axis(ctx, a["zero_point"], t.rank, a["axis"], I64)
    ins, s0, z0 = [args[0]], float(np.float32(a["scale"][0])), int(a["zero_point"][0])
    ins += [c for c in (s_c, z_c) if c is not None]

    def body(x, *rest):
        rest = list(rest)
        s = rest.pop(0) if s_c is not None else scalar(s0, f32)
        z = rest.pop(0) if z_c is not None else scalar(z0, ir.IntegerType.get_signless(64))
        return arith.mulf(arith.sitofp(f32, arith.subi(_to_i64(x, t.dtype), z)), s)
    return [ctx.ewise(ins, t.shape, f32, body)]


def requant_scalar(x: ir.Value, dt: DType, m: ir.Value, c: ir.Value, rnd: ir.Value, in_zp: int, zp: int,
                   qmin: int, qmax: int, out_et: ir.Type) -> ir.Value:
    """The one rounding rule on one element: clamp(((x - in_zp) * m + rnd) >> c + zp)."""
    i64 = ir.IntegerType.get_signless(64)
    v = _to_i64(x, dt)
    if in_zp:
        v = arith.subi(v, scalar(in_zp, i64))
    v = arith.shrsi(arith.addi(arith.muli(v, m), rnd), c)
    if zp:
        v = arith.addi(v, scalar(zp, i64))
    v = arith.minsi(arith.maxsi(v, scalar(qmin, i64)), scalar(qmax, i64))
    return v if ir.IntegerType(out_et).width == 64 else arith.trunci(out_et, v)


@lowers(q.requant)
def _requant(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    a, t = node.attrs, node.inputs[0].type
    out = node.outputs[0].type
    out_et = elem_type(out.dtype)
    i64 = ir.IntegerType.get_signless(64)
    m = np.asarray(a["multiplier"], np.int64)
    c = np.asarray(a["shift"], np.int64)
    rnd = np.where(c > 0, np.left_shift(np.int64(1), np.maximum(c - 1, 0)), 0).astype(np.int64)
    consts = [_per_axis(ctx, v, t.rank, a["axis"], I64) for v in (m, c, rnd)]
    ins = [args[0]] + [k for k in consts if k is not None]

    def body(x, *rest):
        rest = list(rest)
        vals = [rest.pop(0) if k is not None else scalar(int(v[0]), i64)
                for k, v in zip(consts, (m, c, rnd))]
        return requant_scalar(x, t.dtype, *vals, a["in_zero_point"], a["zero_point"], a["qmin"], a["qmax"],
                              out_et)
    return [ctx.ewise(ins, t.shape, out_et, body)]


@lowers(q.table)
def _table(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    x, t = args
    xt = node.inputs[0].type
    lo = int(np.iinfo(xt.dtype.numpy).min)
    idx_t = ir.IndexType.get()

    def body(v):
        i = arith.index_cast(idx_t, arith.extui(ir.IntegerType.get_signless(32), v) if is_unsigned(xt.dtype)
                             else arith.extsi(ir.IntegerType.get_signless(32), v))
        return tensor.ExtractOp(t, [arith.subi(i, arith.ConstantOp(idx_t, lo).result)]).result
    return [ctx.ewise([x], xt.shape, elem_type(node.outputs[0].type.dtype), body)]


def _width(ctx: LowerCtx) -> int:
    """The width a widened operand gets: i16 on the CPU; i32 on cuda, where IREE 3.13 folds an i8 -> i16
    widening into the contraction and then fails to verify it for some shapes (a 1x1 conv of 40 channels:
    "'vector.contract' op failed to verify that lhs and rhs have same element type")."""
    return 32 if ctx.target.kind == "cuda" else 16


def _operand(ctx: LowerCtx, v: ir.Value, dt: DType, zp: int, widen: bool = False) -> ir.Value:
    """An integer operand ready for a signed multiply: i8 as is when signed with zero point 0
    (and not `widen`), else widened (`_width`) with the zero point subtracted. An int16 activation (the
    layers QuantConfig.keep_16bit keeps wide: symmetric, zero point 0) goes in as it is where i16 is the width."""
    bits = _width(ctx)
    if zp == 0 and not is_unsigned(dt) and (not widen or (dt is DType.I16 and bits == 16)):
        return v
    if dt is DType.I16 and zp:
        raise Unsupported("q.conv / q.matmul of an int16 operand with a nonzero zero point (i16 - zp can "
                          "leave i16)")
    it = ir.IntegerType.get_signless(bits)

    def body(x):
        w = arith.extui(it, x) if is_unsigned(dt) else arith.extsi(it, x)
        return arith.subi(w, scalar(zp, it)) if zp else w
    return ctx.ewise([v], shape_of(v), it, body)


def _wide(v: ir.Value) -> bool:
    """Both operands get one width: IREE 3.13 miscompiles an i16 x i8 -> i32 convolution."""
    return ir.IntegerType(ir.RankedTensorType(v.type).element_type).width > 8


@lowers(q.matmul)
def _qmatmul(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    if mfree.is_shift_realized(node):           # power-of-two weights as shifts and adds
        return mfree.shift_matmul(ctx, node, args)
    a = node.attrs
    x = _operand(ctx, args[0], node.inputs[0].type.dtype, a["a_zero_point"])
    w = _operand(ctx, args[1], node.inputs[1].type.dtype, a["b_zero_point"], _wide(x))
    w = ctx.unfolded(w, node.inputs[1]) if w is not args[1] else w
    x = _operand(ctx, x, node.inputs[0].type.dtype, 0, _wide(w)) if x is args[0] else x
    t = node.outputs[0].type
    return [matmul(ctx, x, w, t.shape, elem_type(t.dtype))]


@lowers(q.conv)
def _qconv(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    if mfree.is_shift_realized(node):
        return mfree.shift_conv(ctx, node, args)
    a = node.attrs
    x = _operand(ctx, args[0], node.inputs[0].type.dtype, a["x_zero_point"])
    w = _operand(ctx, args[1], node.inputs[1].type.dtype, 0, _wide(x))
    w = ctx.unfolded(w, node.inputs[1]) if w is not args[1] else w
    x = _operand(ctx, x, node.inputs[0].type.dtype, 0, _wide(w)) if x is args[0] else x
    bias = conv_bias(ctx, node, args)
    t = node.outputs[0].type
    return [conv(ctx, x, w, bias, t.shape, elem_type(t.dtype), a["strides"], a["pads"], a["dilations"],
                 a["groups"])]


@lowers(q.resize_linear)
def _resize_linear(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    a, dt = node.attrs, node.inputs[0].type.dtype
    x, out = args[0], node.outputs[0].type.shape
    i32, idx_t = ir.IntegerType.get_signless(32), ir.IndexType.get()
    (iy, wy), (ix, wx) = q.resize_linear_tables(shape_of(x)[2:], a)
    tabs = [ctx.const(np.ascontiguousarray(t[:, k]), DType.I32) for t in (iy, wy, ix, wx) for k in range(2)]
    lo, hi = q.INT_RANGE[dt]
    sh = 2 * a["frac_bits"]

    def body(iy0, iy1, wy0, wy1, ix0, ix1, wx0, wx1, _out):
        n, c = linalg.IndexOp(0).result, linalg.IndexOp(1).result
        acc = None
        for iy, wy in ((iy0, wy0), (iy1, wy1)):
            for ix, wx in ((ix0, wx0), (ix1, wx1)):
                v = tensor.ExtractOp(x, [n, c, arith.index_cast(idx_t, iy), arith.index_cast(idx_t, ix)]).result
                v = arith.extui(i32, v) if is_unsigned(dt) else arith.extsi(i32, v)
                t = arith.muli(arith.subi(v, scalar(a["zero_point"], i32)), arith.muli(wy, wx))
                acc = t if acc is None else arith.addi(acc, t)
        y = arith.shrsi(arith.addi(acc, scalar(1 << (sh - 1), i32)), scalar(sh, i32))
        y = arith.addi(y, scalar(a["zero_point"], i32))
        y = arith.minsi(arith.maxsi(y, scalar(lo, i32)), scalar(hi, i32))
        return arith.trunci(elem_type(dt), y)
    maps = [amap(4, [2])] * 4 + [amap(4, [3])] * 4 + [amap(4, range(4))]
    return [generic(tabs, [ctx.empty(out, elem_type(dt))], maps, [PAR] * 4, body)[0]]
