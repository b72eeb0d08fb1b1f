"""INT4-weight matmul (linear layers) on AVX-512 VNNI: two signed 4-bit weights per byte, unpacked in registers
and fed to ``vpdpbusd``; the same semantics, bias and fused requant write-back as qmatmul.py (int4 weights are
just int8 weights in [-8, 7]), half the weight bytes -- for the memory-bound batch-1 / small-batch GEMV.

    a:       (m, k) uint8 or int8 activations (int8 is shifted to uint8 by +128 in a ``pad`` stage, which also pads
             k to ``kp`` = k rounded up to 8)
    weight:  :func:`pack_weight_int4` -> ``(np_//64, kp//8, 4, 16, 4)`` uint8, byte ``[c, p, b, j, t]`` = low nibble
             ``(w - w_zp)[8p + t, 64c + 16b + j]``, high nibble ``(w - w_zp)[8p + 4 + t, 64c + 16b + j]`` (two's
             complement; np_ = n rounded up to 64): per block of 16 columns the int8 vnni_matmul layout's k-quad
             2p in the low nibbles and quad 2p + 1 in the high ones, so one 64-byte load holds 2 x 64 weights of 16
             columns; the 4 blocks of 64 columns are interleaved per p, so a task of 4 blocks (the default tile)
             reads one sequential stream (7-16% faster at batch 1 than 4 streams kp * 8 bytes apart)
    bias:    qmatmul.pack_bias -> ``(np_,)`` int32 = bias - az * colsum(w - w_zp), az = a_zp (+128 for int8)
    rq:      qmatmul.pack_requant -> ``(3, np_)`` int64 rows m, c, rnd (per output column)
    out:     ``(m, np_)`` of ``rq.dtype`` (int32 without a requant); the caller slices off n..np_.

(bias, rq and out are padded to 64 columns here, to 16 in qmatmul.py: pass a QMatmulInt4Spec to the helpers.)

Unpacking without a sign extension: ``b & 0xF0`` read as int8 is 16 x the high weight, ``(b << 4) & 0xF0`` 16 x the
low one, so per 64-byte vector the unpack is one ``vpandq`` and one ``vpsllw`` + ``vpandq`` (on Zen 4 LLVM folds
that pair into one ``vgf2p8affineqb``: 2 instructions per 128 weights), and two ``vpdpbusd`` (4 activation bytes
broadcast for each k-quad) accumulate 16 x the dot product; the write-back shifts it right by 4 (exact).
16 x 255 x 8 x kp must fit int32: kp <= 65536. With a tile of several rows the unpack is shared by the rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import s_tir, te, tirx
from tvm.script import tirx as T

from compiler.layouts import pack_matmul_weight

from .qmatmul import (QMatmulSpec, out_shape, pack_bias, pack_requant, pick_tile,  # noqa: F401
                      qmatmul_reference, schedule, unscheduled)
from .qconv2d import requant_te

__all__ = ["QMatmulInt4Spec", "make_qmatmul_int4", "pack_weight_int4", "pack_bias", "pack_requant",
           "qmatmul_reference", "out_shape", "INT4_INTRIN"]

INT4_INTRIN = "dyc_dot_16x8_u8i4i32_vnni"
VPDPBUSD = "llvm.x86.avx512.vpdpbusd.512"
MAX_KP = 65536


@dataclass(frozen=True)
class QMatmulInt4Spec(QMatmulSpec):
    def __post_init__(self):
        if self.kp > MAX_KP:
            raise ValueError(f"the int4 matmul accumulates 16 x the dot product in int32: k <= {MAX_KP}, got {self.k}")

    @property
    def kp(self) -> int:
        return -(-self.k // 8) * 8

    @property
    def np_(self) -> int:
        return -(-self.n // 64) * 64


def weight_fits_int4(w: np.ndarray, w_zp: int = 0) -> bool:
    d = np.asarray(w, np.int64) - w_zp
    return bool(d.size == 0 or (d.min() >= -8 and d.max() <= 7))


def pack_weight_int4(spec: QMatmulInt4Spec, w: np.ndarray, w_zp: int = 0) -> np.ndarray:
    """(k, n) weight with (w - w_zp) in [-8, 7] -> ``(np_//64, kp//8, 4, 16, 4)`` uint8 nibble pairs (module doc;
    compiler/layouts.py's vnni_matmul_int4 form)."""
    if not weight_fits_int4(w, w_zp):
        raise ValueError("int4 weights must lie in [-8, 7] after the zero point")
    return pack_matmul_weight((np.asarray(w, np.int64) - w_zp).astype(np.int8), "vnni_matmul_int4")


def _x16(b, hi: bool, lanes: int = 1):
    """16 x the signed weight in the low (hi=False) or high nibble of uint8 b, as int8 (scalar or vector)."""
    def c(v):
        return tirx.const(v, "uint8") if lanes == 1 else tirx.Broadcast(tirx.const(v, "uint8"), lanes)
    v = b if hi else tirx.shift_left(b, c(4))
    return tirx.reinterpret("int8" if lanes == 1 else f"int8x{lanes}", tirx.bitwise_and(v, c(0xF0)))


def _dot8(a_lo, a_hi, b):
    """The scalar update of the intrinsic and the compute: a_lo x 16 w_lo + a_hi x 16 w_hi, in int32."""
    i32 = lambda x: x.astype("int32")  # noqa: E731
    return i32(a_lo) * i32(_x16(b, False)) + i32(a_hi) * i32(_x16(b, True))


def _intrin(scope: str):
    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((8,), "uint8", offset_factor=1), B: T.Buffer((16, 4), "uint8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1, scope=scope)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:8], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + _dot8(A[vk], A[vk + 4], B[vi, vk])

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((8,), "uint8", offset_factor=1), B: T.Buffer((16, 4), "uint8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1, scope=scope)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:8], B[0:16, 0:4])
            T.writes(C[0:16])
            # one expression (named intermediates become workspace buffers inside a parallel loop)
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(VPDPBUSD),
                T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(VPDPBUSD), C.vload([0], dtype="int32x16"),
                    T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 16),
                                  dtype="int8x64"),
                    _x16(B.vload([0, 0], dtype="uint8x64"), False, 64), dtype="int32x16"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([4], "uint8x4"), dtype="int32"), 16),
                              dtype="int8x64"),
                _x16(B.vload([0, 0], dtype="uint8x64"), True, 64), dtype="int32x16")
    return desc, impl


