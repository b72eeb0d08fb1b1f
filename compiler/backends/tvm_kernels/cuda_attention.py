"""Attention as one NVIDIA GPU kernel: softmax(q k^T * scale + mask) v in one pass over key blocks, the
scores never in memory (the GPU form of attention.py's CPU kernel, same AttentionSpec).

    blockIdx.y = batch * head, blockIdx.x = query block of tq, threadIdx.x = one query of the block
    each thread: q row scaled once (d registers), running max m, denominator l, output acc (dv registers)
    for each key block of tk (causal: only the blocks up to the block's last visible key):
        the block's K (tk x d) and V (tk x dv) staged in shared memory by all the threads (coalesced rows)
        for each chunk of CHUNK keys j of the block:
            s[j] = q . K[j] (+ mask, or -3e38 past the causal diagonal)    every thread reads the same 4
            mx = max(m, max_j s[j]); acc, l *= exp(m - mx)                 floats of K or V: a 16-byte
                                                                           shared-memory broadcast per
                                                                           4 multiply-adds
            acc += sum_j exp(s[j] - mx) V[j]; l += sum_j exp(s[j] - mx); m = mx
    out = acc / l          (float32 throughout; float16 q, k, v widened as they are read, out rounded once)

Written once for two machines: `gpu=True` binds the loops to GPU blocks and threads and keeps the staged tiles
in shared memory and each thread's state in registers (TVM compacts a thread's "local" row and inserts the
barriers around the shared tiles); `gpu=False` gives the same loops serial and every buffer global, which
runs on the CPU: how the tests check the kernel's arithmetic without a GPU (each thread's state is a row of
its own, the stages run one after another as the barriers order them).
"""
from __future__ import annotations

import numpy as np

from tvm import tirx
from tvm.script import tirx as T

from .attention import NEG, AttentionSpec
from .common import finalize, gpu_form

THREADS = (128, 64, 32, 16, 8, 4, 2, 1)     # queries per block (= threads), the largest dividing lq
KEYS = (32, 16, 8, 4, 2, 1)                 # keys per staged block, the largest dividing lk
# Keys per online-softmax update, the largest dividing the key block: the update loop over a block's chunks stays
# a loop. Fully unrolled over 32 keys, nvcc split every float4 shared load into 4 scalar ones (4096
# ld.shared.f32 for 4096 multiply-adds) and the kernel took 244-255 registers; with 4-key chunks in a loop
# the PTX has ld.shared.v4.f32 (one per 4 multiply-adds) and ptxas gives ~170 registers.
CHUNK = (4, 2, 1)
# The running max before any key: the lowest float32. A row whose every score is finfo.min plus something
# (transformers' padding value on every key) then weighs its keys alike, as the reference's softmax does;
# starting at NEG (-3e38, above finfo.min) every weight underflowed to 0 and the row was 0 / 0.
LOWEST = float(np.finfo(np.float32).min)


def gpu_tile(lq: int, lk: int) -> tuple[int, int]:
    return next(t for t in THREADS if lq % t == 0), next(t for t in KEYS if lk % t == 0)


