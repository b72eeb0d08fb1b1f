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

Both inner products are register-tiled by `rows` query rows: QK^T accumulates rows x tk scores over the
head dimension (keys copied transposed once per block, so tk is the vector axis), P V accumulates
rows x dv outputs over the block's keys (dv the vector axis).
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
    k_transposed: bool = False      # k arrives as (bh, d, lk) instead of (bh, lk, d)
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
    bh, lq, lk, d, dv, tq, tk, rows = spec.bh, spec.lq, spec.lk, spec.d, spec.dv, spec.tq, spec.tk, spec.rows
    nq, nk = lq // tq, lk // tk
    gk, gv, causal = spec.k_group, spec.v_group, spec.causal >= 0
    # the key blocks a task walks: those up to its last query's last visible key (all without causal)
    reach = tq + (spec.causal if causal else lk) + tk - 1
    off = max(spec.causal, 0)
    zero_rows = spec.zero_masked_rows
    kshape = (bh // gk, d, lk) if spec.k_transposed else (bh // gk, lk, d)
    kt_, has_mask = spec.k_transposed, spec.mask_batch > 0
    mshape = (max(spec.mask_batch, 1), max(spec.mask_rows, 1), lk)
    mb, mr = int(spec.mask_batch == bh), int(spec.mask_rows == lq)   # 1: the mask varies along batch / rows
    vk, vf, vm = _vec(tk), _vec(dv), _vec(lk)
    mrows = tq if mr else 1          # the mask rows one task reads
    masked = tirx.const(MASKED, "float32")
    f32 = "float32"
    scale = tirx.const(spec.scale, f32)
    zero, neg = tirx.const(0.0, f32), tirx.const(NEG, f32)

    @T.prim_func(private=True)
    def attention(q: T.Buffer((bh, lq, d), f32), k: T.Buffer(kshape, f32), v: T.Buffer((bh // gv, lk, dv), f32),
                  mask: T.Buffer(mshape, f32), out: T.Buffer((bh, lq, dv), f32)):
        T.func_attr({"tirx.noalias": True})
        for task in T.parallel(bh * nq):
            b = task // nq
            q0 = task % nq * tq
            qs = T.alloc_buffer((tq, d), f32)
            acc = T.alloc_buffer((tq, dv), f32)
            run_max = T.alloc_buffer((tq,), f32)
            run_den = T.alloc_buffer((tq,), f32)
            kt = T.alloc_buffer((d, tk), f32)
            s = T.alloc_buffer((tq, tk), f32)
            for i, e in T.grid(tq, d):
                qs[i, e] = q[b, q0 + i, e] * scale
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
                    for e in T.serial(d):
                        for j in T.serial(tk):
                            if kt_:
                                kt[e, j] = k[b // gk, e, k0 + j]
                            else:
                                kt[e, j] = k[b // gk, k0 + j, e]
                    for io in T.serial(tq // rows):
                        for ii in T.unroll(rows):
                            for j in T.vectorized(tk):
                                s[io * rows + ii, j] = zero
                        for e in T.serial(d):
                            for ii in T.unroll(rows):
                                for jo in T.unroll(tk // vk):
                                    for ji in T.vectorized(vk):
                                        s[io * rows + ii, jo * vk + ji] = s[io * rows + ii, jo * vk + ji] + \
                                            qs[io * rows + ii, e] * kt[e, jo * vk + ji]
                    if causal:
                        if k0 + tk - 1 > q0 + off:          # the block crosses the diagonal
                            for i in T.serial(tq):
                                for j in T.vectorized(tk):
                                    s[i, j] = T.if_then_else(k0 + j > q0 + i + off, neg, s[i, j])
                    for i in T.serial(tq):
                        if has_mask:
                            for j in T.vectorized(tk):
                                s[i, j] = s[i, j] + mask[b * mb, (q0 + i) * mr, k0 + j]
                        # max and sum over the block: vk lanes at a time, then across the lanes
                        lane = T.alloc_buffer((vk,), f32)
                        new_max = T.alloc_buffer((1,), f32)
                        den = T.alloc_buffer((1,), f32)
                        for ji in T.vectorized(vk):
                            lane[ji] = s[i, ji]
                        for jo in T.serial(1, tk // vk):
                            for ji in T.vectorized(vk):
                                lane[ji] = T.max(lane[ji], s[i, jo * vk + ji])
                        new_max[0] = run_max[i]
                        for ji in T.serial(vk):
                            new_max[0] = T.max(new_max[0], lane[ji])
                        for ji in T.vectorized(vk):
                            lane[ji] = zero
                        for jo in T.serial(tk // vk):
                            for ji in T.vectorized(vk):
                                s[i, jo * vk + ji] = fast_exp(s[i, jo * vk + ji] - new_max[0])
                                lane[ji] = lane[ji] + s[i, jo * vk + ji]
                        den[0] = zero
                        for ji in T.serial(vk):
                            den[0] = den[0] + lane[ji]
                        if new_max[0] > run_max[i]:       # the running max moved: rescale the state
                            corr = fast_exp(run_max[i] - new_max[0])
                            run_den[i] = run_den[i] * corr
                            run_max[i] = new_max[0]
                            for f in T.vectorized(dv):
                                acc[i, f] = acc[i, f] * corr
                        run_den[i] = run_den[i] + den[0]
                    for io in T.serial(tq // rows):
                        for j in T.serial(tk):
                            for ii in T.unroll(rows):
                                for fo in T.unroll(dv // vf):
                                    for fi in T.vectorized(vf):
                                        acc[io * rows + ii, fo * vf + fi] = acc[io * rows + ii, fo * vf + fi] + \
                                            s[io * rows + ii, j] * v[b // gv, k0 + j, fo * vf + fi]
            for i in T.serial(tq):
                if zero_rows:           # every score -inf: the running max never left NEG
                    for f in T.vectorized(dv):
                        out[b, q0 + i, f] = T.if_then_else(run_max[i] > neg, acc[i, f] / run_den[i], zero)
                else:
                    for f in T.vectorized(dv):
                        out[b, q0 + i, f] = acc[i, f] / run_den[i]

    return finalize(attention.with_attr(SCHEDULE_ATTR, "tiled"))
