"""Integer-only attention (q.attention) as one NVIDIA GPU kernel, bit-exact with compiler.ops.qattention (the GPU
form of qattention.py's CPU kernel, same QAttentionSpec; the layout of cuda_attention.py's float kernel).

    blockIdx.y = batch * head, blockIdx.x = query block of tq, threadIdx.x = one query of the block (or, where
        the numerator and q row would not fit in REGISTERS, ds threads a query, each with dv / ds of A's columns
        and computing the scores itself: BERT's d = dv = 64 is one thread, d = dv = 128 four)
    each thread: its q row packed 4 int8 to an int32 word (d / 4 registers), the running max M, sum L and
    numerator A (dv / ds int64 registers)
    the keys staged in shared memory in tiles of tk (K packed as int32 words, V widened to int32), by all threads:
        block <= tile: a tile is G = tile // block whole op blocks (tk = G * block), staged once;
        block > tile:  an op block is nt tiles of `tile` keys, K staged for pass 1, K and V again for pass 2
        (tile: TILE keys, fewer where the staged K and V would pass 48 KiB)
    for each op block (exactly the reference's blocks, in order):
        pass 1: s[j] = requant(q . K[j]) (__dp4a, 4 products a step), keep ? s : fill;  mx = max(M, max_j s[j])
        if mx > M: c = shift_exp(M - mx), L = (L c) // U, A = (A c) // U, M = mx   (c = U otherwise: a no-op)
        pass 2: s[j] again, e = shift_exp(s[j] - M) (int32), L += e, A += e V[j]   (one IMAD.WIDE a product)
    out = requant((A << 16) // L)

The scores are computed twice (d / 4 dp4a each) rather than kept: a block of int32 scores per thread would not fit
beside A in registers. Every division is floor division (A can be negative), as in numpy.

`gpu=False` gives the same loops serial, every buffer global and __dp4a written out (cuda_attention.py's trick):
it runs on the CPU, how the tests check the arithmetic without a GPU.
"""
from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from compiler.backends.tvm_lower.ivit import shift_exp_expr
from compiler.backends.tvm_lower.quant import requant_expr

from . import qattention as kq
from .common import finalize, gpu_form

__all__ = ["TILE", "make_cuda_qattention", "queries", "split", "stage_plan"]

I8, I32, I64 = "int8", "int32", "int64"
TILE = 64                   # keys per staged tile (at most)
SHARED = 48 * 1024          # bytes of static shared memory a block may have
THREADS = 128               # a GPU block's threads at most
# 32-bit registers of a thread's numerator and q row at most: BERT's d = dv = 64 (128 + 16) took 168 in all and
# did not spill; d = dv = 128 in one thread (256 + 32) spilled 1.7 KB a thread, in two (128 + 32) 8 bytes (sm_90)
REGISTERS = 144


