"""Lowerings of the I-ViT integer ops (q.shiftmax, q.shiftgelu, q.shifttanh, q.layernorm): TE in
int64, bit-exact with compiler/ops/ivit.py. numpy's `//` is floor division, so every division
here is `tirx.floordiv` (TIR's `//` on ints may truncate); `>>` on signed int64 is arithmetic,
as in numpy. Row reductions (max, sum, sum of squares) are TE reductions over the op's axis; the
Newton square root is 10 small TE stages over the rows. On cuda q.layernorm is a kernel of its own
(tvm_kernels/cuda_ivit.py)."""
from __future__ import annotations

import functools

import numpy as np
from tvm import relax, te, tirx

from compiler.backends.tvm_kernels import cuda_ivit
from compiler.backends.tvm_lower.nn import SHORT_ROW  # a Shiftmax row read whole as a softmax's
from compiler.backends.tvm_lower.registry import LowerCtx, lowers, shape_of, tvm_dtype
from compiler.ir import Node
from compiler.ops import ivit
from compiler.ops.quant import INT_RANGE

I64 = "int64"


def _c(v: int, dtype: str = I64) -> tirx.PrimExpr:
    return tirx.const(int(v), dtype)


def shift_exp_expr(i: tirx.PrimExpr, x0: int, n: int, dtype: str = I64) -> tirx.PrimExpr:
    """compiler.ops.ivit.shift_exp on a TIR scalar i <= 0 of `dtype` (int64; int32 where the caller has
    proved every step fits, as tvm_kernels.shiftmax does)."""
    ip = i + (i >> _c(1, dtype)) - (i >> _c(4, dtype))
    ip = tirx.max(ip, _c(n * x0, dtype))
    q = tirx.floordiv(ip, _c(x0, dtype))
    r = ip - q * _c(x0, dtype)
    e = (r >> _c(1, dtype)) - _c(x0, dtype)
    return e << (_c(n, dtype) - q)


def _row_reduce(x: te.Tensor, axis: int, body, kind: str, name: str) -> te.Tensor:
    """keepdims reduction of body(index tuple) over `axis` of x's shape ("max" or "sum")."""
    shp = list(x.shape)
    red_shape = shp[:axis] + [1] + shp[axis + 1:]
    k = te.reduce_axis((0, shp[axis]), name="k")

    def f(*i):
        idx = i[:axis] + (k,) + i[axis + 1:]
        return (te.max if kind == "max" else te.sum)(body(idx), axis=k)
    return te.compute(red_shape, f, name=name)


def _row(i: tuple, axis: int) -> tuple:
    return i[:axis] + (0,) + i[axis + 1:]


def _factor(total: tirx.PrimExpr, d: int) -> tirx.PrimExpr:
    """(2^d - 1) // min(total, 2^31 - 1). With a dividend of 31 bits both operands are positive int32s (the row
    sum is >= 1: its maximum's exponential), a 32-bit division (a 64-bit one is emulated on a GPU)."""
    total = tirx.min(total, _c(ivit.INT31))
    if d > 31:
        return tirx.floordiv(_c(2**d - 1), total)
    return tirx.truncdiv(_c(2**d - 1, "int32"), total.astype("int32")).astype(I64)


def _shiftmax_te(x: te.Tensor, x0: int, n: int, axis: int, k: int, qmax: int, out: str,
                 d: int, short: bool = False) -> te.Tensor:
    """`short`: each output reads its whole row and computes the row's maximum and sum itself, one injective
    expression (on cuda a thread per output), where dlight's reduction schedule gives every row a block of 256
    threads (YOLOv8n's DFL: rows of 16, 268,800 blocks at batch 32)."""
    def done(e: tirx.PrimExpr, factor: tirx.PrimExpr) -> tirx.PrimExpr:
        return tirx.max(tirx.min((e * factor) >> _c(d - k), _c(qmax)), _c(0)).astype(out)
    if short:
        def whole_row(*i):
            at = [x[i[:axis] + (j,) + i[axis + 1:]].astype(I64) for j in range(int(x.shape[axis]))]
            mx = tirx.Var("row_max", I64)
            es = [shift_exp_expr(v - mx, x0, n) for v in at]
            total = tirx.Var("row_sum", I64)
            mine = shift_exp_expr(x[i].astype(I64) - mx, x0, n)
            return tirx.Let(mx, functools.reduce(tirx.max, at), tirx.Let(
                total, functools.reduce(lambda a, b: a + b, es), done(mine, _factor(total, d))))
        return te.compute(x.shape, whole_row, name="shiftmax")
    mx = _row_reduce(x, axis, lambda i: x[i].astype(I64), "max", "row_max")
    e = te.compute(x.shape, lambda *i: shift_exp_expr(x[i].astype(I64) - mx[_row(i, axis)], x0, n),
                   name="shift_exp")
    s = _row_reduce(e, axis, lambda i: e[i], "sum", "row_sum")
    # one division per row, not per element (on cuda dlight's schedule inlines it into every element)
    factor = te.compute(s.shape, lambda *r: _factor(s[r], d), name="row_factor")
    return te.compute(x.shape, lambda *i: done(e[i], factor[_row(i, axis)]), name="shiftmax")


