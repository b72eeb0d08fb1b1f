"""Lowering of rnn / gru / lstm: per direction, the input projection of every step is one Relax
matmul (T*N, I) x (I, G*H); the recurrence is one TIR function with a serial loop over time
that keeps the state in its output buffers (h, c) and computes each step's gates as a small
matrix-vector product per batch entry. Batch entries past their seq_lens are left alone and
their Y rows are zero, as in the reference. On cuda the recurrence is one GPU kernel per direction, a block per
batch entry (tvm_kernels/cuda_recurrent.py)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from tvm import relax, tirx
from tvm.script import tirx as T

from compiler.backends.tvm_kernels.common import fast_exp, fast_tanh
from compiler.backends.tvm_lower.registry import LowerCtx, const, dtype_of, lowers, shape_of
from compiler.ir import Node, Value
from compiler.ops import recurrent as rec

R = relax.op
Act = Callable[[Any], Any]     # PrimExpr -> PrimExpr


def _activation(name: str, alpha: float, beta: float, dt: str, fast: bool = True) -> Act:
    """`fast` float32: vectorizable forms (no libm call per element, ~1e-7 relative error) for the CPU; the
    GPU has its own exp and tanh."""
    def c(v: float) -> tirx.PrimExpr:
        return tirx.const(v, dt)

    fast = fast and dt == "float32"
    table: dict[str, Act] = {
        "sigmoid": (lambda x: c(1) / (c(1) + fast_exp(c(0) - x, dt))) if fast else tirx.sigmoid,
        "tanh": (lambda x: fast_tanh(x, dt)) if fast else tirx.tanh,
        "relu": lambda x: tirx.max(x, c(0)),
        "softsign": lambda x: x / (c(1) + tirx.abs(x)),
        "softplus": lambda x: tirx.max(x, c(0)) + tirx.log(c(1) + tirx.exp(c(0) - tirx.abs(x))),
        "affine": lambda x: c(alpha) * x + c(beta),
        "leakyrelu": lambda x: tirx.Select(x >= c(0), x, c(alpha) * x),
        "thresholdedrelu": lambda x: tirx.Select(x > c(alpha), x, c(0)),
        "scaledtanh": lambda x: c(alpha) * tirx.tanh(c(beta) * x),
        "hardsigmoid": lambda x: tirx.max(tirx.min(c(alpha) * x + c(beta), c(1)), c(0)),
        "elu": lambda x: tirx.Select(x > c(0), x, c(alpha) * (tirx.exp(x) - c(1))),
    }
    return table[name]


def _lanes(hs: int) -> int:
    """Vector width of the loops over a gate's hs units (1: scalar)."""
    return 16 if hs % 16 == 0 else (8 if hs % 8 == 0 else 1)


def _panel(gs: int, v: int) -> int:
    """Width of a recurrent-weight panel: up to 4 vectors of v lanes (sums held in registers), dividing gs."""
    return max(u * v for u in (4, 2, 1) if gs % (u * v) == 0)


