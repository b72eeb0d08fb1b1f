"""The LUT low-bit GEMM (T-MAC) on AVX-512: q.lut_matmul (compiler/ops/lut.py), bit-exact with its reference.

Two stages in one PrimFunc:

* tables, once per activation row (outside the loop over output columns, reused by all of them): for every
  group of 4 activations the 16 partial sums, rounded to int8 with the row-and-group power-of-two scale e
  (table "int8"), or kept exact as int16 split into a low byte and a high byte table (table "int16"); and
  the group sums S of the activations for the zero points;
* lookups, parallel over (row, block of 32 columns): one 64-byte load of weight indices covers 4 tables x
  (16 + 16) columns of one bit-plane (two 4-bit indices per byte); its low and high nibbles each index the
  64-byte table vector with one ``vpshufb`` (``llvm.x86.avx512.pshuf.b.512``: 4 x 16-entry tables, one per
  128-bit lane, so lane L looks up group 4q + L). Lookups are summed in int16 per plane over a weight group,
  then the planes are combined by shifts in int32, shifted back by e, the 4 lanes (4 groups) added, and the
  group's scale and zero point applied (MixPE: dequantize after the group's sum).

Weights (``pack_weight``): ``(np_//32, Kp//16, bits, 64)`` uint8, byte ``[nb, q, i, 16 L + c]`` = pattern of plane
i, group 4q + L, column 32 nb + c (low nibble) and column 32 nb + 16 + c (high nibble) -- b bits per weight,
the same bytes as the op's planes. Scales int16 and zeros uint8 ``(Kp/G, np_)``, bias int32 ``(np_,)``. Output ``(m, np_)`` int32;
the caller slices off n..np_. The int16 partial sums need G/16 * 127 (int8 tables) or G/16 * 1020 (int16)
<= 32767: G <= 4096 / 512.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import tirx
from tvm.script import tirx as T

from compiler.ops import lut

from .common import SCHEDULE_ATTR, finalize

__all__ = ["LutSpec", "make_lut_gemm", "pack_weight", "pack_groups", "pack_bias", "out_shape"]

PSHUFB = "llvm.x86.avx512.pshuf.b.512"
COLS = 32                    # output columns per task: 16 per nibble
QUAD = 16                    # activations per 64-byte table vector (4 tables of 4)


@dataclass(frozen=True)
class LutSpec:
    m: int
    k: int
    n: int
    bits: int
    group_size: int
    table: str = "int8"
    a_dtype: str = "int8"
    a_zp: int = 0

    def __post_init__(self):
        g = self.group_size
        limit = 4096 if self.table == "int8" else 512
        if g % QUAD or g > limit or self.table not in lut.TABLE_FORMS or not 1 <= self.bits <= 4:
            raise ValueError(f"the LUT kernel takes groups of a multiple of 16 up to {limit} with {self.table} "
                             f"tables and 1-4 bits; got group {g}, {self.bits} bits")

    @property
    def kp(self) -> int:
        return lut.padded_k(self.k, self.group_size)

    @property
    def np_(self) -> int:
        return -(-self.n // COLS) * COLS

    @property
    def groups(self) -> int:
        return self.kp // self.group_size


def out_shape(spec: LutSpec):
    return (spec.m, spec.np_)


def pack_weight(spec: LutSpec, planes: np.ndarray) -> np.ndarray:
    """The op's (bits, N, Kp/8) planes -> the kernel's (np_//32, Kp//16, bits, 64) index bytes."""
    idx = np.zeros((spec.bits, spec.np_, spec.kp // 4), np.uint8)
    idx[:, :spec.n] = lut.patterns(planes)
    idx = idx.reshape(spec.bits, spec.np_ // COLS, 2, 16, spec.kp // QUAD, 4)    # i, nb, half, c, q, L
    packed = idx[:, :, 0] | (idx[:, :, 1] << 4)                                   # i, nb, c, q, L
    return np.ascontiguousarray(packed.transpose(1, 3, 0, 4, 2).reshape(spec.np_ // COLS, spec.kp // QUAD,
                                                                      spec.bits, 64))


def pack_groups(spec: LutSpec, v: np.ndarray, dtype: str) -> np.ndarray:
    """(Kp/G, N) scales or zeros padded to (Kp/G, np_) with zeros."""
    out = np.zeros((spec.groups, spec.np_), dtype)
    out[:, :spec.n] = v
    return out


def pack_bias(spec: LutSpec, b=None) -> np.ndarray:
    """(N,) int32 bias (None: zeros) padded to (np_,)."""
    out = np.zeros(spec.np_, np.int32)
    if b is not None:
        out[:spec.n] = np.asarray(b).reshape(-1)
    return out


def _shuffle(table, idx):
    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(PSHUFB), table, T.reinterpret(idx, dtype="int8x64"),
                                   dtype="int8x64")


def _round_shift(x, e):
    """shift_round of compiler/ops/lut.py on int32 TIR scalars (ties to even)."""
    half = T.if_then_else(e > 0, (T.shift_left(1, T.max(e - 1, 0)) - 1) + (T.shift_right(x, e) & 1), 0)
    return T.shift_right(x + half, e)


def make_lut_gemm(spec: LutSpec) -> tirx.PrimFunc:
    """PrimFunc (a (m, k), weight, scales, zeros, bias (np_,) int32, out (m, np_) int32)."""
    m_, k_, b_, g_ = spec.m, spec.k, spec.bits, spec.group_size
    kp, np_, ng = spec.kp, spec.np_, spec.groups
    nb_, nq, gq, gj = np_ // COLS, kp // QUAD, g_ // QUAD, g_ // 4
    zp, exact = spec.a_zp, spec.table == "int16"
    adt = spec.a_dtype
    hi_len = kp * 4 if exact else 1

    @T.prim_func(private=True)
    def lut_gemm(a: T.Buffer((m_, k_), adt), w: T.Buffer((nb_, nq, b_, 64), "uint8"),
                 u: T.Buffer((ng, np_), "int16"), z: T.Buffer((ng, np_), "uint8"),
                 bias: T.Buffer((np_,), "int32"), out: T.Buffer((m_, np_), "int32")):
        T.func_attr({"tirx.noalias": True})
        tlo = T.alloc_buffer((m_, kp * 4), "int8")
        thi = T.alloc_buffer((m_, hi_len), "int8")
        esh = T.alloc_buffer((m_, ng), "int32")
        ssum = T.alloc_buffer((m_, ng), "int32")
        # -- tables: per row and group of G, the scale e, then the 16 entries of every table of 4 --------
        for r in T.parallel(m_):
            xs = T.alloc_buffer((4,), "int32")
            mx = T.alloc_buffer((2,), "int32")
            for g in T.serial(ng):
                mx[0] = 0
                mx[1] = 0
                for jl in T.serial(gj):
                    for t in T.serial(4):
                        kk = (g * gj + jl) * 4 + t
                        xs[t] = T.if_then_else(kk < k_, T.cast(a[r, T.min(kk, k_ - 1)], "int32") - zp, 0)
                        mx[1] = mx[1] + xs[t]
                    mx[0] = T.max(mx[0], T.max(T.max(xs[0], 0) + T.max(xs[1], 0) + T.max(xs[2], 0)
                                               + T.max(xs[3], 0), T.max(-xs[0], 0) + T.max(-xs[1], 0)
                                               + T.max(-xs[2], 0) + T.max(-xs[3], 0)))
                ssum[r, g] = mx[1]
                esh[r, g] = 0
                if not exact:
                    for s in T.serial(8):
                        esh[r, g] = esh[r, g] + T.if_then_else(_round_shift(mx[0], s) > 127, 1, 0)
                for jl in T.serial(gj):
                    for t in T.serial(4):
                        kk = (g * gj + jl) * 4 + t
                        xs[t] = T.if_then_else(kk < k_, T.cast(a[r, T.min(kk, k_ - 1)], "int32") - zp, 0)
                    for p in T.serial(16):
                        ent = (T.if_then_else((p & 1) > 0, xs[0], 0) + T.if_then_else((p & 2) > 0, xs[1], 0)
                               + T.if_then_else((p & 4) > 0, xs[2], 0) + T.if_then_else((p & 8) > 0, xs[3], 0))
                        if exact:
                            tlo[r, (g * gj + jl) * 16 + p] = T.cast(ent & 255, "int8")
                            thi[r, (g * gj + jl) * 16 + p] = T.cast(T.shift_right(ent, 8), "int8")
                        else:
                            tlo[r, (g * gj + jl) * 16 + p] = T.cast(_round_shift(ent, esh[r, g]), "int8")
        # -- lookups: one task per (row, 32 columns) -----------------------------------------------
        for task in T.parallel(m_ * nb_):
            r = task // nb_
            nb = task % nb_
            acc = T.alloc_buffer((COLS,), "int32")
            a16 = T.alloc_buffer((b_ * 128,), "int16")
            p32 = T.alloc_buffer((64,), "int32")
            for c in T.vectorized(COLS):
                acc[c] = bias[nb * COLS + c]
            for g in T.serial(ng):
                for v in T.vectorized(b_ * 128):
                    a16[v] = T.int16(0)
                for q in T.serial(gq):
                    for i in T.unroll(b_):
                        for h in T.unroll(2):
                            wv = w.vload([nb, g * gq + q, i, 0], "uint8x64")
                            nib = T.shift_right(wv, T.broadcast(T.cast(h * 4, "uint8"), 64)) & \
                                T.broadcast(T.uint8(15), 64)
                            lo = _shuffle(tlo.vload([r, (g * gq + q) * 64], "int8x64"), nib)
                            if exact:
                                hi = _shuffle(thi.vload([r, (g * gq + q) * 64], "int8x64"), nib)
                                val = T.shift_left(T.cast(hi, "int16x64"), T.broadcast(T.int16(8), 64)) | \
                                    T.cast(T.reinterpret(lo, dtype="uint8x64"), "int16x64")
                            else:
                                val = T.cast(lo, "int16x64")
                            a16[T.ramp(i * 128 + h * 64, 1, 64)] = a16.vload([i * 128 + h * 64], "int16x64") + val
                for h in T.unroll(2):
                    for v in T.vectorized(64):
                        p32[v] = 0
                    for i in T.unroll(b_):
                        for v in T.vectorized(64):
                            p32[v] = p32[v] + T.shift_left(T.cast(a16[i * 128 + h * 64 + v], "int32"), i)
                    for c in T.vectorized(16):      # no named intermediates: the vectorizer broadcasts them
                        acc[h * 16 + c] = acc[h * 16 + c] + T.cast(u[g, nb * COLS + h * 16 + c], "int32") * (
                            T.shift_left(p32[c] + p32[16 + c] + p32[32 + c] + p32[48 + c], esh[r, g])
                            - T.cast(z[g, nb * COLS + h * 16 + c], "int32") * ssum[r, g])
            for c in T.vectorized(COLS):
                out[r, nb * COLS + c] = acc[c]

    return finalize(lut_gemm.with_attr(SCHEDULE_ATTR, "tiled"))


def lut_gemm_reference(spec: LutSpec, a, planes, scales, zeros, bias=None) -> np.ndarray:
    """numpy: the op's result (compiler/ops/lut.py), for tests."""
    return lut.lut_matmul_values(np.asarray(a), planes, scales, zeros, bias, bits=spec.bits, group_size=spec.group_size,
                                 table=spec.table, a_zero_point=spec.a_zp)