def make_cuda_attention(spec: AttentionSpec, dtype: str = "float32", gpu: bool = True) -> tirx.PrimFunc:
    """PrimFunc (q (bh, lq, d), k (bh / k_group, lk, d), v (bh / v_group, lk, dv), mask (mb, mr, lk) float32,
    out (bh, lq, dv)); q, k, v and out of `dtype` (float32 or float16)."""
    if spec.k_transposed:
        raise ValueError("the GPU attention reads K as (heads, keys, d)")
    bh, lq, lk, d, dv, tq, tk = spec.bh, spec.lq, spec.lk, spec.d, spec.dv, spec.tq, spec.tk
    nq, nk = lq // tq, lk // tk
    gk, gv, causal, off = spec.k_group, spec.v_group, spec.causal >= 0, max(spec.causal, 0)
    mb, mr = max(spec.mask_batch, 1), max(spec.mask_rows, 1)
    has_mask = spec.mask_batch > 0
    zero_rows = spec.zero_masked_rows       # torch's NaN guard: a query whose every key is masked reads 0
    scale = float(spec.scale)
    k_loads, v_loads = -(-tk * d // tq), -(-tk * dv // tq)
    ch = next(c for c in CHUNK if tk % c == 0)

    loop, unroll, vec, shared, local = gpu_form(gpu)
    vk, vv = (4 if d % 4 == 0 else 1), (4 if dv % 4 == 0 else 1)     # floats per shared-memory load

    @T.prim_func(check_well_formed=False)
    def attention(q: T.Buffer((bh, lq, d), dtype), k: T.Buffer((bh // gk, lk, d), dtype),
                  v: T.Buffer((bh // gv, lk, dv), dtype), mask: T.Buffer((mb, mr, lk), "float32"),
                  out: T.Buffer((bh, lq, dv), dtype)):
        T.func_attr({"tirx.noalias": True})
        for b in loop(bh, "blockIdx.y"):
            for qb in loop(nq, "blockIdx.x"):
                ks = T.alloc_buffer((tk, d), "float32", scope=shared)
                vs = T.alloc_buffer((tk, dv), "float32", scope=shared)
                qr = T.alloc_buffer((tq, d), "float32", scope=local)
                acc = T.alloc_buffer((tq, dv), "float32", scope=local)
                s = T.alloc_buffer((tq, ch), "float32", scope=local)
                ml = T.alloc_buffer((tq, 3), "float32", scope=local)      # running max, denominator, new max
                kr = T.alloc_buffer((tq, vk), "float32", scope=local)    # partial sums of one score
                for t in loop(tq, "threadIdx.x"):
                    for i in unroll(d):
                        qr[t, i] = T.Cast("float32", q[b, qb * tq + t, i]) * T.float32(scale)
                    for c in unroll(dv):
                        acc[t, c] = T.float32(0)
                    ml[t, 0] = T.float32(LOWEST)
                    ml[t, 1] = T.float32(0)
                # the key blocks this query block sees (causal: up to its last query's last visible key)
                for kb in T.serial(T.min(nk, (qb * tq + tq + off + tk - 1) // tk) if causal else nk):
                    for t in loop(tq, "threadIdx.x"):
                        for e in unroll(k_loads):
                            if e * tq + t < tk * d:
                                ks[(e * tq + t) // d, (e * tq + t) % d] = T.Cast(
                                    "float32", k[b // gk, kb * tk + (e * tq + t) // d, (e * tq + t) % d])
                        for e in unroll(v_loads):
                            if e * tq + t < tk * dv:
                                vs[(e * tq + t) // dv, (e * tq + t) % dv] = T.Cast(
                                    "float32", v[b // gv, kb * tk + (e * tq + t) // dv, (e * tq + t) % dv])
                    for t in loop(tq, "threadIdx.x"):
                        for jc in T.serial(tk // ch):                  # a loop, not unrolled: see CHUNK
                            ml[t, 2] = ml[t, 0]
                            for jj in unroll(ch):
                                for u in vec(vk):
                                    kr[t, u] = T.float32(0)
                                for i4 in unroll(d // vk):             # vk partial sums: a 16-byte shared
                                    for u in vec(vk):                  # load per 4 multiply-adds
                                        kr[t, u] = kr[t, u] + qr[t, i4 * vk + u] * ks[jc * ch + jj, i4 * vk + u]
                                s[t, jj] = T.float32(0)
                                for u in unroll(vk):
                                    s[t, jj] = s[t, jj] + kr[t, u]
                                if has_mask:
                                    s[t, jj] = s[t, jj] + mask[T.min(b, mb - 1), T.min(qb * tq + t, mr - 1),
                                                               kb * tk + jc * ch + jj]
                                if causal:
                                    s[t, jj] = T.if_then_else(kb * tk + jc * ch + jj > qb * tq + t + off,
                                                              T.float32(NEG), s[t, jj])
                                ml[t, 2] = T.max(ml[t, 2], s[t, jj])
                            ml[t, 1] = ml[t, 1] * T.exp(ml[t, 0] - ml[t, 2])
                            for c in unroll(dv):
                                acc[t, c] = acc[t, c] * T.exp(ml[t, 0] - ml[t, 2])
                            for jj in unroll(ch):
                                s[t, jj] = T.exp(s[t, jj] - ml[t, 2])
                                ml[t, 1] = ml[t, 1] + s[t, jj]
                                for c4 in unroll(dv // vv):
                                    for u in vec(vv):
                                        acc[t, c4 * vv + u] = acc[t, c4 * vv + u] + s[t, jj] * vs[jc * ch + jj, c4 * vv + u]
                            ml[t, 0] = ml[t, 2]
                for t in loop(tq, "threadIdx.x"):
                    for c in unroll(dv):
                        if zero_rows:           # every score -inf: every weight is 0, and so is the row
                            out[b, qb * tq + t, c] = T.Cast(dtype, T.if_then_else(
                                ml[t, 1] > T.float32(0), acc[t, c] / ml[t, 1], T.float32(0)))
                        else:
                            out[b, qb * tq + t, c] = T.Cast(dtype, acc[t, c] / ml[t, 1])

    return finalize(attention) if gpu else attention
