"""I-ViT's I-LayerNorm (q.layernorm, compiler/ops/ivit.py) on an NVIDIA GPU, bit-exact with the op's reference: one
kernel, a block per row of the last axis, the row's values read in place.

    blockIdx.x = a row of C values, threads t = 0 .. THREADS-1 each reading the row's entries t, t + THREADS, ...
        s = sum x                    each thread's int64 partial sum, a tree in shared memory
        mu = floor((2 s + C) / 2C)   thread 0, into shared memory
        var = sum (x - mu)^2         as s
        k = 10 Newton steps, factor = (2^31 - 1) // k      thread 0, once per row
        out = clamp((((((x - mu) * factor) >> 1) * mult + bias + 2^(shift-1)) >> shift) + zero_point)

The integer sums are exact in any order (int64: the op's inputs are at most 16 bits and a row's squares stay far
below 2^63). Through dlight's reduction schedule the Newton steps and the division were inlined into every element
(eleven 64-bit divisions an element, emulated on the GPU: the H200 run measured BERT-small INT8's nine layer norms
at 0.64 ms of its 2.78 at batch 32); here they run once per row, in the one launch the TE form took too.

Shiftmax stays on its TE lowering (tvm_lower/ivit.py): its division by the row sum runs per element there too (in 32
bits where its dividend has 31), but a kernel of its own is one launch more per attention, since FuseOps fuses the
TE form with the requant that follows it.

`gpu=False` gives the same loops serial and every buffer global (cuda_attention.py's trick): it runs on the CPU,
how the tests check the arithmetic without a GPU.
"""
from __future__ import annotations

import math

from tvm import tirx
from tvm.script import tirx as T

from compiler.ops import ivit

from .common import finalize, gpu_form

__all__ = ["threads", "make_cuda_layernorm"]

I64 = "int64"
MAX_THREADS = 256


def threads(c: int) -> int:
    """A block's threads for rows of c values: a power of two, about four values a thread, 32 to MAX_THREADS."""
    return min(MAX_THREADS, max(32, 1 << (max(1, -(-c // 4)) - 1).bit_length()))


def make_cuda_layernorm(shape: tuple[int, ...], in_dtype: str, shift: int, zero_point: int, qmin: int, qmax: int,
                        out_dtype: str, gpu: bool = True) -> tirx.PrimFunc:
    """PrimFunc (x `shape` in_dtype, mult (C,) int32, bias (C,) int64, out `shape` out_dtype): q.layernorm over the
    last axis, x and out read as (rows, C) in place (a reshape around the call would be a copy kernel each). Its
    body is a (root) block, as make_cuda_vmax's (Relax's RewriteDataflowReshape)."""
    loop, unroll, _, shared, local = gpu_form(gpu)
    rows, c = math.prod(shape[:-1]), shape[-1]
    nth = threads(c)
    nj, levels = -(-c // nth), nth.bit_length() - 1
    one, rnd = tirx.const(1, I64), tirx.const((1 << (shift - 1)) if shift > 0 else 0, I64)
    start, int31 = tirx.const(ivit.NEWTON_START, I64), tirx.const(ivit.INT31, I64)

    @T.prim_func(s_tir=True, check_well_formed=False)
    def layernorm(xs: T.Buffer(shape, in_dtype), mult: T.Buffer((c,), "int32"), bias: T.Buffer((c,), I64),
                  outs: T.Buffer(shape, out_dtype)):
        T.func_attr({"tirx.noalias": True})
        x = T.decl_buffer((rows, c), in_dtype, data=xs.data)
        out = T.decl_buffer((rows, c), out_dtype, data=outs.data)
        with T.sblock("root"):
            for r in loop(rows, "blockIdx.x"):
                red = T.alloc_buffer((nth,), I64, scope=shared)
                st = T.alloc_buffer((2,), I64, scope=shared)            # mu, factor
                acc = T.alloc_buffer((nth, 1), I64, scope=local)
                for t in loop(nth, "threadIdx.x"):
                    acc[t, 0] = T.int64(0)
                    for j in unroll(nj):
                        if j * nth + t < c:
                            acc[t, 0] = acc[t, 0] + T.Cast(I64, x[r, j * nth + t])
                    red[t] = acc[t, 0]
                for lv in T.serial(levels):                 # red[t] += red[t + h], h = nth / 2 .. 1
                    for t in loop(nth, "threadIdx.x"):
                        if t < T.shift_right(nth // 2, lv):
                            red[t] = red[t] + red[t + T.shift_right(nth // 2, lv)]
                for t in loop(nth, "threadIdx.x"):
                    if t == 0:
                        st[0] = T.floordiv(red[0] * T.int64(2) + T.int64(c), T.int64(2 * c))
                for t in loop(nth, "threadIdx.x"):
                    acc[t, 0] = T.int64(0)
                    for j in unroll(nj):
                        if j * nth + t < c:
                            acc[t, 0] = acc[t, 0] + (T.Cast(I64, x[r, j * nth + t]) - st[0]) * (
                                T.Cast(I64, x[r, j * nth + t]) - st[0])
                    red[t] = acc[t, 0]
                for lv in T.serial(levels):
                    for t in loop(nth, "threadIdx.x"):
                        if t < T.shift_right(nth // 2, lv):
                            red[t] = red[t] + red[t + T.shift_right(nth // 2, lv)]
                for t in loop(nth, "threadIdx.x"):
                    if t == 0:
                        acc[t, 0] = start
                        for _ in T.serial(ivit.NEWTON_STEPS):
                            acc[t, 0] = T.shift_right(acc[t, 0] + T.floordiv(red[0], acc[t, 0]), one)
                        st[1] = T.floordiv(int31, acc[t, 0])
                for t in loop(nth, "threadIdx.x"):
                    for j in unroll(nj):
                        if j * nth + t < c:
                            out[r, j * nth + t] = T.Cast(out_dtype, T.max(T.min(T.shift_right(
                                T.shift_right((T.Cast(I64, x[r, j * nth + t]) - st[0]) * st[1], one)
                                * T.Cast(I64, mult[j * nth + t]) + bias[j * nth + t] + rnd, T.int64(shift))
                                + T.int64(zero_point), T.int64(qmax)), T.int64(qmin)))

    return finalize(layernorm)
