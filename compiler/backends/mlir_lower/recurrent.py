"""MLIR lowering of rnn / gru / lstm (compiler/ops/recurrent.py). Per direction, the input projection of
every step is one matmul (T*N, I) x (I, G*H) before the loop; the recurrence is an `scf.for` over the steps
that carries the state (h, and c for lstm) and the step-ordered outputs as tensors. Each step is a matmul
h R^T (started from Rb) and one linalg.generic for the gates; a gru without linear_before_reset has a second
matmul (r * h) R_h^T. A reverse direction reads its inputs and writes its outputs through a gather by the
entries' lengths, outside the loop, so the loop body is the same for both directions. Entries past their
length keep their state and write zeros, as in the reference. Float16 recurrences run in float32 and round
their outputs once."""
from __future__ import annotations

from collections.abc import Callable

from iree.compiler import ir
from iree.compiler.dialects import arith, linalg, math, scf, tensor

from compiler.backends.mlir_lower.registry import (
    PAR,
    LowerCtx,
    amap,
    elem_of,
    generic,
    index,
    lowers,
    scalar,
    shape_of,
    slice_at,
    tensor_type,
)
from compiler.diagnostics import Unsupported
from compiler.ir import Node
from compiler.ops import recurrent as rec
from compiler.types import DType

Act = Callable[[ir.Value], ir.Value]
DYNAMIC = ir.ShapedType.get_dynamic_stride_or_offset


def activation(name: str, alpha: float, beta: float) -> Act:
    """A gate function of compiler.ops.recurrent.ACTIVATIONS on a float scalar."""
    def c(x: ir.Value, v: float) -> ir.Value:
        return scalar(v, x.type)

    def gt(x: ir.Value, v: float, pred=arith.CmpFPredicate.OGT) -> ir.Value:
        return arith.cmpf(pred, x, c(x, v))
    table: dict[str, Act] = {
        "sigmoid": lambda x: arith.divf(c(x, 1), arith.addf(c(x, 1), math.exp(arith.negf(x)))),
        "tanh": math.tanh,
        "relu": lambda x: arith.maximumf(x, c(x, 0)),
        "softsign": lambda x: arith.divf(x, arith.addf(c(x, 1), math.absf(x))),
        "softplus": lambda x: arith.addf(arith.maximumf(x, c(x, 0)),
                                         math.log1p(math.exp(arith.negf(math.absf(x))))),
        "affine": lambda x: arith.addf(arith.mulf(c(x, alpha), x), c(x, beta)),
        "leakyrelu": lambda x: arith.select(gt(x, 0, arith.CmpFPredicate.OGE), x, arith.mulf(c(x, alpha), x)),
        "thresholdedrelu": lambda x: arith.select(gt(x, alpha), x, c(x, 0)),
        "scaledtanh": lambda x: arith.mulf(c(x, alpha), math.tanh(arith.mulf(c(x, beta), x))),
        "hardsigmoid": lambda x: arith.minimumf(arith.maximumf(
            arith.addf(arith.mulf(c(x, alpha), x), c(x, beta)), c(x, 0)), c(x, 1)),
        "elu": lambda x: arith.select(gt(x, 0), x, arith.mulf(c(x, alpha), math.expm1(x))),
    }
    return table[name]


def _clipper(clip: float) -> Act:
    if clip <= 0:
        return lambda x: x
    return lambda x: arith.minimumf(arith.maximumf(x, scalar(-clip, x.type)), scalar(clip, x.type))


def _pick(x: ir.Value, d: int, lo: int = 0, hi: int | None = None) -> ir.Value:
    """x[d] (x[d, lo:hi] when given)."""
    shape = shape_of(x)
    hi = shape[1] if hi is None else hi
    return slice_at(x, [d, lo] + [0] * (len(shape) - 2), [1, hi - lo, *shape[2:]], len(shape) - 1)


def _gate(x: ir.Value, k: int, hs: int) -> ir.Value:
    """Gate k of a (N, G*H) tensor: its columns k*hs : (k+1)*hs."""
    return slice_at(x, [0, k * hs], [shape_of(x)[0], hs], 2)


def _linear(ctx: LowerCtx, x: ir.Value, w: ir.Value, init: ir.Value) -> ir.Value:
    """init + x (M, K) @ w (O, K)^T."""
    maps = [amap(3, e) for e in ([0, 2], [1, 2], [0, 1])]
    return linalg.matmul(x, w, outs=[init], indexing_maps=maps)


def _by_length(ctx: LowerCtx, x: ir.Value, lens: ir.Value, zero_past: bool) -> ir.Value:
    """out[s, b, :] = x[lens[b] - 1 - s, b, :] for s < lens[b]: a reverse direction's steps in the order it
    runs them, and its outputs back in time order. Past the length: 0 when `zero_past`, else row 0."""
    shape, et = shape_of(x), elem_of(x)
    i32, idx = ir.IntegerType.get_signless(32), ir.IndexType.get()

    def body(length, _out):
        s, b, j = (linalg.IndexOp(k).result for k in range(3))
        s32 = arith.index_cast(i32, s)
        t = arith.subi(arith.subi(length, scalar(1, i32)), s32)
        t = arith.minsi(arith.maxsi(t, scalar(0, i32)), scalar(shape[0] - 1, i32))
        v = tensor.ExtractOp(x, [arith.index_cast(idx, t), b, j]).result
        if not zero_past:
            return v
        return arith.select(arith.cmpi(arith.CmpIPredicate.slt, s32, length), v, scalar(0.0, et))
    return generic([lens], [ctx.empty(shape, et)], [amap(3, [1]), amap(3, range(3))], [PAR] * 3, body)[0]


