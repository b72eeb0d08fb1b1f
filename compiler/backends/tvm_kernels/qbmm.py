"""Batched INT8 matmul of two activations (attention's Q K^T and P V) on AVX-512 VNNI, with a per-tensor
requantization fused into the write-back.

    a:    (bsz, m, k) uint8 / int8 (int8 is shifted to uint8 by +128 in the ``shift`` stage)
    b:    (bsz, k, n), or (bsz, n, k) with ``transpose_b`` (then b is read as its transpose: Q K^T reads K
          as stored, no transposed copy), int8 / uint8; ``b - b_zp`` must fit int8 (checked by the planner
          from the dtype: int8 with zero point 0, or uint8 with zero point 128)
    out:  (bsz, m, n) int32 = (a - a_zp) @ (b - b_zp), or requantized to ``rq.dtype``

vpdpbusd multiplies unsigned by signed bytes, so the kernel computes sum((a + s) * b') with b' = b - b_zp and
s = 128 for int8 a (else 0), adds bias = -az * colsum(b'), az = a_zp + s, per (batch, column).  b is packed at
run time into the VNNI panel layout ``(bsz, n/16, k/4, 16, 4)`` (element ``[z, o, q, j, t] = b'[z, 4q+t, 16o+j]``)
in the same stage that computes the column sums; that costs k*n per batch against m*k*n MACs.
Requires k % 4 == 0 and n % 16 == 0 (the attention shapes; other shapes take the generic lowering).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from tvm import s_tir, te, tirx

from .common import ACC_SCOPE, SCHEDULE_ATTR, finalize
from .qconv2d import VNNI_INTRIN, Requant, requant_scalar_te  # noqa: F401  (registers the intrinsic)
from . import amx
from .qmatmul import amx_block, pick_tile

__all__ = ["QBmmSpec", "make_pack", "make_qbmm", "qbmm_reference"]


@dataclass(frozen=True)
class QBmmSpec:
    bsz: int
    m: int
    k: int
    n: int
    a_dtype: str = "uint8"
    a_zp: int = 0
    b_dtype: str = "int8"
    b_zp: int = 0
    transpose_b: bool = False
    rq: Optional[Requant] = None
    rq_m: int = 0                 # per-tensor dyadic multiplier / shift of `rq`
    rq_c: int = 0
    amx: bool = False             # accumulate in AMX tiles (amx.py); needs amx_fits()

    def __post_init__(self):
        if self.k % 4 or self.n % 16:
            raise ValueError(f"qbmm needs k % 4 == 0 and n % 16 == 0, got k={self.k} n={self.n}")
        if not b_fits(self.b_dtype, self.b_zp):
            raise ValueError(f"b ({self.b_dtype}, zero point {self.b_zp}) minus its zero point is not int8")

    @property
    def shift(self) -> int:
        return 128 if self.a_dtype == "int8" else 0

    @property
    def az(self) -> int:
        return self.a_zp + self.shift

    @property
    def out_dtype(self) -> str:
        return self.rq.dtype if self.rq is not None else "int32"

    @property
    def b_shape(self) -> Tuple[int, int, int]:
        return (self.bsz, self.n, self.k) if self.transpose_b else (self.bsz, self.k, self.n)


def b_fits(dtype: str, zp: int) -> bool:
    """b - zp lies in int8 for every value of b's dtype."""
    lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
    return -128 <= lo - zp and hi - zp <= 127


def out_shape(spec: QBmmSpec) -> Tuple[int, int, int]:
    return (spec.bsz, spec.m, spec.n)


def _b_prime(spec: QBmmSpec, b):
    def bv(z, kk, col):                      # b' = b - b_zp as int8, logical (k, n) indexing
        v = b[z, col, kk] if spec.transpose_b else b[z, kk, col]
        if spec.b_zp or spec.b_dtype != "int8":
            v = (v.astype("int32") - spec.b_zp).astype("int8")
        return v
    return bv


def pack_te(spec: QBmmSpec, b):
    """(panel, bias): b' in the VNNI panel layout and -az * colsum(b') per (batch, column)."""
    bv = _b_prime(spec, b)
    panel = te.compute(panel_shape(spec), lambda z, o, q, j, t: bv(z, 4 * q + t, 16 * o + j), name="panel")
    rk = te.reduce_axis((0, spec.k), "rk")
    bias = te.compute((spec.bsz, spec.n),
                      lambda z, col: te.sum(bv(z, rk, col).astype("int32") * tirx.const(-spec.az, "int32"),
                                            axis=rk), name="bias")
    return panel, bias


