"""Lowering of rnn / gru / lstm: per direction, the input projection of every step is one Relax
matmul (T*N, I) x (I, G*H); the recurrence is one TIR function with a serial loop over time
that keeps the state in its output buffers (h, c) and computes each step's gates as a small
matrix-vector product per batch entry. Batch entries past their seq_lens are left alone and
their Y rows are zero, as in the reference."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tvm import relax, tirx
from tvm.script import tirx as T

from compiler.backends.tvm_lower.registry import LowerCtx, const, dtype_of, lowers, shape_of
from compiler.ir import Node
from compiler.ops import recurrent as rec

R = relax.op
Act = Callable[[Any], Any]     # PrimExpr -> PrimExpr


def _activation(name: str, alpha: float, beta: float, dt: str) -> Act:
    def c(v: float) -> tirx.PrimExpr:
        return tirx.const(v, dt)

    table: dict[str, Act] = {
        "sigmoid": tirx.sigmoid, "tanh": tirx.tanh,
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


def _clipper(clip: float, dt: str) -> Act:
    if clip <= 0:
        return lambda x: x
    lo, hi = tirx.const(-clip, dt), tirx.const(clip, dt)
    return lambda x: tirx.max(tirx.min(x, hi), lo)


def _lstm_func(steps: int, n: int, hs: int, dt: str, reverse: bool, acts: list[Act], cl: Act,
               input_forget: bool) -> tirx.PrimFunc:
    f, g, h = acts
    gs = 4 * hs

    @T.prim_func(private=True)
    def lstm_loop(gx: T.Buffer((steps, n, gs), dt), rt: T.Buffer((hs, gs), dt),
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
                    for j in T.serial(gs):
                        gate[j] = gx[t, b, j] + rb[j]
                    for k in T.serial(hs):
                        for j in T.serial(gs):
                            gate[j] = gate[j] + hn[b, k] * rt[k, j]
                    for j in T.serial(hs):
                        c_prev = cn[b, j]
                        i_g = f(cl(gate[j] + p[j] * c_prev))
                        f_g = T.if_then_else(input_forget, T.Cast(dt, 1) - i_g,
                                             f(cl(gate[2 * hs + j] + p[2 * hs + j] * c_prev)))
                        c_new = f_g * c_prev + i_g * g(cl(gate[3 * hs + j]))
                        o_g = f(cl(gate[hs + j] + p[hs + j] * c_new))
                        cn[b, j] = c_new
                        hn[b, j] = o_g * h(c_new)
                        y[t, b, j] = o_g * h(c_new)
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


@lowers(rec.rnn, rec.gru, rec.lstm)
def _recurrent(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    kind = node.op.short_name
    a = node.attrs
    x, w, r, b, lens, h0 = args[:6]
    steps, n, i = shape_of(x)
    d_count, gs, hs = shape_of(r)
    dt = dtype_of(x)
    acts = [_activation(*act, dt) for act in rec.activation_list(kind, a)]
    per = len(acts) // d_count
    cl = _clipper(a["clip"], dt)
    x2 = ctx.emit(R.reshape(x, (steps * n, i)))
    ys, hns, cns = [], [], []
    for d in range(d_count):
        reverse = a["direction"] == "reverse" or d == 1
        gx = ctx.emit(R.add(R.matmul(x2, ctx.emit(R.permute_dims(_pick(ctx, w, d), [1, 0]))),
                            _pick(ctx, b, d, 0, gs)))
        gx = ctx.emit(R.reshape(gx, (steps, n, gs)))
        rt = ctx.emit(R.permute_dims(_pick(ctx, r, d), [1, 0]))
        ins = [gx, rt, _pick(ctx, b, d, gs, 2 * gs), lens, _pick(ctx, h0, d)]
        state = relax.TensorType((n, hs), dt)
        outs = [relax.TensorType((steps, n, hs), dt), state]
        dir_acts = acts[d * per:(d + 1) * per]
        if kind == "lstm":
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
