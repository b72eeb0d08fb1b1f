"""Lowerings of the quantized op set (dialect `q`): bit-exact with compiler/ops/quant.py.

* quantize: TE; x / scale in float32 (a true division, never a reciprocal multiply), then
  `nearbyint` (LLVM's llvm.nearbyint under the default rounding mode: ties to even, like
  numpy.rint; `round` would round ties away from zero), clamp, + zero point.
* dequantize: (int64(q) - zp) -> float32 (round to nearest, like numpy) * scale, per tensor or
  per channel along `axis`.
* requant: TE in int64: ((x - in_zp) * m + rnd) >> c with an arithmetic shift, rnd = 2^(c-1) or 0
  when c == 0; per-channel m / c / rnd are compile-time constant vectors read along `axis`.
* table: TE gather, table[int32(x) - min(dtype)].
* conv / matmul: x - zero point in int32, then Relax's int32 conv{1,2,3}d / matmul (padding
  with 0 after the subtraction = padding the input with its zero point), + int32 bias; all
  wrap modulo 2^32 exactly like the reference's int64 -> int32 cast. On cuda a 2-D conv and a
  matmul by a constant int8 weight are int8 implicit GEMMs instead (tvm_lower/cuda_gemm.py).
* resize_linear: TE; the reference's own int32 index / weight tables (q.resize_linear_tables) baked in as
  constants, the 4-tap sum of (int32(x) - zp) * (wy * wx) in int32 (it cannot overflow, see the op), then
  + 2^(2F-1), an arithmetic >> 2F, + zp and the clamp.
"""
from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx

from compiler.backends.tvm_lower import cuda_gemm
from compiler.backends.tvm_lower.registry import LowerCtx, const, dtype_of, lowers, shape_of, tvm_dtype
from compiler.ir import Node
from compiler.ops import quant as q

R = relax.op


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _quantize_te(x: te.Tensor, scale: float, zp: int, qmin: int, qmax: int, out_dtype: str) -> te.Tensor:
    s = tirx.const(np.float32(scale), "float32")
    # |r| beyond 2^40 clips the same way as 2^40 does (qmin/qmax/zp are far smaller)
    big = tirx.const(2.0 ** 40, "float64")

    def body(*i):
        r = tirx.nearbyint(x[i] / s).astype("float64")
        r = tirx.max(tirx.min(r, big), -big).astype("int64") + tirx.const(zp, "int64")
        r = tirx.max(tirx.min(r, tirx.const(qmax, "int64")), tirx.const(qmin, "int64"))
        return r.astype(out_dtype)
    return te.compute(x.shape, body, name="quantize")