def qbmm_te(spec: QBmmSpec, a, panel, bias):
    if spec.shift:
        ap = te.compute(a.shape, lambda z, i, kk: (a[z, i, kk].astype("int32") + 128).astype("uint8"),
                        name="shift")
    else:
        ap = a
    rq_ = te.reduce_axis((0, spec.k // 4), "rq")
    rt = te.reduce_axis((0, 4), "rt")
    acc = te.compute((spec.bsz, spec.m, spec.n // 16, 16),
                     lambda z, i, o, j: te.sum(ap[z, i, rq_ * 4 + rt].astype("int32") *
                                               panel[z, o, rq_, j, rt].astype("int32"), axis=[rq_, rt]),
                     name="acc")

    def epi(z, i, col):
        v = acc[z, i, col // 16, col % 16] + bias[z, col]
        return requant_scalar_te(v, spec.rq_m, spec.rq_c, spec.rq) if spec.rq is not None else v
    return te.compute(out_shape(spec), epi, name="out")


def panel_shape(spec: QBmmSpec) -> Tuple[int, ...]:
    return (spec.bsz, spec.n // 16, spec.k // 4, 16, 4)


def make_pack(spec: QBmmSpec) -> tirx.PrimFunc:
    """b -> (panel, bias), the operands of :func:`make_qbmm`: one pass over b per batch."""
    b = te.placeholder(spec.b_shape, spec.b_dtype, "b")
    panel, bias = pack_te(spec, b)
    sch = s_tir.Schedule(te.create_prim_func([b, panel, bias]))
    sch.parallel(sch.get_loops(sch.get_sblock("panel"))[0])
    sch.parallel(sch.get_loops(sch.get_sblock("bias"))[0])
    return finalize(sch.mod["main"].with_attr(SCHEDULE_ATTR, "simple"))


def amx_fits(m: int, k: int, n: int) -> bool:
    """The AMX schedule: whole 16-row tiles, 64-deep reduction steps (the panel is not padded), blocks of 2 or
    3 16-column blocks (amx.columns_fit)."""
    return m % amx.ROWS == 0 and k % amx.DEPTH == 0 and amx.columns_fit(n // 16)


def make_qbmm(spec: QBmmSpec, tile=None) -> tirx.PrimFunc:
    """Per batch, tiles of (rows, 16-column blocks) in parallel: VNNI register tiles of (rm, rn), the 16 columns
    x 4 k tensorized with vpdpbusd; with spec.amx, blocks of (rm 16-row tiles, rn column blocks) whose whole
    reduction is one AMX intrinsic (qmatmul.schedule with a batch axis)."""
    a = te.placeholder((spec.bsz, spec.m, spec.k), spec.a_dtype, "a")
    panel = te.placeholder(panel_shape(spec), "int8", "panel")
    bias = te.placeholder((spec.bsz, spec.n), "int32", "bias")
    func = te.create_prim_func([a, panel, bias, qbmm_te(spec, a, panel, bias)])
    if spec.amx:
        rm, rn = amx_block(tile, spec.m, spec.n // 16)
    else:
        rm, rn = tile or pick_tile(spec.m, spec.n // 16)
    sch = s_tir.Schedule(func)
    accb, out = sch.get_sblock("acc"), sch.get_sblock("out")
    z, i, o, j, kq, kt = sch.get_loops(accb)
    io, ii = sch.split(i, [None, amx.ROWS * rm if spec.amx else rm])
    oo, oi = sch.split(o, [None, rn])
    sch.reorder(z, io, oo, *((ii, oi, j, kq) if spec.amx else (kq, ii, oi, j)), kt)
    sch.set_scope(accb, 0, ACC_SCOPE)
    sch.reverse_compute_at(out, oo)
    _, cv = sch.split(sch.get_loops(out)[-1], [None, 16])
    sch.vectorize(cv)
    if not spec.amx:
        sch.unroll(ii)
        sch.unroll(oi)
    sch.parallel(sch.fuse(z, io, oo))
    init = sch.decompose_reduction(accb, ii if spec.amx else kq)
    if spec.amx:
        sch.tensorize(ii, amx.register(rm, rn, spec.k))
    else:
        sch.tensorize(j, VNNI_INTRIN)
    sch.vectorize(sch.get_loops(init)[-1])
    if spec.shift:
        sz, si, sk = sch.get_loops(sch.get_sblock("shift"))
        sch.parallel(sz)
        sch.vectorize(sk)
    return finalize(sch.mod["main"].with_attr(SCHEDULE_ATTR, "amx" if spec.amx else "tiled"))


def qbmm_reference(spec: QBmmSpec, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """numpy: the same int32 result (and requant) as q.matmul (+ q.requant) computes."""
    from compiler.ops.quant import requant_values
    bb = np.swapaxes(b, -1, -2) if spec.transpose_b else b
    y = np.matmul(np.asarray(a, np.int64) - spec.a_zp, np.asarray(bb, np.int64) - spec.b_zp).astype(np.int32)
    if spec.rq is None:
        return y
    r = spec.rq
    return requant_values(y, [spec.rq_m], [spec.rq_c], r.in_zp, r.out_zp, r.qmin, r.qmax).astype(r.dtype)
