"""ShiftAddViT's binary-code linear attention (mfree.binary_attention, compiler/ops/mfree.py) as one CPU
kernel, bit-exact with the op's reference; no multiply touches the data in any accumulation.

    1. max|V| per (batch * head), in parallel, then over all of them: the per-tensor scale s
    2. per (batch * head), one parallel task:
         v8 = clip(floor(V / s + 0.5), -127, 127)                  the head's V in int32 (lk x dv)
         KV[e, :] += select(K[m, e] > 0, v8[m, :], 0)              "MatAdd", m outer, dv the vector lanes
         KS[e]    += select(K[m, e] > 0, 1, 0)
         per query p:
           acc[:] += select(Q[p, e] > 0, KV[e, :], 0)              over e, dv the vector lanes
           den    += select(Q[p, e] > 0, KS[e], 0)
           out[p, :] = float(acc[:]) * (s / float(max(den, 1)))   one division per row

KV (d x dv int32) stays in L1 for d = dv = 64 (16 KiB). The integer sums are exact, so their order is
free; the float steps are the reference's single float32 operations in the same form (a division, an
add, floor; a division and a multiply per output), so the results are the same bits.
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm import tirx
from tvm.script import tirx as T

from .common import SCHEDULE_ATTR, finalize

__all__ = ["BinaryAttentionSpec", "make_binary_attention"]

LEVELS = 127


@dataclass(frozen=True)
class BinaryAttentionSpec:
    bh: int          # batch * heads
    lq: int
    lk: int
    d: int
    dv: int


def _vec(n: int) -> int:
    return next(w for w in (16, 8, 4, 2, 1) if n % w == 0)


def make_binary_attention(spec: BinaryAttentionSpec) -> tirx.PrimFunc:
    """PrimFunc (q (bh, lq, d), k (bh, lk, d), v (bh, lk, dv), out (bh, lq, dv)), all float32."""
    bh, lq, lk, d, dv = spec.bh, spec.lq, spec.lk, spec.d, spec.dv
    vn = _vec(dv)
    nn = dv // vn
    f32, i32 = "float32", "int32"
    zero, half = tirx.const(0.0, f32), tirx.const(0.5, f32)
    levels = tirx.const(float(LEVELS), f32)
    one_f = tirx.const(1.0, f32)
    i0, i1 = tirx.const(0, i32), tirx.const(1, i32)
    hi, lo = tirx.const(LEVELS, i32), tirx.const(-LEVELS, i32)

    @T.prim_func(private=True)
    def binary_attention(q: T.Buffer((bh, lq, d), f32), k: T.Buffer((bh, lk, d), f32),
                         v: T.Buffer((bh, lk, dv), f32), out: T.Buffer((bh, lq, dv), f32)):
        T.func_attr({"tirx.noalias": True})
        part = T.alloc_buffer((bh,), f32)
        scale = T.alloc_buffer((1,), f32)
        for b in T.parallel(bh):
            part[b] = zero
            for m, n in T.grid(lk, dv):
                part[b] = T.max(part[b], T.fabs(v[b, m, n]))
        scale[0] = zero
        for b in T.serial(bh):
            scale[0] = T.max(scale[0], part[b])
        scale[0] = T.Select(scale[0] > zero, scale[0] / levels, one_f)
        for b in T.parallel(bh):
            v8 = T.alloc_buffer((lk, dv), i32)
            kv = T.alloc_buffer((d, dv), i32)
            ks = T.alloc_buffer((d,), i32)
            acc = T.alloc_buffer((dv,), i32)
            den = T.alloc_buffer((1,), i32)
            r = T.alloc_buffer((1,), f32)
            for m, n in T.grid(lk, dv):
                v8[m, n] = T.max(T.min(T.Cast(i32, T.floor(v[b, m, n] / scale[0] + half)), hi), lo)
            for e in T.serial(d):
                ks[e] = i0
                for n0 in T.serial(nn):
                    for n1 in T.vectorized(vn):
                        kv[e, n0 * vn + n1] = i0
            for m, e in T.grid(lk, d):
                ks[e] = ks[e] + T.Select(k[b, m, e] > zero, i1, i0)
                for n0 in T.serial(nn):
                    for n1 in T.vectorized(vn):
                        kv[e, n0 * vn + n1] = kv[e, n0 * vn + n1] + \
                            T.Select(k[b, m, e] > zero, v8[m, n0 * vn + n1], i0)
            for p in T.serial(lq):
                den[0] = i0
                for n0 in T.serial(nn):
                    for n1 in T.vectorized(vn):
                        acc[n0 * vn + n1] = i0
                for e in T.serial(d):
                    den[0] = den[0] + T.Select(q[b, p, e] > zero, ks[e], i0)
                    for n0 in T.serial(nn):
                        for n1 in T.vectorized(vn):
                            acc[n0 * vn + n1] = acc[n0 * vn + n1] + \
                                T.Select(q[b, p, e] > zero, kv[e, n0 * vn + n1], i0)
                r[0] = scale[0] / T.Cast(f32, T.max(den[0], i1))
                for n0 in T.serial(nn):
                    for n1 in T.vectorized(vn):
                        out[b, p, n0 * vn + n1] = T.Cast(f32, acc[n0 * vn + n1]) * r[0]

    return finalize(binary_attention.with_attr(SCHEDULE_ATTR, "binary_attention"))