def split(d: int, dv: int) -> int:
    """ds: the threads that share a query, each with dv / ds of its numerator's columns."""
    return next(s for s in range(1, dv + 1) if dv % s == 0 and 2 * (dv // s) + -(-d // 4) <= REGISTERS or s == dv)


def queries(lq: int, d: int, dv: int) -> int:
    """tq: the queries of a GPU block, the most that divide lq in at most THREADS threads."""
    return next(t for t in (128, 64, 32, 16, 8, 4, 2, 1) if lq % t == 0 and t * split(d, dv) <= THREADS or t == 1)


def stage_plan(block: int, d: int, dv: int) -> tuple[int, int, int]:
    """(w, g, nt): an op block is nt tiles of w keys; a staged tile holds g op blocks' w keys (g == 1 or nt == 1)."""
    tile = TILE
    while tile > 1 and tile * 4 * (-(-d // 4) + dv) > SHARED:
        tile //= 2
    if block <= tile:
        return block, tile // block, 1
    return tile, 1, -(-block // tile)


def _dp4a(a, b, acc, gpu: bool):
    """CUDA's __dp4a: acc + the sum of the products of the 4 signed bytes of a and b."""
    if gpu:
        return T.call_pure_extern(I32, "__dp4a", a, b, acc)
    for i in range(4):
        acc = acc + T.Cast(I32, T.Cast(I8, a >> (8 * i))) * T.Cast(I32, T.Cast(I8, b >> (8 * i)))
    return acc


def _pack(x, b, row, lo, n: int):
    """The int32 word of the 4 int8 x[b, row, lo .. lo + 3] (bytes past n: 0), little-endian as __dp4a reads it."""
    word = tirx.const(0, "uint32")
    for i in range(4):
        byte = T.Cast("uint32", T.Cast("uint8", x[b, row, T.min(lo + i, n - 1)]))
        word = word | (T.if_then_else(lo + i < n, byte, T.uint32(0)) << T.uint32(8 * i))
    return T.Cast(I32, word)


def _span(*bounds):
    """max(0, min(bounds)): how many keys a tile or op block has."""
    m = bounds[0]
    for x in bounds[1:]:
        m = T.min(m, x)
    return T.max(m, 0)


def make_cuda_qattention(spec: kq.QAttentionSpec, gpu: bool = True) -> tirx.PrimFunc:
    """PrimFunc (q (bh, lq, d), k (bh, lk, d), v (bh, lk, dv) int8, keep (mb, mr, lk) bool, out (bh, lq, dv));
    spec.tq queries (spec.tq * split(d, dv) threads) per GPU block."""
    bh, lq, lk, d, dv, tq, blk = spec.bh, spec.lq, spec.lk, spec.d, spec.dv, spec.tq, spec.block
    nq, ds = lq // tq, split(d, dv)
    nth, dvp = tq * ds, dv // ds                # threads; A's columns a thread
    w, g, nt = stage_plan(blk, d, dv)
    tk = w * g
    nb = -(-lk // blk)                          # op blocks
    nst = -(-nb // g) if nt == 1 else nb        # staging rounds (nt == 1) or op blocks (nt > 1)
    dw = -(-d // 4)                             # K / q words
    vk, vv = (4 if dw % 4 == 0 else 1), (4 if dvp % 4 == 0 else 1)
    k_loads, v_loads = -(-tk * dw // nth), -(-tk * dv // nth)
    x0, n = spec.x0, spec.n
    unit, mshape, mb, mr, (qk_m, qk_c, qk_r), (o_m, o_c, o_r), fill, lowest, zero, frac = kq.constants(spec, I32)
    has_mask = spec.mask_batch > 0
    odt = spec.out_dtype

    loop, unroll, vec, shared, local = gpu_form(gpu)

    @T.macro
    def stage(k, v, ks, vs, b, key0, count, with_k, with_v):
        """Tile rows 0 .. count - 1 <- keys key0 ..: K packed to words, V widened (rows past count: left)."""
        for t in loop(nth, "threadIdx.x"):
            if with_k:
                for e in unroll(k_loads):
                    if e * nth + t < count * dw:
                        ks[(e * nth + t) // dw, (e * nth + t) % dw] = _pack(
                            k, b, key0 + (e * nth + t) // dw, (e * nth + t) % dw * 4, d)
            if with_v:
                for e in unroll(v_loads):
                    if e * nth + t < count * dv:
                        vs[(e * nth + t) // dv, (e * nth + t) % dv] = T.Cast(
                            I32, v[b, key0 + (e * nth + t) // dv, (e * nth + t) % dv])

    @T.macro
    def score(keep, ks, qp, kw, sc, b, t, qi, row, key):
        """sc[t, 0] = the key's score on the int16 grid, keep mask applied."""
        for u in unroll(vk):
            sc[t, u] = 0
        for i4 in unroll(dw // vk):
            for u in vec(vk):
                kw[t, u] = ks[row, i4 * vk + u]
            for u in unroll(vk):
                sc[t, u] = _dp4a(qp[t, i4 * vk + u], kw[t, u], sc[t, u], gpu)
        for u in unroll(vk - 1):
            sc[t, 0] = sc[t, 0] + sc[t, u + 1]
        sc[t, 0] = T.Cast(I32, requant_expr(sc[t, 0], qk_m, qk_c, qk_r, 0, 0, spec.qk_qmin, spec.qk_qmax))
        if has_mask:
            # branch-free (an if on the mask took ptxas from 168 to 255 registers at BERT's shape)
            sc[t, 0] = fill + (sc[t, 0] - fill) * T.Cast(I32, keep[b * mb, qi * mr, key])

    @T.macro
    def block_max(keep, ks, qp, kw, sc, st, b, t, qi, row0, key0, count):
        for j in T.serial(count):
            score(keep, ks, qp, kw, sc, b, t, qi, row0 + j, key0 + j)
            st[t, 2] = T.max(st[t, 2], T.Cast(I64, sc[t, 0]))

    @T.macro
    def correct(acc, st, t):
        if st[t, 2] > st[t, 0]:                 # the max grew: rescale the running state
            st[t, 3] = shift_exp_expr(st[t, 0] - st[t, 2], x0, n)
            st[t, 1] = T.floordiv(st[t, 1] * st[t, 3], unit)
            for c in unroll(dvp):
                acc[t, c] = T.floordiv(acc[t, c] * st[t, 3], unit)
            st[t, 0] = st[t, 2]

    @T.macro
    def accumulate(keep, ks, vs, qp, kw, vw, sc, st, acc, b, t, qi, row0, key0, count):
        for j in T.serial(count):
            score(keep, ks, qp, kw, sc, b, t, qi, row0 + j, key0 + j)
            # shift_exp in int32: s - M >= -65535 and every term below 2^31 (the op's type rule)
            sc[t, 0] = shift_exp_expr(sc[t, 0] - T.Cast(I32, st[t, 0]), x0, n, I32)
            st[t, 1] = st[t, 1] + T.Cast(I64, sc[t, 0])
            for c4 in unroll(dvp // vv):
                for u in vec(vv):
                    vw[t, u] = vs[row0 + j, t % ds * dvp + c4 * vv + u]
                for u in unroll(vv):
                    acc[t, c4 * vv + u] = acc[t, c4 * vv + u] + T.Cast(I64, sc[t, 0]) * T.Cast(I64, vw[t, u])

    @T.prim_func(check_well_formed=False)
    def qattention(q: T.Buffer((bh, lq, d), "int8"), k: T.Buffer((bh, lk, d), "int8"),
                   v: T.Buffer((bh, lk, dv), "int8"), keep: T.Buffer(mshape, "bool"),
                   out: T.Buffer((bh, lq, dv), odt)):
        T.func_attr({"tirx.noalias": True})
        for b in loop(bh, "blockIdx.y"):
            for qb in loop(nq, "blockIdx.x"):
                ks = T.alloc_buffer((tk, dw), I32, scope=shared)
                vs = T.alloc_buffer((tk, dv), I32, scope=shared)
                qp = T.alloc_buffer((nth, dw), I32, scope=local)
                acc = T.alloc_buffer((nth, dvp), I64, scope=local)
                st = T.alloc_buffer((nth, 4), I64, scope=local)      # M, L, the block's max, the correction
                sc = T.alloc_buffer((nth, vk), I32, scope=local)     # partial sums of a score; the score; e
                kw = T.alloc_buffer((nth, vk), I32, scope=local)
                vw = T.alloc_buffer((nth, vv), I32, scope=local)
                for t in loop(nth, "threadIdx.x"):
                    for i in unroll(dw):
                        qp[t, i] = _pack(q, b, qb * tq + t // ds, i * 4, d)
                    for c in unroll(dvp):
                        acc[t, c] = zero
                    st[t, 0] = lowest
                    st[t, 1] = zero
                for r in T.serial(nst):
                    if nt == 1:                 # one staged tile: op blocks r g .. r g + g - 1
                        stage(k, v, ks, vs, b, r * tk, _span(tk, lk - r * tk), True, True)
                        for t in loop(nth, "threadIdx.x"):
                            for gi in T.serial(g):
                                st[t, 2] = st[t, 0]
                                block_max(keep, ks, qp, kw, sc, st, b, t, qb * tq + t // ds, gi * w, r * tk + gi * w,
                                          _span(w, lk - r * tk - gi * w))
                                correct(acc, st, t)
                                accumulate(keep, ks, vs, qp, kw, vw, sc, st, acc, b, t, qb * tq + t // ds, gi * w,
                                           r * tk + gi * w, _span(w, lk - r * tk - gi * w))
                    else:                       # op block r, nt tiles of w keys, in two passes
                        for t in loop(nth, "threadIdx.x"):
                            st[t, 2] = st[t, 0]
                        for p in T.serial(nt):
                            stage(k, v, ks, vs, b, r * blk + p * w, _span(w, blk - p * w, lk - r * blk - p * w),
                                  True, False)
                            for t in loop(nth, "threadIdx.x"):
                                block_max(keep, ks, qp, kw, sc, st, b, t, qb * tq + t // ds, 0, r * blk + p * w,
                                          _span(w, blk - p * w, lk - r * blk - p * w))
                        for t in loop(nth, "threadIdx.x"):
                            correct(acc, st, t)
                        for p in T.serial(nt):
                            stage(k, v, ks, vs, b, r * blk + p * w, _span(w, blk - p * w, lk - r * blk - p * w),
                                  True, True)
                            for t in loop(nth, "threadIdx.x"):
                                accumulate(keep, ks, vs, qp, kw, vw, sc, st, acc, b, t, qb * tq + t // ds, 0,
                                           r * blk + p * w, _span(w, blk - p * w, lk - r * blk - p * w))
                for t in loop(nth, "threadIdx.x"):
                    for c in unroll(dvp):
                        out[b, qb * tq + t // ds, t % ds * dvp + c] = T.Cast(odt, requant_expr(
                            T.floordiv(acc[t, c] << frac, st[t, 1]), o_m, o_c, o_r, 0, spec.zero_point, spec.qmin,
                            spec.qmax))

    return finalize(qattention)