def _pointwise(ctx: LowerCtx, full: list[ir.Value], lens: ir.Value, rows: list[ir.Value], n_out: int,
               body: Callable[..., list[ir.Value]]) -> list[ir.Value]:
    """One linalg.generic over (N, H): body(*full[b, j], lens[b], *rows[j]) -> n_out scalars."""
    n, hs = shape_of(full[0])
    et = elem_of(full[0])
    maps = [amap(2, [0, 1])] * len(full) + [amap(2, [0])] + [amap(2, [1])] * len(rows)
    outs = [ctx.empty((n, hs), et) for _ in range(n_out)]
    k = len(full) + 1 + len(rows)
    return generic(full + [lens] + rows, outs, maps + [amap(2, [0, 1])] * n_out, [PAR, PAR],
                   lambda *a: body(*a[:k]))


class _Step:
    """What one direction's loop body needs: the node's kind and attributes, its gate functions, its
    recurrent weights R[d] (and R_h, Rb_h for a gru without linear_before_reset) and peepholes."""

    def __init__(self, ctx: LowerCtx, node: Node, args: list[ir.Value], d: int, acts: list[Act]):
        self.ctx, self.kind, self.attrs, self.acts = ctx, node.op.short_name, node.attrs, acts
        self.cl = _clipper(node.attrs["clip"])
        r, b, self.lens = args[2], args[3], args[4]
        _, gs, self.hs = shape_of(r)
        n = shape_of(args[5])[1]
        self.r = _pick(r, d)
        self.rb = ctx.broadcast_to(_pick(b, d, gs, 2 * gs), (n, gs))
        self.peep = [slice_at(_pick(args[7], d), [k * self.hs], [self.hs], 1) for k in range(3)] \
            if self.kind == "lstm" and len(args) > 7 else []
        if self.kind == "gru" and not self.attrs["linear_before_reset"]:
            self.r_h = _pick(r, d, 2 * self.hs, gs)
            self.rb_h = ctx.broadcast_to(_pick(b, d, gs + 2 * self.hs, 2 * gs), (n, self.hs))

    def __call__(self, s32: ir.Value, x: ir.Value, state: list[ir.Value]) -> list[ir.Value]:
        """The state after one step and that step's output rows: [h, (c,) y]."""
        h, hs, f, cl = state[0], self.hs, self.acts[0], self.cl
        rec = _linear(self.ctx, h, self.r, self.rb)
        xs = [_gate(x, k, hs) for k in range(shape_of(x)[1] // hs)]
        rs = [_gate(rec, k, hs) for k in range(len(xs))]

        def live(length: ir.Value) -> ir.Value:
            return arith.cmpi(arith.CmpIPredicate.slt, s32, length)

        def zero(v: ir.Value) -> ir.Value:
            return scalar(0.0, v.type)

        def pre(a: ir.Value, b: ir.Value) -> ir.Value:
            return cl(arith.addf(a, b))

        if self.kind == "rnn":
            def rnn(xv, rv, hv, length):
                hx = f(pre(xv, rv))
                return [arith.select(live(length), hx, hv), arith.select(live(length), hx, zero(hx))]
            return _pointwise(self.ctx, [xs[0], rs[0], h], self.lens, [], 2, rnn)
        if self.kind == "gru":
            return self._gru(xs, rs, h, live, zero, pre)
        return self._lstm(xs, rs, h, state[1], live, zero)

    def _gru(self, xs, rs, h, live, zero, pre) -> list[ir.Value]:
        f, g = self.acts
        one = lambda v: scalar(1.0, v.type)      # noqa: E731
        if self.attrs["linear_before_reset"]:
            full = [xs[0], rs[0], xs[1], rs[1], xs[2], rs[2], h]

            def cand(xr, rr, xh, rh):
                return g(pre(xh, arith.mulf(f(pre(xr, rr)), rh)))
        else:
            rh = _pointwise(self.ctx, [xs[1], rs[1], h], self.lens, [], 1,
                            lambda xr, rr, hv, _len: [arith.mulf(f(pre(xr, rr)), hv)])[0]
            full = [xs[0], rs[0], xs[1], rs[1], xs[2], _linear(self.ctx, rh, self.r_h, self.rb_h), h]

            def cand(xr, rr, xh, rh):
                return g(pre(xh, rh))

        def body(xz, rz, xr, rr, xh, rh, hv, length):
            z = f(pre(xz, rz))
            hx = arith.addf(arith.mulf(arith.subf(one(z), z), cand(xr, rr, xh, rh)), arith.mulf(z, hv))
            return [arith.select(live(length), hx, hv), arith.select(live(length), hx, zero(hx))]
        return _pointwise(self.ctx, full, self.lens, [], 2, body)

    def _lstm(self, xs, rs, h, c, live, zero) -> list[ir.Value]:
        f, g, hfn = self.acts
        cl, input_forget = self.cl, self.attrs["input_forget"]

        def body(xi, ri, xo, ro, xf, rf, xc, rc, hv, cv, length, *p):
            def gate(xv, rv, k, cell):
                v = arith.addf(xv, rv)
                return f(cl(arith.addf(v, arith.mulf(p[k], cell)) if p else v))
            i = gate(xi, ri, 0, cv)
            fg = arith.subf(scalar(1.0, i.type), i) if input_forget else gate(xf, rf, 2, cv)
            cn = arith.addf(arith.mulf(fg, cv), arith.mulf(i, g(cl(arith.addf(xc, rc)))))
            hx = arith.mulf(gate(xo, ro, 1, cn), hfn(cn))
            on = live(length)
            return [arith.select(on, hx, hv), arith.select(on, cn, cv), arith.select(on, hx, zero(hx))]
        full = [xs[0], rs[0], xs[1], rs[1], xs[2], rs[2], xs[3], rs[3], h, c]
        return _pointwise(self.ctx, full, self.lens, self.peep, 3, body)


def _direction(ctx: LowerCtx, node: Node, args: list[ir.Value], d: int, acts: list[Act],
               reverse: bool) -> list[ir.Value]:
    """One direction: [Y_d (T, N, H), h_d (N, H), (c_d (N, H))]."""
    x, w, b, lens, h0 = args[0], args[1], args[3], args[4], args[5]
    steps, n, i = shape_of(x)
    gs, hs, et = shape_of(w)[1], shape_of(h0)[2], elem_of(x)
    bias = ctx.broadcast_to(_pick(b, d, 0, gs), (steps * n, gs))
    gx = ctx.reshape(_linear(ctx, ctx.reshape(x, (steps * n, i)), _pick(w, d), bias), (steps, n, gs))
    if reverse:
        gx = _by_length(ctx, gx, lens, zero_past=False)
    step = _Step(ctx, node, args, d, acts)
    state = [_pick(h0, d)] + ([_pick(args[6], d)] if node.op is rec.lstm else [])
    loop = scf.ForOp(index(0), index(steps), index(1), state + [ctx.full((steps, n, hs), et, 0.0)])
    with ir.InsertionPoint(loop.body):
        s = loop.induction_variable
        *carried, ys = loop.inner_iter_args
        out = step(arith.index_cast(ir.IntegerType.get_signless(32), s), slice_at(gx, [s, 0, 0], [1, n, gs], 2),
                   list(carried))
        ys = tensor.insert_slice(out[-1], ys, [s], [], [], [DYNAMIC(), 0, 0], [1, n, hs], [1, 1, 1])
        scf.YieldOp(out[:-1] + [ys])
    *final, ys = loop.results
    return [_by_length(ctx, ys, lens, zero_past=True) if reverse else ys] + list(final)


def _widen(ctx: LowerCtx, v: ir.Value) -> ir.Value:
    """A float16 tensor in float32; others as they are."""
    if not isinstance(elem_of(v), ir.F16Type):
        return v
    f32 = ir.F32Type.get()
    return ctx.ewise([v], shape_of(v), f32, lambda a: arith.extf(f32, a))


@lowers(rec.rnn, rec.gru, rec.lstm)
def _recurrent(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    kind, a = node.op.short_name, node.attrs
    dt = node.inputs[0].type.dtype
    if dt not in (DType.F32, DType.F16):
        raise Unsupported(f"{node.op.name} in {dt.value} on mlir (float32 and float16 only)")
    f16 = elem_of(args[0])
    args = [v if k == 4 else _widen(ctx, v) for k, v in enumerate(args)]
    acts = [activation(*act) for act in rec.activation_list(kind, a)]
    d_count = shape_of(args[1])[0]
    per = len(acts) // d_count
    dirs = [_direction(ctx, node, args, d, acts[d * per:(d + 1) * per], a["direction"] == "reverse" or d == 1)
            for d in range(d_count)]
    steps, _, n, hs = node.outputs[0].type.shape

    def join(parts: list[ir.Value], shape: tuple[int, ...], axis: int) -> ir.Value:
        parts = [ctx.reshape(p, shape) for p in parts]
        out = list(shape)
        out[axis] = d_count
        y = parts[0] if d_count == 1 else tensor.concat(tensor_type(out, elem_of(parts[0])), axis, parts)
        if isinstance(f16, ir.F16Type):
            y = ctx.ewise([y], out, f16, lambda v: arith.truncf(f16, v))
        return y
    outs = [join([p[0] for p in dirs], (steps, 1, n, hs), 1), join([p[1] for p in dirs], (1, n, hs), 0)]
    if kind == "lstm":
        outs.append(join([p[2] for p in dirs], (1, n, hs), 0))
    return outs
