"""The dyadic requantization in TIR, bit-exact with compiler/ops/quant.py: the fused q.requant of the
integer kernels, evaluated in the cheapest form that is exact for its input range (REQUANT_FORMS)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
from tvm import tirx

# ----------------------------------------------------------------------------------------------------------------
# requantization
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Requant:
    """Scalar attributes of one fused q.requant (m / c live in a (3, cop//16, 16) int64 tensor)."""

    in_zp: int
    out_zp: int
    qmin: int
    qmax: int
    dtype: str          # "uint8" / "int8" / "int16" / "int32"
    form: str = "i64"   # how the kernel evaluates it (see REQUANT_FORMS); the result is the same


# Equivalent evaluations of clamp(((x - in_zp) * m + 2^(c-1)) >> c + out_zp), chosen by :func:`requant_form`
# from the constants and the input's value range; the parameter table is (3, cop//16, 16) in every form:
#
#   "i64":   int64 rows m, c, 2^(c-1); the reference formula in int64 (always valid).
#   "hi":    int32 rows m, 2^(c-33), c - 32; y = (hi32(x * m) + 2^(c-33)) >> (c - 32), all 16 lanes in int32 but
#            the one 32x32 -> 64 multiply.  Exact when every c >= 33 and x - in_zp fits int32: with P = x*m,
#            floor((P + 2^(c-1)) / 2^c) = floor((floor(P / 2^32) + 2^(c-33)) / 2^(c-32)).
#   "split": int32 rows m >> c, m & (2^c - 1), c; y = d * (m >> c) + ((d * (m & (2^c-1)) + 2^(c-1)) >> c) with
#            d = x - in_zp, in int32.  Exact (floor((d*mh*2^c + t) / 2^c) = d*mh + floor(t / 2^c)) when no
#            partial product can leave int32 -- narrow inputs (8-bit data to the int32 common scale).
#   "shl":   int32 rows p - c, 0, 0 for m = 2^p, p >= c; y = d << (p - c) (the rounding term is below one step).
REQUANT_FORMS = ("i64", "hi", "split", "shl")
_I32 = (-2**31, 2**31 - 1)


def requant_form(multiplier, shift, in_zp: int, out_zp: int, x_range: Tuple[int, int],
                 out_range: Tuple[int, int]) -> str:
    """The cheapest exact form of a requant with these constants for inputs in ``x_range`` whose result is
    clamped to ``out_range`` (both inclusive)."""
    m = np.asarray(multiplier, np.int64).reshape(-1)
    c = np.asarray(shift, np.int64).reshape(-1)
    if (m < 0).any() or (m >= 2**31).any() or (c < 0).any() or (c > 62).any():
        return "i64"
    lo, hi = int(x_range[0]) - in_zp, int(x_range[1]) - in_zp
    d = max(abs(lo), abs(hi))
    if out_range[0] < _I32[0] or out_range[1] > _I32[1]:
        return "i64"
    p = np.where(m > 0, np.log2(np.maximum(m, 1)).round().astype(np.int64), -1)
    if (m > 0).all() and (np.left_shift(np.int64(1), np.maximum(p, 0)) == m).all() and (p >= c).all() and \
            (p - c <= 30).all() and (np.left_shift(np.int64(d), p - c) + abs(out_zp) < 2**31).all():
        return "shl"
    mh, ml = m >> c, m & ((np.int64(1) << c) - 1)
    rnd = np.where(c > 0, np.left_shift(np.int64(1), np.maximum(c - 1, 0)), 0)
    # every partial value of the split form, and its result, stay inside int32
    if (c <= 30).all() and (d * mh < 2**31).all() and (d * ml + rnd < 2**31).all() and \
            (d * mh + ((d * ml + rnd) >> c) + abs(out_zp) < 2**31).all():
        return "split"
    if (c >= 33).all() and lo >= _I32[0] and hi <= _I32[1] and abs(out_zp) < 2**29:
        return "hi"
    return "i64"


def requant_te(v, mcr, idx, rq: Requant):
    """rq on a TIR scalar; mcr[k, *idx] gives the rows of the parameter table.  Returns a value of rq.dtype."""
    if rq.form in ("hi", "split", "shl"):
        return _requant_te_i32(v, mcr, idx, rq)
    m, c, rnd = (mcr[(k, *idx)] for k in range(3))
    # m < 2^31: the int32 round trip tells LLVM both factors are sign-extended 32-bit values, so the
    # 64-bit product becomes one vpmuldq instead of a full 64x64 multiply (exact either way)
    m = m.astype("int32").astype("int64")
    x = v.astype("int64")
    if rq.in_zp:
        x = x - tirx.const(rq.in_zp, "int64")
    y = (x * m + rnd) >> c
    y = y + tirx.const(rq.out_zp, "int64")
    y = tirx.max(tirx.min(y, tirx.const(rq.qmax, "int64")), tirx.const(rq.qmin, "int64"))
    return y.astype(rq.dtype)


def requant_scalar_te(v, m: int, c: int, rq: Requant):
    """rq with compile-time per-tensor m, c on a TIR scalar, in int64 (the reference formula).  Returns rq.dtype."""
    x = v.astype("int64")
    if rq.in_zp:
        x = x - tirx.const(rq.in_zp, "int64")
    x = x * tirx.const(m, "int64")
    if c > 0:
        x = (x + tirx.const(1 << (c - 1), "int64")) >> tirx.const(c, "int64")
    x = x + tirx.const(rq.out_zp, "int64")
    return tirx.max(tirx.min(x, tirx.const(rq.qmax, "int64")), tirx.const(rq.qmin, "int64")).astype(rq.dtype)


def int32_barrier(x):
    """x unchanged, but opaque to the simplifier: it would otherwise rewrite int64(a + b) as int64(a) + int64(b)
    (assuming no int32 overflow -- wrong where the reference wraps -- and widening the whole chain to int64)."""
    return tirx.reinterpret("int32", tirx.reinterpret("uint32", x))


def _requant_te_i32(v, mcr, idx, rq: Requant):
    a, b, k = (mcr[(r, *idx)] for r in range(3))
    x = v.astype("int32")
    if rq.in_zp:
        x = x - tirx.const(rq.in_zp, "int32")
    if rq.form == "hi":
        hi = ((int32_barrier(x).astype("int64") * a.astype("int64")) >> tirx.const(32, "int64")).astype("int32")
        y = (hi + b) >> k
    elif rq.form == "shl":
        y = x << a
    else:
        rnd = (tirx.const(1, "int32") << k) >> tirx.const(1, "int32")
        y = x * a + ((x * b + rnd) >> k)
    if rq.out_zp:
        y = y + tirx.const(rq.out_zp, "int32")
    if rq.qmax < _I32[1]:
        y = tirx.min(y, tirx.const(rq.qmax, "int32"))
    if rq.qmin > _I32[0]:
        y = tirx.max(y, tirx.const(rq.qmin, "int32"))
    return y.astype(rq.dtype)


def requant_dtype(rq: Requant) -> str:
    """dtype of rq's parameter table."""
    return "int64" if rq.form == "i64" else "int32"


def requant_np(x, m, c, rq: Requant) -> np.ndarray:
    from compiler.ops.quant import requant_values
    return requant_values(x, m, c, rq.in_zp, rq.out_zp, rq.qmin, rq.qmax, axis=1).astype(rq.dtype)


def pack_requant(multiplier, shift, channels: int, cop: int, shape=None, form: str = "i64") -> np.ndarray:
    """(3, cop//16, 16) parameter table of ``form`` (int64 rows m, c, rnd for "i64"; see REQUANT_FORMS);
    per-tensor values are broadcast, padding channels get 0."""
    m = np.broadcast_to(np.asarray(multiplier, np.int64).reshape(-1), (channels,))
    c = np.broadcast_to(np.asarray(shift, np.int64).reshape(-1), (channels,))
    if form == "hi":
        rows, dt = (m, np.left_shift(np.int64(1), c - 33), c - 32), np.int32
    elif form == "split":
        rows, dt = (m >> c, m & ((np.int64(1) << c) - 1), c), np.int32
    elif form == "shl":
        p = np.log2(np.maximum(m, 1)).round().astype(np.int64)
        rows, dt = (p - c, np.zeros_like(c), np.zeros_like(c)), np.int32
    else:
        rows, dt = (m, c, np.where(c > 0, np.left_shift(np.int64(1), np.maximum(c - 1, 0)), 0)), np.int64
    out = np.zeros((3, cop), np.int64)
    out[0, :channels], out[1, :channels], out[2, :channels] = rows
    return np.ascontiguousarray(out.astype(dt).reshape(shape or (3, cop // 16, 16)))