@lowers(q.quantize)
def _quantize(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    a = node.attrs
    return [ctx.emit_te(_quantize_te, args[0], a["scale"], a["zero_point"], a["qmin"], a["qmax"],
                        tvm_dtype(a["dtype"]), name="quantize")]


def _dequantize_te(x: te.Tensor, scale: te.Tensor | None, zp: te.Tensor | None, s0: float, z0: int,
                   axis: int) -> te.Tensor:
    def body(*i):
        z = zp[i[axis]] if zp is not None else tirx.const(z0, "int64")
        s = scale[i[axis]] if scale is not None else tirx.const(np.float32(s0), "float32")
        return (x[i].astype("int64") - z).astype("float32") * s
    return te.compute(x.shape, body, name="dequantize")


@lowers(q.dequantize)
def _dequantize(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    a = node.attrs
    x = args[0]
    rank = len(shape_of(x))
    scales, zps = list(a["scale"]), list(a["zero_point"])
    axis = _axis(a["axis"], rank) if rank else 0
    if len(scales) > 1:
        s = const(np.asarray(scales, np.float32), "float32")
        z = const(np.asarray(zps, np.int64), "int64")
        return [ctx.emit_te(_dequantize_te, x, s, z, 0.0, 0, axis, name="dequantize")]
    return [ctx.emit_te(_dequantize_te, x, None, None, scales[0], zps[0], axis, name="dequantize")]


def requant_expr(v, m, c, rnd, in_zp: int, out_zp: int, qmin: int, qmax: int):
    """The dyadic rule on a TIR scalar `v` (any int type); m, c, rnd int64 TIR scalars.
    Returns an int64 value in [qmin, qmax]."""
    y = ((v.astype("int64") - tirx.const(in_zp, "int64")) * m + rnd) >> c
    y = y + tirx.const(out_zp, "int64")
    return tirx.max(tirx.min(y, tirx.const(qmax, "int64")), tirx.const(qmin, "int64"))


def requant_params(multiplier, shift) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(m, c, rnd) as int64 vectors; rnd = 2^(c-1), or 0 where c == 0."""
    m = np.asarray(multiplier, np.int64).reshape(-1)
    c = np.asarray(shift, np.int64).reshape(-1)
    rnd = np.where(c > 0, np.left_shift(np.int64(1), np.maximum(c - 1, 0)), 0).astype(np.int64)
    return m, c, rnd


def _requant_te(x: te.Tensor, mcr: te.Tensor | None, m0: int, c0: int, in_zp: int, out_zp: int,
                qmin: int, qmax: int, axis: int, out_dtype: str) -> te.Tensor:
    def body(*i):
        if mcr is not None:
            ch = i[axis]
            m, c, rnd = mcr[0, ch], mcr[1, ch], mcr[2, ch]
        else:
            rnd0 = (1 << (c0 - 1)) if c0 > 0 else 0
            m, c, rnd = (tirx.const(v, "int64") for v in (m0, c0, rnd0))
        return requant_expr(x[i], m, c, rnd, in_zp, out_zp, qmin, qmax).astype(out_dtype)
    return te.compute(x.shape, body, name="requant")


@lowers(q.requant)
def _requant(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    a = node.attrs
    x = args[0]
    rank = len(shape_of(x))
    m, c, rnd = requant_params(a["multiplier"], a["shift"])
    out = tvm_dtype(a["dtype"])
    common = (a["in_zero_point"], a["zero_point"], a["qmin"], a["qmax"])
    if m.size > 1:
        mcr = const(np.stack([m, c, rnd]), "int64")
        return [ctx.emit_te(_requant_te, x, mcr, 0, 0, *common, _axis(a["axis"], rank), out,
                            name="requant")]
    return [ctx.emit_te(_requant_te, x, None, int(m[0]), int(c[0]), *common, 0, out, name="requant")]


def _table_te(x: te.Tensor, t: te.Tensor, lo: int) -> te.Tensor:
    return te.compute(x.shape, lambda *i: t[x[i].astype("int32") - tirx.const(lo, "int32")], name="table")


@lowers(q.table)
def _table(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    lo = int(np.iinfo(node.inputs[0].type.dtype.numpy).min)
    return [ctx.emit_te(_table_te, args[0], args[1], lo, name="table")]


def _minus_zp(ctx: LowerCtx, x: relax.Expr, zp: int) -> relax.Expr:
    x = ctx.emit(R.astype(x, "int32"))
    if zp:
        x = ctx.emit(R.subtract(x, const(zp, "int32")))
    return x


_CONV = {1: (R.nn.conv1d, "NCW", "OIW"), 2: (R.nn.conv2d, "NCHW", "OIHW"),
         3: (R.nn.conv3d, "NCDHW", "OIDHW")}


@lowers(q.conv)
def _conv(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    if ctx.target.kind == "cuda" and (y := cuda_gemm.conv(ctx, node, args)) is not None:
        return [y]
    a = node.attrs
    x = _minus_zp(ctx, args[0], a["x_zero_point"])
    w = ctx.emit(R.astype(args[1], "int32"))
    nsp = len(shape_of(x)) - 2
    fn, dl, kl = _CONV[nsp]
    y = ctx.emit(fn(x, w, strides=list(a["strides"]), padding=list(a["pads"]),
                    dilation=list(a["dilations"]), groups=a["groups"], data_layout=dl,
                    kernel_layout=kl, out_dtype="int32"))
    if len(args) > 2:
        co = shape_of(args[1])[0]
        y = R.add(y, ctx.emit(R.reshape(args[2], (1, co) + (1,) * nsp)))
    return [y]


@lowers(q.matmul)
def _matmul(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    if ctx.target.kind == "cuda" and ((y := cuda_gemm.matmul(ctx, node, args)) is not None
                                      or (y := cuda_gemm.batch_matmul(ctx, node, args)) is not None):
        return [y]
    a = node.attrs
    x = _minus_zp(ctx, args[0], a["a_zero_point"])
    w = _minus_zp(ctx, args[1], a["b_zero_point"])
    return [R.matmul(x, w, out_dtype="int32")]


def _resize_linear_te(x: te.Tensor, iy: te.Tensor, wy: te.Tensor, ix: te.Tensor, wx: te.Tensor,
                      sizes: tuple[int, int], zp: int, frac_bits: int, lo: int, hi: int) -> te.Tensor:
    i32 = "int32"
    z, rnd = tirx.const(zp, i32), tirx.const(1 << (2 * frac_bits - 1), i32)

    def body(n, c, i, j):
        acc = None
        for p in range(2):
            for k in range(2):
                t = (x[n, c, iy[i, p], ix[j, k]].astype(i32) - z) * (wy[i, p] * wx[j, k])
                acc = t if acc is None else acc + t
        y = ((acc + rnd) >> tirx.const(2 * frac_bits, i32)) + z
        return tirx.max(tirx.min(y, tirx.const(hi, i32)), tirx.const(lo, i32)).astype(x.dtype)
    return te.compute((x.shape[0], x.shape[1], *sizes), body, name="resize_linear")


@lowers(q.resize_linear)
def _resize_linear(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    a = node.attrs
    x = args[0]
    (iy, wy), (ix, wx) = q.resize_linear_tables(shape_of(x)[2:], a)
    lo, hi = q.INT_RANGE[node.inputs[0].type.dtype]
    tabs = [relax.const(t) for t in (iy, wy, ix, wx)]
    return [ctx.emit_te(_resize_linear_te, x, *tabs, tuple(a["sizes"]), a["zero_point"], a["frac_bits"], lo, hi,
                        name="resize_linear")]


__all__ = ["requant_expr", "requant_params", "dtype_of"]
