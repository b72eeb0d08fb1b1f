"""INT8 conv2d with AVX-512 VNNI (vpdpbusd, u8 x s8 -> s32) and the dyadic requantization fused into the
register write-back.

Layouts (``ib = spec.in_block`` in {4, 8, 16}; ``cip`` = ci rounded up to a multiple of 4 (and of ib);
``cop`` = co rounded up to 16):

* data:     ``(n, cip//ib, h, w, ib)`` uint8 or int8 (``x_dtype``), **unpadded**: spatial padding (with the input
  zero point) and, for int8, the +128 shift to uint8 happen in a ``pad`` stage inside the PrimFunc.  Channels
  beyond ci (the 3-channel stem padded to 4) may hold anything: their weights are 0.
* weight:   :func:`pack_weight` -> ``(cop//16, cip//ib, kh, kw, ib//4, 16, 4)`` int8, element
  ``[o, cb, r, s, q, j, t] = w[16 o + j, ib cb + 4 q + t, r, s]``.
* bias:     :func:`pack_bias` -> ``(cop//16, 16)`` int32 = bias - xz * sum(w) per output channel, where
  xz = x_zero_point (uint8) or x_zero_point + 128 (int8, shifted): the zero point never reaches the kernel.
* requant parameters: :func:`pack_requant` -> ``(3, cop//16, 16)``: int64 rows m, c, 2^(c-1) (0 where c == 0), or
  the int32 rows of a cheaper exact form (``Requant.form``, see REQUANT_FORMS).
* residual: same layout as the output (out_block 16) of dtype ``residual_dtype``.
* output:   ``(n, cop//16, oh, ow, 16)`` if co % 16 == 0, else plain ``(n, co, oh, ow)``; dtype ``out_dtype``.

Epilogue (all in int64 where the reference is, bit-exact with compiler/ops/quant.py)::

    v = acc + bias                                   (int32, wraps like the reference)
    v = rq1(v)                     if rq1            (-> rq1 dtype; int32 when a residual follows)
    v = rq1b(v)                    if rq1b           (the dyadic pass's rescale of v to int32)
    r = rq2(residual) or residual  if residual       (-> int32)
    v = rq3(int32(v + r))          if residual

with rq(v) = clamp(((v - in_zp) * m + rnd) >> c + out_zp, qmin, qmax).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import tvm
from tvm import s_tir, te, tirx
from tvm.script import tirx as T

from compiler.layouts import int_in_block

from .common import SCHEDULE_ATTR, divisors, finalize

__all__ = ["QConvSpec", "Requant", "make_qconv2d", "pack_weight", "pack_bias", "pack_requant", "data_shape",
           "out_shape", "output_hw", "qconv2d_reference", "requant_np", "requant_form",
           "REQUANT_FORMS", "VNNI_INTRIN", "VNNI_INTRIN_LOCAL"]

VNNI_INTRIN = "dyc_dot_16x4_u8i8i32_vnni"
VNNI_INTRIN_LOCAL = "dyc_dot_16x4_u8i8i32_vnni_local"


# ----------------------------------------------------------------------------------------------------------------
# the tensor intrinsic (LLVM 22: vpdpbusd.512 takes <64 x i8> operands)
# ----------------------------------------------------------------------------------------------------------------
def _intrin(scope: str):
    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1, scope=scope)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1, scope=scope)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            # one expression: named intermediates would become per-iteration workspace buffers once the
            # kernel is inside a parallel loop
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 16),
                              dtype="int8x64"),
                B.vload([0, 0], dtype="int8x64"), dtype="int32x16")
    return desc, impl


def register_intrinsics() -> None:
    for name, scope in ((VNNI_INTRIN, "global"), (VNNI_INTRIN_LOCAL, "local")):
        if s_tir.TensorIntrin.get(name, allow_missing=True) is None:
            s_tir.TensorIntrin.register(name, *_intrin(scope))


register_intrinsics()


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


def _int32_barrier(x):
    """x unchanged, but opaque to the simplifier: it would otherwise rewrite int64(a + b) as int64(a) + int64(b)
    (assuming no int32 overflow -- wrong where the reference wraps -- and widening the whole chain to int64)."""
    return tirx.reinterpret("int32", tirx.reinterpret("uint32", x))


def _requant_te_i32(v, mcr, idx, rq: Requant):
    a, b, k = (mcr[(r, *idx)] for r in range(3))
    x = v.astype("int32")
    if rq.in_zp:
        x = x - tirx.const(rq.in_zp, "int32")
    if rq.form == "hi":
        hi = ((_int32_barrier(x).astype("int64") * a.astype("int64")) >> tirx.const(32, "int64")).astype("int32")
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


# ----------------------------------------------------------------------------------------------------------------
# spec and packing
# ----------------------------------------------------------------------------------------------------------------
def _up(v: int, m: int) -> int:
    return -(-v // m) * m


@dataclass(frozen=True)
class QConvSpec:
    """One integer conv2d (groups == 1): NCHW logical shapes, OIHW int8 weights.  pad = (top, left, bottom,
    right).  ``rq1`` / ``rq2`` / ``rq3``: fused requantizations (see the module docstring); with none the output
    is the int32 accumulator + bias."""

    n: int
    ci: int
    h: int
    w: int
    co: int
    kh: int
    kw: int
    stride: Tuple[int, int] = (1, 1)
    pad: Tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: Tuple[int, int] = (1, 1)
    x_dtype: str = "uint8"
    x_zp: int = 0
    in_block: int = 16
    rq1: Optional[Requant] = None
    residual_dtype: Optional[str] = None
    rq2: Optional[Requant] = None
    rq3: Optional[Requant] = None
    rq1b: Optional[Requant] = None      # a second requant right after rq1 (the dyadic pass's rescale to int32)

    def __post_init__(self):
        if self.in_block not in (4, 8, 16) or self.cip % self.in_block:
            raise ValueError(f"in_block {self.in_block} for {self.ci} channels")
        if self.x_dtype not in ("uint8", "int8"):
            raise ValueError(self.x_dtype)
        if self.rq1b is not None and self.rq1 is None:
            raise ValueError("rq1b needs rq1")
        pre = self.rq1b or self.rq1
        if self.residual_dtype is not None and (pre is None or self.rq3 is None or pre.dtype != "int32"
                                                or self.blocked_out is False):
            raise ValueError("a residual needs rq1 -> int32, rq3 and a blocked output")
        oh, ow = output_hw(self)
        if oh <= 0 or ow <= 0:
            raise ValueError("empty output")

    @property
    def cip(self) -> int:
        return _up(self.ci, 4)

    @property
    def cop(self) -> int:
        return _up(self.co, 16)

    @property
    def blocked_out(self) -> bool:
        return self.co % 16 == 0

    @property
    def out_dtype(self) -> str:
        if self.rq3 is not None:
            return self.rq3.dtype
        last = self.rq1b or self.rq1
        return last.dtype if last is not None else "int32"

    @property
    def xz(self) -> int:
        """The zero point of the uint8 data the kernel really multiplies (shifted for int8)."""
        return self.x_zp + (128 if self.x_dtype == "int8" else 0)

    @property
    def macs(self) -> int:
        oh, ow = output_hw(self)
        return self.n * self.co * oh * ow * self.ci * self.kh * self.kw


choose_in_block = int_in_block


def output_hw(spec) -> Tuple[int, int]:
    pt, pl, pb, pr = spec.pad
    oh = (spec.h + pt + pb - spec.dilation[0] * (spec.kh - 1) - 1) // spec.stride[0] + 1
    ow = (spec.w + pl + pr - spec.dilation[1] * (spec.kw - 1) - 1) // spec.stride[1] + 1
    return oh, ow


def data_shape(spec: QConvSpec):
    return (spec.n, spec.cip // spec.in_block, spec.h, spec.w, spec.in_block)


def out_shape(spec: QConvSpec):
    oh, ow = output_hw(spec)
    if spec.blocked_out:
        return (spec.n, spec.co // 16, oh, ow, 16)
    return (spec.n, spec.co, oh, ow)


def weight_shape(spec: QConvSpec):
    ib = spec.in_block
    return (spec.cop // 16, spec.cip // ib, spec.kh, spec.kw, ib // 4, 16, 4)


def pack_weight(spec: QConvSpec, w: np.ndarray) -> np.ndarray:
    w = np.asarray(w)
    assert w.shape == (spec.co, spec.ci, spec.kh, spec.kw), w.shape
    wp = np.zeros((spec.cop, spec.cip, spec.kh, spec.kw), np.int8)
    wp[:spec.co, :spec.ci] = w.astype(np.int8)
    ib = spec.in_block
    p = wp.reshape(spec.cop // 16, 16, spec.cip // ib, ib // 4, 4, spec.kh, spec.kw).transpose(0, 2, 5, 6, 3, 1, 4)
    return np.ascontiguousarray(p)


def pack_bias(spec: QConvSpec, w: np.ndarray, b: Optional[np.ndarray]) -> np.ndarray:
    """(cop//16, 16) int32: bias - xz * sum(w), computed in int64 and wrapped like the reference."""
    s = np.asarray(w, np.int64).reshape(spec.co, -1).sum(axis=1)
    bb = np.zeros(spec.co, np.int64) if b is None else np.asarray(b, np.int64).reshape(spec.co)
    out = np.zeros(spec.cop, np.int64)
    out[:spec.co] = bb - spec.xz * s
    return np.ascontiguousarray(out.astype(np.int32).reshape(spec.cop // 16, 16))


# ----------------------------------------------------------------------------------------------------------------
# compute
# ----------------------------------------------------------------------------------------------------------------
def qconv2d_te(spec: QConvSpec, data, weight, bias, rq1=None, residual=None, rq2=None, rq3=None, rq1b=None):
    ib = spec.in_block
    pt, pl, pb, pr = spec.pad
    sh, sw = spec.stride
    dh, dw = spec.dilation
    oh, ow = output_hw(spec)
    shifted = spec.x_dtype == "int8"
    if pt or pl or pb or pr or shifted:
        hp, wp = spec.h + pt + pb, spec.w + pl + pr
        fill = tirx.const(spec.xz, "uint8") if 0 <= spec.xz <= 255 else None
        if fill is None:
            raise ValueError(f"input zero point {spec.x_zp} outside the {spec.x_dtype} range")

        def _pad(n, c, y, x, i):
            v = data[n, c, y - pt, x - pl, i]
            v = (v.astype("int32") + 128).astype("uint8") if shifted else v
            if not (pt or pl or pb or pr):
                return v
            return tirx.if_then_else(tirx.all(y >= pt, y < pt + spec.h, x >= pl, x < pl + spec.w), v, fill)
        padded = te.compute((spec.n, spec.cip // ib, hp, wp, ib), _pad, name="pad")
    else:
        padded = data
    rcb = te.reduce_axis((0, spec.cip // ib), "rcb")
    rh = te.reduce_axis((0, spec.kh), "rh")
    rw = te.reduce_axis((0, spec.kw), "rw")
    rq = te.reduce_axis((0, ib // 4), "rq")
    rt = te.reduce_axis((0, 4), "rt")
    acc = te.compute(
        (spec.n, spec.cop // 16, oh, ow, 16),
        lambda n, o, y, x, j: te.sum(
            padded[n, rcb, y * sh + rh * dh, x * sw + rw * dw, rq * 4 + rt].astype("int32")
            * weight[o, rcb, rh, rw, rq, j, rt].astype("int32"), axis=[rcb, rh, rw, rq, rt]),
        name="conv")

    def epi(n, o, y, x, j):
        v = acc[n, o, y, x, j] + bias[o, j]
        if spec.rq1 is not None:
            v = requant_te(v, rq1, (o, j), spec.rq1)
        if spec.rq1b is not None:
            v = requant_te(v, rq1b, (o, j), spec.rq1b)
        if spec.residual_dtype is not None:
            r = residual[n, o, y, x, j]
            r = requant_te(r, rq2, (o, j), spec.rq2) if spec.rq2 is not None else r.astype("int32")
            v = requant_te(v.astype("int32") + r.astype("int32"), rq3, (o, j), spec.rq3)
        return v

    if spec.blocked_out:
        return te.compute(out_shape(spec), epi, name="out")
    return te.compute(out_shape(spec), lambda n, c, y, x: epi(n, c // 16, y, x, c % 16), name="out")


def qconv2d_prim_func(spec: QConvSpec) -> tirx.PrimFunc:
    data = te.placeholder(data_shape(spec), spec.x_dtype, "data")
    weight = te.placeholder(weight_shape(spec), "int8", "weight")
    bias = te.placeholder((spec.cop // 16, 16), "int32", "bias")
    args = [data, weight, bias]
    kw = {}
    for name in ("rq1", "rq1b", "rq2", "rq3"):
        if getattr(spec, name) is not None:
            kw[name] = te.placeholder((3, spec.cop // 16, 16), requant_dtype(getattr(spec, name)), name)
    if spec.rq1 is not None:
        args.append(kw["rq1"])
    if spec.rq1b is not None:
        args.append(kw["rq1b"])
    if spec.residual_dtype is not None:
        kw["residual"] = te.placeholder(out_shape(spec), spec.residual_dtype, "residual")
        args.append(kw["residual"])
        if spec.rq2 is not None:
            args.append(kw["rq2"])
        args.append(kw["rq3"])
    out = qconv2d_te(spec, data, weight, bias, **kw)
    return te.create_prim_func(args + [out])


# ----------------------------------------------------------------------------------------------------------------
# schedule
# ----------------------------------------------------------------------------------------------------------------
MAX_ACC = 16


def pick_tile(n_ocb: int, ow: int) -> Tuple[int, int]:
    """(reg_oc, reg_w) with reg_oc | n_ocb, reg_w | ow, <= 16 accumulators; prefers 12-16 accumulators and
    reg_oc in 2..4 (4oc x 4w measured best; the width tile must divide the width for tensorize)."""
    best, best_score = (1, 1), -1e9
    for roc in divisors(n_ocb):
        if roc > 4:
            break
        for rw in divisors(ow):
            acc = roc * rw
            if acc > MAX_ACC:
                continue
            score = acc + 0.25 * roc - (1.5 if roc == 1 else 0.0) - (1.0 if rw < 3 else 0.0)
            if score > best_score:
                best, best_score = (roc, rw), score
    return best


def _sched_pad(sch):
    try:
        blk = sch.get_sblock("pad")
    except Exception:  # noqa: BLE001
        return
    n, c, y, x, i = sch.get_loops(blk)
    sch.parallel(sch.fuse(n, c, y))
    sch.vectorize(i)


def schedule_qconv2d(func: tirx.PrimFunc, spec: QConvSpec, tile=None) -> tirx.PrimFunc:
    oh, ow = output_hw(spec)
    roc, rw = tile or pick_tile(spec.cop // 16, ow)
    sch = s_tir.Schedule(func)
    conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
    n, o, y, x, j, rcb, rh, rw_, rq, rt = sch.get_loops(conv)
    oo, oi = sch.split(o, [None, roc])
    xo, xi = sch.split(x, [None, rw])
    sch.reorder(n, oo, y, xo, rcb, rh, rw_, rq, oi, xi, j, rt)
    intrin = VNNI_INTRIN
    if spec.blocked_out:
        # the accumulator tile stays in the default scope: below 1 KiB (< 16 accumulators) it is then a stack
        # array, where a "local" buffer is a workspace allocation per parallel iteration
        sch.reverse_compute_at(out, xo)
        sch.vectorize(sch.get_loops(out)[-1])
    else:
        ol = sch.get_loops(out)
        sch.parallel(sch.fuse(*ol[:3]))
    sch.unroll(xi)
    sch.unroll(oi)
    if spec.kw > 1:
        sch.unroll(rw_)
    sch.parallel(sch.fuse(n, oo, y))
    init = sch.decompose_reduction(conv, rcb)
    sch.tensorize(j, intrin)
    sch.vectorize(sch.get_loops(init)[-1])
    _sched_pad(sch)
    return sch.mod["main"].with_attr(SCHEDULE_ATTR, "tiled")


def make_qconv2d(spec: QConvSpec, tile=None) -> tirx.PrimFunc:
    """Scheduled PrimFunc with params (data, weight, bias, [rq1], [rq1b], [residual, [rq2], rq3], out); opaque,
    scheduled."""
    return finalize(schedule_qconv2d(qconv2d_prim_func(spec), spec, tile))


# ----------------------------------------------------------------------------------------------------------------
# numpy reference (plain NCHW) and packing helpers for tests / benchmarks
# ----------------------------------------------------------------------------------------------------------------
def pack_data(spec: QConvSpec, x: np.ndarray) -> np.ndarray:
    """NCHW -> (n, cip//ib, h, w, ib), extra channels filled with the zero point."""
    n, c, h, w = x.shape
    xp = np.full((n, spec.cip, h, w), spec.x_zp, x.dtype)
    xp[:, :c] = x
    ib = spec.in_block
    return np.ascontiguousarray(xp.reshape(n, spec.cip // ib, ib, h, w).transpose(0, 1, 3, 4, 2))


def unpack_out(spec: QConvSpec, y: np.ndarray) -> np.ndarray:
    if y.ndim == 4:
        return y
    n, cb, h, w, b = y.shape
    return np.ascontiguousarray(y.transpose(0, 1, 4, 2, 3).reshape(n, cb * b, h, w))


def qconv2d_reference(spec: QConvSpec, x, w, b=None, rq1_mc=None, residual=None, rq2_mc=None, rq3_mc=None,
                      rq1b_mc=None):
    """The q.conv + q.requant (+ residual) chain with compiler.ops' references, plain NCHW."""
    from compiler.ops.linalg import conv_reference
    pt, pl, pb, pr = spec.pad
    y = conv_reference(x.astype(np.int64) - spec.x_zp, np.asarray(w, np.int64),
                       None if b is None else np.asarray(b, np.int64), spec.stride, (pt, pl, pb, pr),
                       spec.dilation, 1).astype(np.int32)
    if spec.rq1 is not None:
        y = requant_np(y, *rq1_mc, spec.rq1)
    if spec.rq1b is not None:
        y = requant_np(y, *rq1b_mc, spec.rq1b)
    if spec.residual_dtype is not None:
        r = requant_np(residual, *rq2_mc, spec.rq2) if spec.rq2 is not None else residual.astype(np.int32)
        y = requant_np((y.astype(np.int32) + r.astype(np.int32)).astype(np.int32), *rq3_mc, spec.rq3)
    return y


def time_kernel(lib, args, number=20, repeat=20) -> float:
    """Median seconds of lib["main"](*args)."""
    ev = lib.time_evaluator("main", tvm.cpu(), number=number, repeat=repeat)
    return float(np.median(ev(*args).results))


def make_pack_channels(n: int, c: int, h: int, w: int, block: int, cp: int, dtype: str, fill: int):
    """Scheduled PrimFunc NCHW (n, c, h, w) -> (n, cp//block, h, w, block) with channels c..cp filled with
    ``fill`` (the 3-channel stem padded to 4)."""
    from .layout import _schedule
    x = te.placeholder((n, c, h, w), dtype, name="x")
    y = te.compute((n, cp // block, h, w, block),
                   lambda b, cb, yy, xx, i: tirx.if_then_else(cb * block + i < c,
                                                              x[b, tirx.min(cb * block + i, c - 1), yy, xx],
                                                              tirx.const(fill, dtype)), name="pack_nchwc")
    return _schedule(te.create_prim_func([x, y]), "pack_nchwc", True, w)