def _panels(ctx: LowerCtx, r: relax.Expr, r_value: Value, d: int, hs: int, gs: int, pw: int) -> relax.Expr:
    """R[d]^T (hs, gs) as panels (gs // pw, hs, pw), each contiguous: packed here when R is a constant."""
    if r_value.is_const:
        w = np.asarray(r_value.const)[d].T
        return relax.const(np.ascontiguousarray(w.reshape(hs, gs // pw, pw).transpose(1, 0, 2)))
    rt = R.permute_dims(_pick(ctx, r, d), [1, 0])
    return ctx.emit(R.permute_dims(R.reshape(rt, (hs, gs // pw, pw)), [1, 0, 2]))


def _clipper(clip: float, dt: str) -> Act:
    if clip <= 0:
        return lambda x: x
    lo, hi = tirx.const(-clip, dt), tirx.const(clip, dt)
    return lambda x: tirx.max(tirx.min(x, hi), lo)


def _lstm_func(steps: int, n: int, hs: int, dt: str, reverse: bool, acts: list[Act], cl: Act,
               input_forget: bool) -> tirx.PrimFunc:
    f, g, h = acts
    gs = 4 * hs
    v = _lanes(hs)
    pw = _panel(gs, v)

    @T.prim_func(private=True)
    def lstm_loop(gx: T.Buffer((steps, n, gs), dt), rt: T.Buffer((gs // pw, hs, pw), dt),
                  rb: T.Buffer((gs,), dt), lens: T.Buffer((n,), "int32"),
                  h0: T.Buffer((n, hs), dt), c0: T.Buffer((n, hs), dt), p: T.Buffer((3 * hs,), dt),
                  y: T.Buffer((steps, n, hs), dt), hn: T.Buffer((n, hs), dt),
                  cn: T.Buffer((n, hs), dt)):
        T.func_attr({"tirx.noalias": True})
        gate = T.alloc_buffer((gs,), dt)
        for b, j in T.grid(n, hs):
            hn[b, j] = h0[b, j]
            cn[b, j] = c0[b, j]
        for s in T.serial(steps):
            for b in T.serial(n):
                if s < lens[b]:
                    t = T.if_then_else(reverse, lens[b] - 1 - s, s)
                    for jb in T.serial(gs // pw):
                        # one panel of the recurrent weights: its pw sums stay in registers over k
                        acc = T.alloc_buffer((pw,), dt)
                        for q in T.vectorized(pw):
                            acc[q] = gx[t, b, jb * pw + q] + rb[jb * pw + q]
                        for k in T.serial(hs):
                            for q in T.vectorized(pw):
                                acc[q] = acc[q] + hn[b, k] * rt[jb, k, q]
                        for q in T.vectorized(pw):
                            gate[jb * pw + q] = acc[q]
                    # gates in place (i, f), then c, then h: plain vector stores, no let-bound vectors
                    for jo in T.serial(hs // v):
                        for ji in T.vectorized(v):
                            gate[jo * v + ji] = f(cl(gate[jo * v + ji] + p[jo * v + ji] * cn[b, jo * v + ji]))
                        for ji in T.vectorized(v):
                            gate[2 * hs + jo * v + ji] = T.if_then_else(
                                input_forget, T.Cast(dt, 1) - gate[jo * v + ji],
                                f(cl(gate[2 * hs + jo * v + ji] + p[2 * hs + jo * v + ji] * cn[b, jo * v + ji])))
                        for ji in T.vectorized(v):
                            cn[b, jo * v + ji] = gate[2 * hs + jo * v + ji] * cn[b, jo * v + ji] + \
                                gate[jo * v + ji] * g(cl(gate[3 * hs + jo * v + ji]))
                        for ji in T.vectorized(v):
                            hn[b, jo * v + ji] = f(cl(gate[hs + jo * v + ji] + p[hs + jo * v + ji] * cn[b, jo * v + ji])) * \
                                h(cn[b, jo * v + ji])
                        for ji in T.vectorized(v):
                            y[t, b, jo * v + ji] = hn[b, jo * v + ji]
                else:
                    for j in T.serial(hs):
                        y[s, b, j] = T.Cast(dt, 0)
    return lstm_loop


def _gru_func(steps: int, n: int, hs: int, dt: str, reverse: bool, acts: list[Act], cl: Act,
              linear_before_reset: bool) -> tirx.PrimFunc:
    f, g = acts
    gs = 3 * hs

    @T.prim_func(private=True)
    def gru_loop(gx: T.Buffer((steps, n, gs), dt), rt: T.Buffer((hs, gs), dt),
                 rb: T.Buffer((gs,), dt), lens: T.Buffer((n,), "int32"), h0: T.Buffer((n, hs), dt),
                 y: T.Buffer((steps, n, hs), dt), hn: T.Buffer((n, hs), dt)):
        T.func_attr({"tirx.noalias": True})
        gate = T.alloc_buffer((gs,), dt)      # z, r pre-activations; then R_h h + Rb_h
        rh = T.alloc_buffer((hs,), dt)        # r * h_prev
        for b, j in T.grid(n, hs):
            hn[b, j] = h0[b, j]
        for s in T.serial(steps):
            for b in T.serial(n):
                if s < lens[b]:
                    t = T.if_then_else(reverse, lens[b] - 1 - s, s)
                    for j in T.serial(gs):
                        gate[j] = rb[j]
                    for k in T.serial(hs):
                        for j in T.serial(gs):
                            gate[j] = gate[j] + hn[b, k] * rt[k, j]
                    for k in T.serial(hs):
                        rh[k] = f(cl(gx[t, b, hs + k] + gate[hs + k])) * hn[b, k]
                    if not linear_before_reset:
                        for j in T.serial(hs):
                            gate[2 * hs + j] = rb[2 * hs + j]
                        for k in T.serial(hs):
                            for j in T.serial(hs):
                                gate[2 * hs + j] = gate[2 * hs + j] + rh[k] * rt[k, 2 * hs + j]
                    for j in T.serial(hs):
                        z = f(cl(gx[t, b, j] + gate[j]))
                        r_g = f(cl(gx[t, b, hs + j] + gate[hs + j]))
                        cand = T.if_then_else(linear_before_reset,
                                              g(cl(gx[t, b, 2 * hs + j] + r_g * gate[2 * hs + j])),
                                              g(cl(gx[t, b, 2 * hs + j] + gate[2 * hs + j])))
                        h_new = (T.Cast(dt, 1) - z) * cand + z * hn[b, j]
                        y[t, b, j] = h_new
                        hn[b, j] = h_new
                else:
                    for j in T.serial(hs):
                        y[s, b, j] = T.Cast(dt, 0)
    return gru_loop


def _rnn_func(steps: int, n: int, hs: int, dt: str, reverse: bool, acts: list[Act],
              cl: Act) -> tirx.PrimFunc:
    (f,) = acts

    @T.prim_func(private=True)
    def rnn_loop(gx: T.Buffer((steps, n, hs), dt), rt: T.Buffer((hs, hs), dt),
                 rb: T.Buffer((hs,), dt), lens: T.Buffer((n,), "int32"), h0: T.Buffer((n, hs), dt),
                 y: T.Buffer((steps, n, hs), dt), hn: T.Buffer((n, hs), dt)):
        T.func_attr({"tirx.noalias": True})
        gate = T.alloc_buffer((hs,), dt)
        for b, j in T.grid(n, hs):
            hn[b, j] = h0[b, j]
        for s in T.serial(steps):
            for b in T.serial(n):
                if s < lens[b]:
                    t = T.if_then_else(reverse, lens[b] - 1 - s, s)
                    for j in T.serial(hs):
                        gate[j] = gx[t, b, j] + rb[j]
                    for k in T.serial(hs):
                        for j in T.serial(hs):
                            gate[j] = gate[j] + hn[b, k] * rt[k, j]
                    for j in T.serial(hs):
                        y[t, b, j] = f(cl(gate[j]))
                        hn[b, j] = f(cl(gate[j]))
                else:
                    for j in T.serial(hs):
                        y[s, b, j] = T.Cast(dt, 0)
    return rnn_loop


def _pick(ctx: LowerCtx, x: relax.Expr, d: int, lo: int | None = None,
          hi: int | None = None) -> relax.Expr:
    """x[d] (and x[d, lo:hi] when given)."""
    shape = shape_of(x)
    if lo is None:
        y = R.strided_slice(x, [0], [d], [d + 1])
    else:
        y = R.strided_slice(x, [0, 1], [d, lo], [d + 1, hi])
    return ctx.emit(R.reshape(ctx.emit(y), shape[1:] if lo is None else (hi - lo,)))


def _input_projection(ctx: LowerCtx, node: Node, x2: relax.Expr, w: relax.Expr, b: relax.Expr, d: int,
                      gs: int) -> relax.Expr:
    """x2 @ W[d]^T + Wb[d] for every step at once: our packed-panel matmul kernel when W (and B) are constants
    on the CPU in float32 (Relax's default schedule of this matmul ran 100 ms for a 64 x 512 x 1024 CRNN layer),
    else Relax's matmul."""
    wv, bv = node.inputs[1], node.inputs[3]
    if ctx.target.kind == "llvm" and dtype_of(x2) == "float32" and wv.is_const and bv.is_const:
        from compiler.backends.tvm_kernels import matmul as kmm
        rows, k = shape_of(x2)
        spec = kmm.MatmulSpec((), rows, gs, k, True, True, True, "none")
        weight = np.asarray(wv.const, np.float32)[d]
        bias = np.asarray(bv.const, np.float32)[d, :gs]
        gv = ctx.kernel(("matmul", spec, "recurrent input projection"),
                        lambda: kmm.make_matmul(spec), "matmul")
        return ctx.call_kernel(gv, [x2, relax.const(kmm.pack_b(spec, weight)), relax.const(bias)], (rows, gs))
    return ctx.emit(R.add(R.matmul(x2, ctx.emit(R.permute_dims(_pick(ctx, w, d), [1, 0]))),
                          _pick(ctx, b, d, 0, gs)))


def _cuda_func(ctx: LowerCtx, node: Node, args: list[relax.Expr], d: int, ins: list[relax.Expr], reverse: bool,
               acts: list[Act], cl: Act) -> tirx.PrimFunc:
    """The GPU kernel of direction d (tvm_kernels/cuda_recurrent.py); completes `ins` with its c0 and peepholes
    (zeros where the op has none)."""
    from compiler.backends.tvm_kernels.cuda_recurrent import make_cuda_recurrent
    kind, a = node.op.short_name, node.attrs
    steps, n, _ = shape_of(args[0])
    hs, dt = shape_of(args[5])[2], dtype_of(args[0])
    lstm = kind == "lstm"
    ins += [_pick(ctx, args[6], d) if lstm else const(np.zeros((n, hs)), dt),
            _pick(ctx, args[7], d) if lstm and len(args) > 7 else const([0.0] * (3 * hs), dt)]
    flag = a["input_forget"] if lstm else a.get("linear_before_reset", False)
    return make_cuda_recurrent(kind, steps, n, hs, dt, reverse, acts, cl, bool(flag), gpu=not ctx.unscheduled)


@lowers(rec.rnn, rec.gru, rec.lstm)
def _recurrent(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    kind = node.op.short_name
    a = node.attrs
    x, w, r, b, lens, h0 = args[:6]
    steps, n, i = shape_of(x)
    d_count, gs, hs = shape_of(r)
    dt = dtype_of(x)
    cuda = ctx.target.kind == "cuda"
    ct = "float32" if cuda else dt        # the GPU kernel computes in float32 (float16 tensors widened as read)
    acts = [_activation(*act, ct, fast=not cuda) for act in rec.activation_list(kind, a)]
    per = len(acts) // d_count
    cl = _clipper(a["clip"], ct)
    x2 = ctx.emit(R.reshape(x, (steps * n, i)))
    ys, hns, cns = [], [], []
    for d in range(d_count):
        reverse = a["direction"] == "reverse" or d == 1
        gx = ctx.emit(R.reshape(_input_projection(ctx, node, x2, w, b, d, gs), (steps, n, gs)))
        rt = (_panels(ctx, r, node.inputs[2], d, hs, gs, _panel(gs, _lanes(hs))) if kind == "lstm" and not cuda
              else ctx.emit(R.permute_dims(_pick(ctx, r, d), [1, 0])))
        ins = [gx, rt, _pick(ctx, b, d, gs, 2 * gs), lens, _pick(ctx, h0, d)]
        state = relax.TensorType((n, hs), dt)
        outs = [relax.TensorType((steps, n, hs), dt), state]
        dir_acts = acts[d * per:(d + 1) * per]
        if cuda:
            func = _cuda_func(ctx, node, args, d, ins, reverse, dir_acts, cl)
            outs.append(state)
        elif kind == "lstm":
            p = _pick(ctx, args[7], d) if len(args) > 7 else const([0.0] * (3 * hs), dt)
            ins += [_pick(ctx, args[6], d), p]
            outs.append(state)
            func = _lstm_func(steps, n, hs, dt, reverse, dir_acts, cl, a["input_forget"])
        elif kind == "gru":
            func = _gru_func(steps, n, hs, dt, reverse, dir_acts, cl, a["linear_before_reset"])
        else:
            func = _rnn_func(steps, n, hs, dt, reverse, dir_acts, cl)
        gv = ctx.bb.add_func(func, f"{kind}_loop")
        res = ctx.emit(relax.call_tir(gv, ins, outs))
        ys.append(ctx.emit(R.reshape(relax.TupleGetItem(res, 0), (steps, 1, n, hs))))
        hns.append(ctx.emit(R.reshape(relax.TupleGetItem(res, 1), (1, n, hs))))
        if kind == "lstm":
            cns.append(ctx.emit(R.reshape(relax.TupleGetItem(res, 2), (1, n, hs))))

    def join(parts: list[relax.Expr], axis: int) -> relax.Expr:
        return parts[0] if len(parts) == 1 else R.concat(parts, axis)
    return [join(ys, 1), join(hns, 0)] + ([join(cns, 0)] if kind == "lstm" else [])
