"""One direction of an rnn / gru / lstm as one NVIDIA GPU kernel: the recurrence of tvm_lower/recurrent.py (the
input projection of every step is one matmul before it, gx).

    blockIdx.x = batch entry b, threadIdx.x = gate columns j (th threads, each ceil(G*H / th) columns)
    the entry's state h (and c), its pre-activations `gate` (G*H) and gru's r * h in shared memory
    for each step s < lens[b] (time t = s, or lens[b] - 1 - s for a reverse direction; the loop's extent is
    the entry's length: TVM puts no barrier under a condition):
        gate[j] = Rb[j] (+ gx[t, b, j]) + sum_k h[k] R^T[k, j]    every thread reads the same h[k] (a shared-memory
                                                                   broadcast); a warp reads a row of R^T coalesced
        gru: rh[k] = r[k] * h[k]; without linear_before_reset gate_h[j] = Rb_h[j] + sum_k rh[k] R_h^T[k, j]
        unit j's new h (and c) from its gates; y[t, b, j] = h[j]
    the rows of the steps past lens[b] are 0; then Y_h, Y_c = h, c

A batch entry's steps are sequential: an entry is one block, and each step's matrix-vector product is spread over
the block's threads (TVM inserts the barriers between the phases that read what other threads wrote). Float32
inside: float16 tensors are widened as they are read and the outputs rounded once. One signature for the three
kinds (c0, p and cn are unused by rnn and gru).

`gpu=False` gives the same loops serial over global buffers, which runs on the CPU: how the tests check the
kernel's arithmetic without a GPU (each phase's threads run one after another, as the barriers order them).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tvm import tirx
from tvm.script import tirx as T

from compiler.backends.tvm_kernels.common import finalize, gpu_form
from compiler.ops.recurrent import GATES

Act = Callable[[Any], Any]          # PrimExpr -> PrimExpr
MAX_THREADS = 1024        # a step is a matrix-vector product on one block: as many threads as it has columns


def threads(gs: int) -> int:
    """Threads per block for G*H gate columns: whole warps, at most MAX_THREADS."""
    return min(MAX_THREADS, -(-gs // 32) * 32)


def make_cuda_recurrent(kind: str, steps: int, n: int, hs: int, dtype: str, reverse: bool, acts: list[Act],
                        cl: Act, flag: bool = False, gpu: bool = True) -> tirx.PrimFunc:
    """PrimFunc (gx (T, N, G*H), rt = R^T (H, G*H), rb (G*H,), lens (N,) int32, h0 (N, H), c0 (N, H),
    p (3H,), y (T, N, H), hn (N, H), cn (N, H)). `acts`: the direction's gate functions on float32
    PrimExprs, `cl` the clip; `flag`: gru's linear_before_reset, lstm's input_forget."""
    gs = GATES[kind] * hs
    th = threads(gs)
    ug, uh = -(-gs // th), -(-hs // th)
    f32 = "float32"
    loop, _, _, shared, local = gpu_form(gpu)
    f = acts[0]
    g = acts[1] if len(acts) > 1 else f
    hfn = acts[2] if len(acts) > 2 else f
    input_gx = kind != "gru"            # gru adds its input projection gate by gate, after the reset gate

    def w(x):
        return T.Cast(f32, x)

    @T.prim_func(private=True, check_well_formed=False)
    def recurrent(gx: T.Buffer((steps, n, gs), dtype), rt: T.Buffer((hs, gs), dtype), rb: T.Buffer((gs,), dtype),
                  lens: T.Buffer((n,), "int32"), h0: T.Buffer((n, hs), dtype), c0: T.Buffer((n, hs), dtype),
                  p: T.Buffer((3 * hs,), dtype), y: T.Buffer((steps, n, hs), dtype), hn: T.Buffer((n, hs), dtype),
                  cn: T.Buffer((n, hs), dtype)):
        T.func_attr({"tirx.noalias": True})
        for b in loop(n, "blockIdx.x"):
            h = T.alloc_buffer((hs,), f32, scope=shared)
            c = T.alloc_buffer((hs,), f32, scope=shared)
            rh = T.alloc_buffer((hs,), f32, scope=shared)
            gate = T.alloc_buffer((gs,), f32, scope=shared)
            acc = T.alloc_buffer((th,), f32, scope=local)
            for i in loop(th, "threadIdx.x"):
                for u in T.serial(uh):
                    if u * th + i < hs:
                        h[u * th + i] = w(h0[b, u * th + i])
                        c[u * th + i] = w(c0[b, u * th + i])
            for s in T.serial(T.min(lens[b], steps)):       # a loop, not a condition: barriers go inside it
                t = T.if_then_else(reverse, T.min(lens[b], steps) - 1 - s, s)
                for i in loop(th, "threadIdx.x"):
                    for u in T.serial(ug):
                        if u * th + i < gs:
                            acc[i] = w(rb[u * th + i]) + T.if_then_else(input_gx, w(gx[t, b, u * th + i]),
                                                                         T.float32(0))
                            for k in T.serial(hs):
                                acc[i] = acc[i] + h[k] * w(rt[k, u * th + i])
                            gate[u * th + i] = acc[i]
                if kind == "gru" and not flag:
                    for i in loop(th, "threadIdx.x"):
                        for u in T.serial(uh):
                            if u * th + i < hs:
                                rh[u * th + i] = f(cl(w(gx[t, b, hs + u * th + i]) + gate[hs + u * th + i])) * \
                                    h[u * th + i]
                    for i in loop(th, "threadIdx.x"):
                        for u in T.serial(uh):
                            if u * th + i < hs:
                                acc[i] = w(rb[2 * hs + u * th + i])
                                for k in T.serial(hs):
                                    acc[i] = acc[i] + rh[k] * w(rt[k, 2 * hs + u * th + i])
                                gate[2 * hs + u * th + i] = acc[i]
                for i in loop(th, "threadIdx.x"):
                    for u in T.serial(uh):
                        if u * th + i < hs:
                            if kind == "rnn":
                                h[u * th + i] = f(cl(gate[u * th + i]))
                            elif kind == "gru":
                                acc[i] = f(cl(w(gx[t, b, u * th + i]) + gate[u * th + i]))      # z
                                h[u * th + i] = (T.float32(1) - acc[i]) * g(cl(w(gx[t, b, 2 * hs + u * th + i]) + (
                                    T.if_then_else(flag, f(cl(w(gx[t, b, hs + u * th + i]) + gate[hs + u * th + i])),
                                                   T.float32(1)) * gate[2 * hs + u * th + i]))) + \
                                    acc[i] * h[u * th + i]
                            else:
                                acc[i] = f(cl(gate[u * th + i] + w(p[u * th + i]) * c[u * th + i]))      # i
                                c[u * th + i] = T.if_then_else(
                                    flag, T.float32(1) - acc[i],
                                    f(cl(gate[2 * hs + u * th + i] + w(p[2 * hs + u * th + i]) * c[u * th + i]))) * \
                                    c[u * th + i] + acc[i] * g(cl(gate[3 * hs + u * th + i]))
                                h[u * th + i] = f(cl(gate[hs + u * th + i] + w(p[hs + u * th + i]) * c[u * th + i])) * \
                                    hfn(c[u * th + i])
                            y[t, b, u * th + i] = T.Cast(dtype, h[u * th + i])
            for s in T.serial(steps):
                for i in loop(th, "threadIdx.x"):
                    for u in T.serial(uh):
                        if s >= lens[b] and u * th + i < hs:
                            y[s, b, u * th + i] = T.Cast(dtype, T.float32(0))
            for i in loop(th, "threadIdx.x"):
                for u in T.serial(uh):
                    if u * th + i < hs:
                        hn[b, u * th + i] = T.Cast(dtype, h[u * th + i])
                        cn[b, u * th + i] = T.Cast(dtype, c[u * th + i])

    return finalize(recurrent) if gpu else recurrent