def register_intrinsics() -> None:
    if s_tir.TensorIntrin.get(INT4_INTRIN, allow_missing=True) is None:
        s_tir.TensorIntrin.register(INT4_INTRIN, *_intrin("global"))


register_intrinsics()


def qmatmul_int4_te(spec: QMatmulInt4Spec, a, w, bias, rq=None):
    shifted = spec.a_dtype == "int8"
    if shifted or spec.kp != spec.k:
        def _pad(i, kk):
            v = a[i, tirx.min(kk, spec.k - 1)]
            v = (v.astype("int32") + 128).astype("uint8") if shifted else v
            return v if spec.kp == spec.k else tirx.if_then_else(kk < spec.k, v, tirx.const(0, "uint8"))
        ap = te.compute((spec.m, spec.kp), _pad, name="pad")
    else:
        ap = a
    rp = te.reduce_axis((0, spec.kp // 8), "rp")
    rt = te.reduce_axis((0, 4), "rt")
    acc = te.compute((spec.m, spec.np_ // 16, 16),               # o: block of 16 columns = 4 c + b
                     lambda i, o, j: te.sum(_dot8(ap[i, rp * 8 + rt], ap[i, rp * 8 + rt + 4],
                                                  w[o // 4, rp, o % 4, j, rt]), axis=[rp, rt]), name="acc")

    def epi(i, col):
        v = tirx.shift_right(acc[i, col // 16, col % 16], tirx.const(4, "int32")) + bias[col]
        return requant_te(v, rq, (col,), spec.rq) if spec.rq is not None else v
    return te.compute(out_shape(spec), epi, name="out")


def make_qmatmul_int4(spec: QMatmulInt4Spec, tile=None) -> tirx.PrimFunc:
    """PrimFunc (a, weight, bias[, rq], out); tile = (rows, 16-column blocks) per task, default qmatmul.pick_tile:
    (<= 4 rows, 4 blocks) for the usual n, one sequential weight stream per task."""
    func = unscheduled(spec, (spec.np_ // 64, spec.kp // 8, 4, 16, 4), "uint8", qmatmul_int4_te)
    # column tiles outer, row tiles inner: the threads split the weight (each streams its part once) instead of the
    # rows (each streaming all of it); 1.5x at 2 threads, m = 8 or 16
    return schedule(func, spec, tile, INT4_INTRIN, columns_outer=True)
