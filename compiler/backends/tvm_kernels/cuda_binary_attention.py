"""ShiftAddViT's binary-code linear attention (mfree.binary_attention, compiler/ops/mfree.py) on an NVIDIA GPU,
bit-exact with the op's reference (the GPU form of binary_attention.py's CPU kernel, same BinaryAttentionSpec). Two
kernels:

    vmax:   blockIdx.x = batch * head; the bits of max|V| over the head's V (a float's |x| bits order as int32s:
            an integer max, exact), a tree in shared memory -> part[b] (int32)
    attention: blockIdx.y = batch * head, blockIdx.x = a chunk of cn of V's columns, THREADS threads
        every thread: s = max_b part[b] > 0 ? max / 127 : 1           the per-tensor scale (all of V: every head)
        for each tile of tm keys:
            staged in shared memory by all the threads: v8 = clip(floor(V / s + 0.5), -127, 127) (tm x cn, int32)
            and the codes [K > 0] (tm x d, int8)
            KV[e, n] += select(code[m, e], v8[m, n], 0)     each thread d * cn / THREADS entries, in registers
            KS[e]    += select(code[m, e], 1, 0)
        KV (d x cn) and KS (d) to shared memory, then each thread a query row p (p = t, t + THREADS, ...):
            num[n] = sum_e select(Q[p, e] > 0, KV[e, n], 0),  den = sum_e select(Q[p, e] > 0, KS[e], 0)
            r = s / float(max(den, 1));  out[p, n] = float(num[n]) * r

Every product with a code is a select and an add into an int32 (exact: the op's type rule bounds the sums below
2^31, so their order is free). The float steps are the reference's single IEEE float32 operations. TVM compiles the
CUDA source with nvcc --use_fast_math, which turns `a / b` into an approximate division and even __fdiv_rn /
__fadd_rn / __fmul_rn into their flush-to-zero forms (div.rn.ftz.f32: a subnormal s, V / s or r would differ). So
on the GPU each of them (V / s, + 0.5, max / 127, s / den, num * r) is its PTX instruction itself (div.rn.f32,
add.rn.f32, mul.rn.f32: IEEE round to nearest, subnormals kept, never contracted to an fma), a call of a function
that tvm_cuda_source.fix defines in front of the kernels in inline assembly (_ieee). max|V| is an integer max of bits (no abs.ftz / max.ftz); floor and the int <->
float conversions are exact (floor's operand V / s + 0.5 is 0 or at least 2^-26: never subnormal).

`gpu=False` gives the same loops serial, every buffer global and the plain float operations (cuda_attention.py's
trick): it runs on the CPU, how the tests check the arithmetic without a GPU (each thread's registers are a row of
their own, the stages run one after another as the barriers order them).
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm import tirx
from tvm.script import tirx as T

from compiler.backends.tvm_cuda_source import IEEE_OPS

from .binary_attention import LEVELS, BinaryAttentionSpec
from .common import finalize, gpu_form

__all__ = ["THREADS", "Plan", "plan", "make_cuda_vmax", "make_cuda_binary_attention"]

F32, I32, I8 = "float32", "int32", "int8"
THREADS = 128               # a GPU block's threads
TILE = 32                   # keys per staged tile (at most)
COLUMNS = 16                # V's columns per GPU block (at most)
ACC = 32                    # KV entries a thread keeps in registers (at most, where fewer columns do it)
SHARED = 48 * 1024          # bytes of static shared memory a block may have
ABS = 0x7FFFFFFF            # the bits of |x| of a float32 x
INF = 0x7F800000            # the bits of +inf


@dataclass(frozen=True)
class Plan:
    cn: int                 # V's columns per block (divides dv)
    tm: int                 # keys per staged tile


def _shared(d: int, cn: int, tm: int) -> int:
    return 4 * tm * cn + tm * d + 4 * d * cn + 4 * d


def plan(d: int, dv: int) -> Plan:
    """The most columns (<= COLUMNS, dividing dv) whose KV entries fit ACC registers a thread, the most keys a tile
    (<= TILE) that fit shared memory."""
    cn = next(c for c in range(min(dv, COLUMNS), 0, -1) if dv % c == 0 and (-(-d * c // THREADS) <= ACC or c == 1))
    tm = TILE
    while tm > 1 and _shared(d, cn, tm) > SHARED:
        tm //= 2
    if _shared(d, cn, tm) > SHARED:
        raise ValueError(f"binary attention: depth {d} does not fit a GPU block's shared memory")
    return Plan(cn, tm)


def _ieee(op: str, a, b, gpu: bool):
    """a op b (op div, add or mul) as one IEEE float32 operation: on the GPU one PTX instruction (tvm_cuda_source's
    IEEE_OPS: no flush to zero under --use_fast_math, no contraction); on the CPU the plain operation."""
    if not gpu:
        return {"div": lambda: a / b, "add": lambda: a + b, "mul": lambda: a * b}[op]()
    return T.call_pure_extern(F32, IEEE_OPS[op], a, b)


def _positive(x):
    """The code [x > 0] of a float32 x from its bits, 0 < bits <= those of +inf (int32; NaN: 0): nvcc --use_fast_math
    compares floats with setp.gt.ftz, which reads a positive subnormal as 0."""
    bits = T.reinterpret(I32, x)
    return T.And(bits > 0, bits <= INF)


def make_cuda_vmax(bh: int, n: int, gpu: bool = True) -> tirx.PrimFunc:
    """PrimFunc (v (bh, n) float32, part (bh,) int32): part[b] = the bits of max |v[b, :]|. Its body is a (root)
    block: Relax's RewriteDataflowReshape takes a call with one input and one output for a possible reshape and
    fails on a PrimFunc whose body is not a block."""
    loop, unroll, _, shared, local = gpu_form(gpu)
    nth = THREADS
    nj, levels = -(-n // nth), nth.bit_length() - 1

    @T.prim_func(s_tir=True, check_well_formed=False)
    def vmax(v: T.Buffer((bh, n), F32), part: T.Buffer((bh,), I32)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):     # see the docstring
            for b in loop(bh, "blockIdx.x"):
                red = T.alloc_buffer((nth,), I32, scope=shared)
                mx = T.alloc_buffer((nth, 1), I32, scope=local)
                for t in loop(nth, "threadIdx.x"):
                    mx[t, 0] = 0
                    for j in T.serial(nj):
                        if j * nth + t < n:
                            mx[t, 0] = T.max(mx[t, 0], T.bitwise_and(T.reinterpret(I32, v[b, j * nth + t]), ABS))
                    red[t] = mx[t, 0]
                for lv in T.serial(levels):                 # red[t] = max(red[t], red[t + h]), h = nth / 2 .. 1
                    for t in loop(nth, "threadIdx.x"):
                        if t < T.shift_right(nth // 2, lv):
                            red[t] = T.max(red[t], red[t + T.shift_right(nth // 2, lv)])
                for t in loop(nth, "threadIdx.x"):
                    if t == 0:
                        part[b] = red[0]

    return finalize(vmax)


def make_cuda_binary_attention(spec: BinaryAttentionSpec, gpu: bool = True) -> tirx.PrimFunc:
    """PrimFunc (q (bh, lq, d), k (bh, lk, d), v (bh, lk, dv) float32, part (bh,) int32 (make_cuda_vmax's),
    out (bh, lq, dv) float32)."""
    bh, lq, lk, d, dv = spec.bh, spec.lq, spec.lk, spec.d, spec.dv
    loop, unroll, _, shared, local = gpu_form(gpu)
    pl = plan(d, dv)
    cn, tm, nth = pl.cn, pl.tm, THREADS
    nc, nt, npq = dv // cn, -(-lk // tm), -(-lq // nth)
    ne, nks = -(-d * cn // nth), -(-d // nth)         # KV entries, KS entries a thread
    nv, nk = -(-tm * cn // nth), -(-tm * d // nth)    # staged v8, codes a thread (a tile)
    half, levels, one = (tirx.const(x, F32) for x in (0.5, float(LEVELS), 1.0))

    def ieee(op, a, b):
        return _ieee(op, a, b, gpu)

    @T.prim_func(check_well_formed=False)
    def binary_attention(q: T.Buffer((bh, lq, d), F32), k: T.Buffer((bh, lk, d), F32),
                         v: T.Buffer((bh, lk, dv), F32), part: T.Buffer((bh,), I32),
                         out: T.Buffer((bh, lq, dv), F32)):
        T.func_attr({"tirx.noalias": True})
        for b in loop(bh, "blockIdx.y"):
            for cb in loop(nc, "blockIdx.x"):
                vs = T.alloc_buffer((tm, cn), I32, scope=shared)     # v8 of the tile's keys, the block's columns
                kc = T.alloc_buffer((tm, d), I8, scope=shared)       # [K > 0] of the tile's keys
                kvs = T.alloc_buffer((d, cn), I32, scope=shared)
                kss = T.alloc_buffer((d,), I32, scope=shared)
                sc = T.alloc_buffer((nth, 2), F32, scope=local)     # s, r
                it = T.alloc_buffer((nth, 2), I32, scope=local)     # max|V|'s bits, den
                acc = T.alloc_buffer((nth, ne), I32, scope=local)
                ksa = T.alloc_buffer((nth, nks), I32, scope=local)
                num = T.alloc_buffer((nth, cn), I32, scope=local)
                for t in loop(nth, "threadIdx.x"):
                    it[t, 0] = 0
                    for i in T.serial(bh):
                        it[t, 0] = T.max(it[t, 0], part[i])
                    sc[t, 0] = T.if_then_else(it[t, 0] > 0, ieee("div", T.reinterpret(F32, it[t, 0]), levels), one)
                    for j in unroll(ne):
                        acc[t, j] = 0
                    for j in unroll(nks):
                        ksa[t, j] = 0
                for tile in T.serial(nt):
                    for t in loop(nth, "threadIdx.x"):
                        for j in unroll(nv):
                            if j * nth + t < tm * cn and tile * tm + (j * nth + t) // cn < lk:
                                x = v[b, tile * tm + (j * nth + t) // cn, cb * cn + (j * nth + t) % cn]
                                vs[(j * nth + t) // cn, (j * nth + t) % cn] = T.max(T.min(T.Cast(I32, T.floor(
                                    ieee("add", ieee("div", x, sc[t, 0]), half))), LEVELS), -LEVELS)
                        for j in unroll(nk):
                            if j * nth + t < tm * d and tile * tm + (j * nth + t) // d < lk:
                                kc[(j * nth + t) // d, (j * nth + t) % d] = T.Select(
                                    _positive(k[b, tile * tm + (j * nth + t) // d, (j * nth + t) % d]), T.int8(1),
                                    T.int8(0))
                    for t in loop(nth, "threadIdx.x"):
                        for m in T.serial(T.min(tm, lk - tile * tm)):
                            for j in unroll(ne):
                                if j * nth + t < d * cn:
                                    acc[t, j] = acc[t, j] + T.Select(kc[m, (j * nth + t) // cn] != T.int8(0),
                                                                     vs[m, (j * nth + t) % cn], 0)
                            for j in unroll(nks):
                                if j * nth + t < d:
                                    ksa[t, j] = ksa[t, j] + T.Select(kc[m, j * nth + t] != T.int8(0), 1, 0)
                for t in loop(nth, "threadIdx.x"):
                    for j in unroll(ne):
                        if j * nth + t < d * cn:
                            kvs[(j * nth + t) // cn, (j * nth + t) % cn] = acc[t, j]
                    for j in unroll(nks):
                        if j * nth + t < d:
                            kss[j * nth + t] = ksa[t, j]
                for t in loop(nth, "threadIdx.x"):
                    for pi in T.serial(npq):
                        if pi * nth + t < lq:
                            it[t, 1] = 0
                            for c in unroll(cn):
                                num[t, c] = 0
                            for e in T.serial(d):
                                it[t, 1] = it[t, 1] + T.Select(_positive(q[b, pi * nth + t, e]), kss[e], 0)
                                for c in unroll(cn):
                                    num[t, c] = num[t, c] + T.Select(_positive(q[b, pi * nth + t, e]),
                                                                     kvs[e, c], 0)
                            sc[t, 1] = ieee("div", sc[t, 0], T.Cast(F32, T.max(it[t, 1], 1)))
                            for c in unroll(cn):
                                out[b, pi * nth + t, cb * cn + c] = ieee("mul", T.Cast(F32, num[t, c]), sc[t, 1])

    return finalize(binary_attention)
