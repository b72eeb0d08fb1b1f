"""Integer-only attention (q.attention) as one CPU kernel, bit-exact with compiler.ops.qattention.

Parallel over (batch * heads, query blocks of `tq`); each task walks the keys in the op's blocks. Per
block: the int8 keys widened and transposed once (so the block is the vector axis), each query row's
int32 scores, their requant to the int16 grid and the keep mask, then the row's running max, the
correction of the running sum and numerator when the max grows, shift_exp of the block, its sum and
its e @ v into the int64 numerator. The S x S scores never exist beyond one row of one block.
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm import tirx
from tvm.script import tirx as T

from compiler.backends.tvm_lower.ivit import shift_exp_expr
from compiler.backends.tvm_lower.quant import requant_expr
from compiler.ops.qattention import FRACTION_BITS

from .common import SCHEDULE_ATTR, finalize

__all__ = ["QAttentionSpec", "make_qattention"]

I32, I64 = "int32", "int64"
LOWEST = -(2**40)          # the running max before any key (every score is int16)


@dataclass(frozen=True)
class QAttentionSpec:
    bh: int
    lq: int
    lk: int
    d: int
    dv: int
    tq: int                 # query rows per task
    block: int              # the op's key block
    qk_m: int
    qk_c: int
    qk_qmin: int
    qk_qmax: int
    fill: int
    x0: int
    n: int
    m: int
    c: int
    zero_point: int
    qmin: int
    qmax: int
    out_dtype: str
    mask_batch: int = 0     # 0: no keep mask; else (1 or bh, 1 or lq, lk)
    mask_rows: int = 0

    def __post_init__(self):
        if self.lq % self.tq:
            raise ValueError(f"the query block {self.tq} must divide {self.lq}")


def _c(v: int, dtype: str = I64):
    return tirx.const(int(v), dtype)


def _rnd(c: int) -> int:
    return 1 << (c - 1) if c > 0 else 0


def constants(spec: QAttentionSpec, fill_dtype: str = I64) -> tuple:
    """The TIR constants both q.attention kernels read: U, the keep mask's shape, whether it spans the batch and
    the rows (0 / 1), the scores' requant (m, c, rounding term), the output's, the fill (in `fill_dtype`), the
    lowest int64, 0 and the fraction bits."""
    return (_c(-spec.x0 << spec.n), (max(spec.mask_batch, 1), max(spec.mask_rows, 1), spec.lk),
            int(spec.mask_batch == spec.bh), int(spec.mask_rows == spec.lq),
            (_c(spec.qk_m), _c(spec.qk_c), _c(_rnd(spec.qk_c))), (_c(spec.m), _c(spec.c), _c(_rnd(spec.c))),
            _c(spec.fill, fill_dtype), _c(LOWEST), _c(0), _c(FRACTION_BITS))


def make_qattention(spec: QAttentionSpec) -> tirx.PrimFunc:
    """PrimFunc (q (bh, lq, d), k (bh, lk, d), v (bh, lk, dv) int8, keep (mb, mr, lk) bool, out (bh, lq, dv))."""
    bh, lq, lk, d, dv, tq, tk = spec.bh, spec.lq, spec.lk, spec.d, spec.dv, spec.tq, spec.block
    nq, nk = lq // tq, (lk + tk - 1) // tk
    x0, n = spec.x0, spec.n
    unit, mshape, mb, mr, (qk_m, qk_c, qk_r), (o_m, o_c, o_r), fill, lowest, zero, frac = constants(spec)
    has_mask = spec.mask_batch > 0
    odt = spec.out_dtype

    vk = 16 if tk % 16 == 0 else 1
    below = _c(spec.qk_qmin - 1, I32)
    narrow = (-x0 << n) * 128 < 2**31         # e * v fits int32: multiply there, widen for the sum

    def masked_score(keep, acc, b, i, j):
        sc = T.Cast(I32, requant_expr(acc, qk_m, qk_c, qk_r, 0, 0, spec.qk_qmin, spec.qk_qmax))
        return T.if_then_else(keep[b * mb, i * mr, j], sc, T.Cast(I32, fill)) if has_mask else sc

    def product(ej, vj):
        if narrow:
            return T.Cast(I64, ej * T.Cast(I32, vj))
        return T.Cast(I64, ej) * T.Cast(I64, vj)

    @T.prim_func(private=True)
    def qattention(q: T.Buffer((bh, lq, d), "int8"), k: T.Buffer((bh, lk, d), "int8"),
                   v: T.Buffer((bh, lk, dv), "int8"), keep: T.Buffer(mshape, "bool"),
                   out: T.Buffer((bh, lq, dv), odt)):
        T.func_attr({"tirx.noalias": True})
        for task in T.parallel(bh * nq):
            b = task // nq
            q0 = task % nq * tq
            kt = T.alloc_buffer((d, tk), I32)
            s = T.alloc_buffer((tk,), I32)
            e = T.alloc_buffer((tk,), I32)
            lane = T.alloc_buffer((vk,), I32)
            big = T.alloc_buffer((tq,), I64)
            total = T.alloc_buffer((tq,), I64)
            num = T.alloc_buffer((tq, dv), I64)
            row = T.alloc_buffer((2,), I64)          # the block's max; its sum of e
            for i in T.serial(tq):
                big[i] = lowest
                total[i] = zero
                for f in T.serial(dv):
                    num[i, f] = zero
            for kb in T.serial(nk):
                k0 = kb * tk
                for ee, j in T.grid(d, tk):
                    kt[ee, j] = T.if_then_else(k0 + j < lk, T.Cast(I32, k[b, T.min(k0 + j, lk - 1), ee]), 0)
                for i in T.serial(tq):
                    for j in T.vectorized(tk):
                        s[j] = 0
                    for ee in T.serial(d):
                        for j in T.vectorized(tk):
                            s[j] = s[j] + T.Cast(I32, q[b, q0 + i, ee]) * kt[ee, j]
                    # the block's scores on the int16 grid (keys past the end: below every score)
                    for j in T.vectorized(tk):
                        e[j] = T.if_then_else(k0 + j < lk, masked_score(keep, s[j], b, q0 + i, T.min(k0 + j, lk - 1)),
                                              below)
                    for j in T.vectorized(vk):
                        lane[j] = e[j]
                    for jo in T.serial(1, tk // vk):
                        for j in T.vectorized(vk):
                            lane[j] = T.max(lane[j], e[jo * vk + j])
                    row[0] = T.Cast(I64, lane[0])
                    for j in T.serial(1, vk):
                        row[0] = T.max(row[0], T.Cast(I64, lane[j]))
                    if row[0] > big[i]:            # the max grew: rescale the running state
                        cr = shift_exp_expr(big[i] - row[0], x0, n)
                        total[i] = T.floordiv(total[i] * cr, unit)
                        for f in T.serial(dv):
                            num[i, f] = T.floordiv(num[i, f] * cr, unit)
                        big[i] = row[0]
                    # shift_exp in int32: s - max >= -65535 and every term below 2^31 (the op's type rule)
                    for j in T.vectorized(tk):
                        e[j] = T.if_then_else(k0 + j < lk, shift_exp_expr(T.max(e[j] - T.Cast(I32, big[i]), -65535),
                                                                         x0, n, I32), 0)
                    for j in T.vectorized(vk):
                        lane[j] = 0
                    for jo in T.serial(tk // vk):
                        for j in T.vectorized(vk):
                            lane[j] = lane[j] + e[jo * vk + j]
                    row[1] = zero
                    for j in T.serial(vk):
                        row[1] = row[1] + T.Cast(I64, lane[j])
                    total[i] = total[i] + row[1]
                    for j in T.serial(tk):
                        for f in T.vectorized(dv):
                            num[i, f] = num[i, f] + product(e[j], v[b, T.min(k0 + j, lk - 1), f])
            for i, f in T.grid(tq, dv):
                out[b, q0 + i, f] = T.Cast(odt, requant_expr(T.floordiv(num[i, f] << frac, total[i]), o_m, o_c,
                                                             o_r, 0, spec.zero_point, spec.qmin, spec.qmax))

    return finalize(qattention.with_attr(SCHEDULE_ATTR, "tiled"))
