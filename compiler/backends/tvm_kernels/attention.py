"""FP32 attention as one CPU kernel: softmax(q k^T * scale + mask) v in one pass over key blocks.

Parallel over (batch * heads, query blocks of `tq`). Each task keeps, for its `tq` queries, the running
max, the running denominator and the unnormalized output (tq x dv), and walks the keys in blocks of
`tk`: the block's scores (tq x tk, in L1), their max, exp(s - max) and its sum, the correction
exp(old max - new max) applied to the denominator and the output, then the block's P V added to the
output; the division comes once, at the end (passes.einsum.ONE_PASS). The scores never exist beyond
one tq x tk block, so memory is O(S d), not O(S^2).

Causal (key j visible to query i iff j <= i + offset): a task walks only the key blocks holding a key
one of its queries sees, masks the blocks that cross the diagonal itself, and reads no mask tensor.
Grouped-query heads: K and V hold fewer heads than Q (`k_group` / `v_group` consecutive query heads
share one), read in place instead of repeated.

The queries are the vector lanes of everything before P V: the task's queries are copied transposed and
scaled once (d x tq), each block's scores are key-major (tk x tq), so Q K^T broadcasts each key's element
from K as it lies ((keys, d): no transposed copy of K anywhere) against 16 queries per vector, and the
block max, exp and denominator are vertical vector operations (no reduction across lanes). P V
accumulates `rows` queries x dv outputs in registers over the block's keys (dv the vector axis), each
weight broadcast from the block. A tq x tk block of 128 x 64 is L1's 32 KiB.
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm import tirx
from tvm.script import tirx as T

from .common import SCHEDULE_ATTR, fast_exp, finalize

__all__ = ["AttentionSpec", "make_attention"]

NEG = -3.0e38        # the running max before any key: exp(NEG - m) is 0 (fast_exp clamps to ~1e-38)
MASKED = -1e9        # a mask entry at or below this removes its key (passes.einsum.MASKED)


@dataclass(frozen=True)
class AttentionSpec:
    bh: int                   # batch * heads
    lq: int
    lk: int
    d: int
    dv: int
    scale: float
    tq: int                   # query block (one parallel task)
    tk: int                   # key block
    k_transposed: bool = False      # must be False: the kernel reads K as (bh / k_group, lk, d)
    mask_batch: int = 0       # 0: no mask; else the mask is (mask_batch in {1, bh}, mask_rows in {1, lq}, lk)
    mask_rows: int = 0
    k_group: int = 1          # query heads per K head: k holds bh // k_group heads
    v_group: int = 1
    causal: int = -1          # >= 0: key j is visible to query i iff j <= i + causal (no mask tensor)
    zero_masked_rows: bool = False  # a row whose every score is -inf gives 0 (softmax's NaN replaced)

    def __post_init__(self):
        if self.lq % self.tq or self.lk % self.tk:
            raise ValueError(f"blocks ({self.tq}, {self.tk}) must divide the lengths ({self.lq}, {self.lk})")
        if self.bh % self.k_group or self.bh % self.v_group:
            raise ValueError(f"head groups ({self.k_group}, {self.v_group}) must divide {self.bh} heads")
        if self.causal >= 0 and self.mask_batch:
            raise ValueError("a causal kernel reads no mask tensor")

    @property
    def rows(self) -> int:
        """Query rows per register tile."""
        return next(r for r in (4, 2, 1) if self.tq % r == 0)


def _vec(n: int, lanes: int = 16) -> int:
    return lanes if n % lanes == 0 else 1


def make_attention(spec: AttentionSpec) -> tirx.PrimFunc:
    """PrimFunc (q (bh, lq, d), k (bh / k_group, lk, d), v (bh / v_group, lk, dv), mask, out (bh, lq, dv))."""
    if spec.k_transposed:
        raise ValueError("the attention kernel reads K as (heads, keys, d); transpose it first")
    bh, lq, lk, d, dv, tq, tk, rows = spec.bh, spec.lq, spec.lk, spec.d, spec.dv, spec.tq, spec.tk, spec.rows
    nq, nk = lq // tq, lk // tk
    gk, gv, causal = spec.k_group, spec.v_group, spec.causal >= 0
    # the key blocks a task walks: those up to its last query's last visible key (all without causal)
    reach = tq + (spec.causal if causal else lk) + tk - 1
    off = max(spec.causal, 0)
    zero_rows = spec.zero_masked_rows
    has_mask = spec.mask_batch > 0
    mshape = (max(spec.mask_batch, 1), max(spec.mask_rows, 1), lk)
    mb, mr = int(spec.mask_batch == bh), int(spec.mask_rows == lq)   # 1: the mask varies along batch / rows
    vk, vm = _vec(tk), _vec(lk)
    vf = _vec(dv)
    ti = next(t for t in (64, 48, 32, 16, tq) if tq % t == 0 and t <= tq)   # queries per Q K^T register tile
    vq = _vec(ti)
    rj = next(r for r in (4, 2, 1) if tk % r == 0)                          # keys per Q K^T register tile
    mrows = tq if mr else 1          # the mask rows one task reads
    masked = tirx.const(MASKED, "float32")
    f32 = "float32"
    scale = tirx.const(spec.scale, f32)
    zero, neg = tirx.const(0.0, f32), tirx.const(NEG, f32)

    @T.prim_func(private=True)
    def attention(q: T.Buffer((bh, lq, d), f32), k: T.Buffer((bh // gk, lk, d), f32), v: T.Buffer((bh // gv, lk, dv), f32),
                  mask: T.Buffer(mshape, f32), out: T.Buffer((bh, lq, dv), f32)):
        T.func_attr({"tirx.noalias": True})
        for task in T.parallel(bh * nq):
            b = task // nq
            q0 = task % nq * tq
            qt = T.alloc_buffer((d, tq), f32)          # the task's queries, scaled, transposed: lanes = queries
            st = T.alloc_buffer((tk, tq), f32)         # one key block's scores, key-major
            acc = T.alloc_buffer((tq, dv), f32)
            run_max = T.alloc_buffer((tq,), f32)
            run_den = T.alloc_buffer((tq,), f32)
            new_max = T.alloc_buffer((tq,), f32)
            corr = T.alloc_buffer((tq,), f32)
            for i, e in T.grid(tq, d):
                qt[e, i] = q[b, q0 + i, e] * scale
            for i in T.serial(tq):
                run_max[i] = neg
                run_den[i] = zero
                for f in T.vectorized(dv):
                    acc[i, f] = zero
            # skip_ok: every query of the task sees some key, so a block whose keys are all masked adds
            # nothing (a row with no key at all averages over every key, as the unfused softmax does)
            skip_ok = T.alloc_buffer((1,), "int32")
            seen = T.alloc_buffer((vm,), f32)
            skip_ok[0] = 0
            if has_mask:
                skip_ok[0] = 1
                for i in T.serial(mrows):
                    for jm in T.vectorized(vm):
                        seen[jm] = neg
                    for jo in T.serial(lk // vm):
                        for jm in T.vectorized(vm):
                            seen[jm] = T.max(seen[jm], mask[b * mb, (q0 + i) * mr, jo * vm + jm])
                    for jm in T.serial(1, vm):
                        seen[0] = T.max(seen[0], seen[jm])
                    if seen[0] <= masked:
                        skip_ok[0] = 0
            for kb in T.serial(T.min(nk, (q0 + reach) // tk)):
                k0 = kb * tk
                live = T.alloc_buffer((vk,), f32)
                live[0] = zero
                if has_mask:
                    if skip_ok[0] == 1:     # the block's largest mask entry: at or below MASKED, skip it
                        for ji in T.vectorized(vk):
                            live[ji] = neg
                        for i in T.serial(mrows):
                            for jo in T.serial(tk // vk):
                                for ji in T.vectorized(vk):
                                    live[ji] = T.max(live[ji], mask[b * mb, (q0 + i) * mr, k0 + jo * vk + ji])
                        for ji in T.serial(vk):
                            live[0] = T.max(live[0], live[ji])
                if not has_mask or live[0] > masked:
                    # scores: rj keys x ti queries in registers, K read in place (a broadcast per key)
                    for ib in T.serial(tq // ti):
                        for jo in T.serial(tk // rj):
                            for jj in T.unroll(rj):
                                for ii in T.vectorized(ti):
                                    st[jo * rj + jj, ib * ti + ii] = zero
                            for e in T.serial(d):
                                for jj in T.unroll(rj):
                                    for io in T.unroll(ti // vq):
                                        for ii in T.vectorized(vq):
                                            st[jo * rj + jj, ib * ti + io * vq + ii] = \
                                                st[jo * rj + jj, ib * ti + io * vq + ii] + \
                                                k[b // gk, k0 + jo * rj + jj, e] * qt[e, ib * ti + io * vq + ii]
                    if causal:
                        if k0 + tk - 1 > q0 + off:          # the block crosses the diagonal
                            for j in T.serial(tk):
                                for i in T.vectorized(tq):
                                    st[j, i] = T.if_then_else(k0 + j > q0 + i + off, neg, st[j, i])
                    if has_mask:
                        for j in T.serial(tk):
                            for i in T.vectorized(tq):
                                st[j, i] = st[j, i] + mask[b * mb, (q0 + i) * mr, k0 + j]
                    # the running max, the correction, exp and the denominator: all across query lanes
                    for i in T.vectorized(tq):
                        new_max[i] = run_max[i]
                    for j in T.serial(tk):
                        for i in T.vectorized(tq):
                            new_max[i] = T.max(new_max[i], st[j, i])
                    for i in T.vectorized(tq):
                        corr[i] = fast_exp(run_max[i] - new_max[i])
                        run_den[i] = run_den[i] * corr[i]
                        run_max[i] = new_max[i]
                    for j in T.serial(tk):
                        for i in T.vectorized(tq):
                            st[j, i] = fast_exp(st[j, i] - new_max[i])
                            run_den[i] = run_den[i] + st[j, i]
                    # P V: rows queries x dv in registers, the weights broadcast from the block
                    for io in T.serial(tq // rows):
                        for ii in T.unroll(rows):
                            for f in T.vectorized(dv):
                                acc[io * rows + ii, f] = acc[io * rows + ii, f] * corr[io * rows + ii]
                        for j in T.serial(tk):
                            for ii in T.unroll(rows):
                                for fo in T.unroll(dv // vf):
                                    for fi in T.vectorized(vf):
                                        acc[io * rows + ii, fo * vf + fi] = acc[io * rows + ii, fo * vf + fi] + \
                                            st[j, io * rows + ii] * v[b // gv, k0 + j, fo * vf + fi]
            for i in T.serial(tq):
                if zero_rows:           # every score -inf: the running max never left NEG
                    for f in T.vectorized(dv):
                        out[b, q0 + i, f] = T.if_then_else(run_max[i] > neg, acc[i, f] / run_den[i], zero)
                else:
                    for f in T.vectorized(dv):
                        out[b, q0 + i, f] = acc[i, f] / run_den[i]

    return finalize(attention.with_attr(SCHEDULE_ATTR, "tiled"))