@lowers(ivit.shiftmax)
def _shiftmax(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    a = node.attrs
    shape = shape_of(args[0])
    axis = a["axis"] % len(shape)
    out = a["dtype"]
    short = ctx.target.kind == "cuda" and shape[axis] <= SHORT_ROW
    return [ctx.emit_te(_shiftmax_te, args[0], ivit.exp_unit(a["scale"]), a["n"], axis,
                        ivit._OUT_BITS[out], INT_RANGE[out][1], tvm_dtype(out), a["dividend_bits"], short,
                        name="shiftmax")]


def _shiftgelu_te(x: te.Tensor, x0: int, n: int, sigma_bits: int, d: int, row_max: bool) -> te.Tensor:
    axis = len(x.shape) - 1
    mx = _row_reduce(x, axis, lambda i: x[i].astype(I64), "max", "row_max")

    def body(*i):
        v = x[i].astype(I64)
        m = tirx.max(mx[_row(i, axis)] if row_max else v, _c(0))
        e1 = shift_exp_expr(v - m, x0, n)
        e2 = shift_exp_expr(-m, x0, n)
        factor = tirx.floordiv(_c(2**d - 1), e1 + e2)
        sigma = (e1 * factor) >> _c(d - sigma_bits)
        return (v * sigma).astype("int32")
    return te.compute(x.shape, body, name="shiftgelu")


@lowers(ivit.shiftgelu)
def _shiftgelu(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    a = node.attrs
    x0 = ivit.exp_unit(ivit.GELU_ALPHA * float(np.float32(a["scale"])))
    return [ctx.emit_te(_shiftgelu_te, args[0], x0, a["n"], a["sigma_bits"], a["dividend_bits"],
                        bool(a["row_max"]), name="shiftgelu")]


def _shifttanh_te(x: te.Tensor, x0: int, n: int, k: int, qmax: int, out: str, d: int) -> te.Tensor:
    def body(*i):
        v = x[i].astype(I64)
        av = tirx.Select(v < _c(0), -v, v)
        e = shift_exp_expr(-av, x0, n)
        e0 = _c(-x0 << n)
        factor = tirx.floordiv(_c(2**d - 1), e0 + e)
        t = tirx.min(((e0 - e) * factor) >> _c(d - k), _c(qmax))
        return tirx.Select(v < _c(0), -t, tirx.Select(v > _c(0), t, _c(0))).astype(out)
    return te.compute(x.shape, body, name="shifttanh")


@lowers(ivit.shifttanh)
def _shifttanh(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    a = node.attrs
    out = a["dtype"]
    x0 = ivit.exp_unit(2.0 * float(np.float32(a["scale"])))
    return [ctx.emit_te(_shifttanh_te, args[0], x0, a["n"], ivit._OUT_BITS[out], INT_RANGE[out][1],
                        tvm_dtype(out), a["dividend_bits"], name="shifttanh")]


def _layernorm_te(x: te.Tensor, mult: te.Tensor, bias: te.Tensor, shift: int, zp: int, qmin: int,
                  qmax: int, out: str) -> te.Tensor:
    axis = len(x.shape) - 1
    c = int(x.shape[axis])
    s = _row_reduce(x, axis, lambda i: x[i].astype(I64), "sum", "row_sum")
    mu = te.compute(s.shape, lambda *i: tirx.floordiv(_c(2) * s[i] + _c(c), _c(2 * c)), name="mean")

    def y(i):
        return x[i].astype(I64) - mu[_row(i, axis)]
    var = _row_reduce(x, axis, lambda i: y(i) * y(i), "sum", "row_var")
    k = te.compute(var.shape, lambda *i: _c(ivit.NEWTON_START), name="newton_0")

    def newton(prev: te.Tensor):
        def step(*i):        # prev read once (a let): inlined, ten steps stay linear, not 2^10 terms
            p = tirx.Var("k", I64)
            return tirx.Let(p, prev[i], (p + tirx.floordiv(var[i], p)) >> _c(1))
        return step
    for t in range(ivit.NEWTON_STEPS):
        k = te.compute(var.shape, newton(k), name=f"newton_{t + 1}")
    rnd = (1 << (shift - 1)) if shift > 0 else 0

    def body(*i):
        factor = tirx.floordiv(_c(ivit.INT31), k[_row(i, axis)])
        yn = (y(i) * factor) >> _c(1)
        ch = i[axis]
        o = ((yn * mult[ch].astype(I64) + bias[ch] + _c(rnd)) >> _c(shift)) + _c(zp)
        return tirx.max(tirx.min(o, _c(qmax)), _c(qmin)).astype(out)
    return te.compute(x.shape, body, name="layernorm")


@lowers(ivit.layernorm)
def _layernorm(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    """TE on the CPU; on cuda tvm_kernels/cuda_ivit.py's kernel, a block per row (dlight's reduction schedule
    inlined the Newton steps into every element)."""
    a = node.attrs
    tail = (a["shift"], a["zero_point"], a["qmin"], a["qmax"], tvm_dtype(a["dtype"]))
    if ctx.target.kind != "cuda":
        return [ctx.emit_te(_layernorm_te, *args, *tail, name="layernorm")]
    shape, dt, gpu = node.inputs[0].type.shape, tvm_dtype(node.inputs[0].type.dtype), not ctx.unscheduled
    gv = ctx.kernel(("cuda_layernorm", shape, dt, *tail, gpu),
                    lambda: cuda_ivit.make_cuda_layernorm(shape, dt, *tail, gpu=gpu), "layernorm")
    return [ctx.call_kernel(gv, args, shape, tail[-1])]
