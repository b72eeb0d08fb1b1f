"""Lowerings of elementwise ops: unary math, binary arithmetic, comparisons, where, clip (cast: dtypes.py).

Relax ops where their semantics equal the numpy reference; TE where they do not
(integer division truncates and never traps, integer pow is exact, min/max propagate NaN).
"""
from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx
from tvm.script import tirx as T

from compiler.backends.tvm_lower.registry import LowerCtx, const, dtype_of, lowers, lowers_table
from compiler.ir import Node
from compiler.ops import elementwise as ew

R = relax.op

_UNARY = {
    ew.sigmoid: R.sigmoid, ew.tanh: R.tanh, ew.exp: R.exp, ew.log: R.log, ew.sqrt: R.sqrt,
    ew.erf: R.erf, ew.neg: R.negative, ew.abs_: R.abs, ew.floor: R.floor, ew.ceil: R.ceil,
    ew.logical_not: R.logical_not,
}
_BINARY = {
    ew.add: R.add, ew.sub: R.subtract, ew.mul: R.multiply, ew.equal: R.equal, ew.less: R.less,
    ew.greater: R.greater, ew.logical_and: R.logical_and, ew.logical_or: R.logical_or,
}


def _is_float(x: relax.Expr) -> bool:
    return dtype_of(x).startswith("float")


lowers_table(_UNARY)
lowers_table(_BINARY)


@lowers(ew.relu)
def _relu(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    x = args[0]
    return [R.maximum(x, const(0, dtype_of(x)))]


@lowers(ew.identity)
def _identity(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    return [args[0]]


@lowers(ew.reciprocal)
def _reciprocal(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    return [R.divide(const(1, dtype_of(args[0])), args[0])]


@lowers(ew.softplus)
def _softplus(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    # log(1 + e^x) = max(x, 0) + log(1 + e^-|x|): no overflow for large x (numpy's logaddexp)
    x = args[0]
    dt = dtype_of(x)
    tail = ctx.emit(R.log(R.add(const(1, dt), R.exp(R.negative(R.abs(x))))))
    return [R.add(R.maximum(x, const(0, dt)), tail)]


@lowers(ew.hard_swish)
def _hard_swish(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    x = args[0]
    dt = dtype_of(x)
    gate = ctx.emit(R.clip(R.add(R.divide(x, const(6, dt)), const(0.5, dt)), 0.0, 1.0))
    return [R.multiply(x, gate)]


@lowers(ew.hard_sigmoid)
def _hard_sigmoid(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    x = args[0]
    dt = dtype_of(x)
    alpha, beta = const(node.attrs["alpha"], dt), const(node.attrs["beta"], dt)
    lin = ctx.emit(R.add(R.multiply(x, alpha), beta))
    return [R.clip(lin, 0.0, 1.0)]


@lowers(ew.leaky_relu)
def _leaky_relu(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    x = args[0]
    dt = dtype_of(x)
    neg = ctx.emit(R.multiply(x, const(node.attrs["alpha"], dt)))
    return [R.where(R.greater_equal(x, const(0, dt)), x, neg)]


@lowers(ew.elu)
def _elu(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    x = args[0]
    dt = dtype_of(x)
    neg = ctx.emit(R.multiply(const(node.attrs["alpha"], dt), R.subtract(R.exp(x), const(1, dt))))
    return [R.where(R.greater(x, const(0, dt)), x, neg)]


@lowers(ew.gelu)
def _gelu(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    if node.attrs["approximate"] == "tanh":
        return [R.nn.gelu_tanh(args[0])]
    return [R.nn.gelu(args[0])]


def _int_range(dt: str) -> tuple[int, int]:
    info = np.iinfo(np.dtype(dt))
    return int(info.min), int(info.max)


@lowers(ew.clip)
def _clip(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    # Integer inputs: the reference clamps in float then truncates, i.e. clamps to trunc(bound).
    x = args[0]
    dt = dtype_of(x)
    lo, hi = node.attrs["min"], node.attrs["max"]
    if dt == "bool":
        return [x]
    if not _is_float(x):
        dmin, dmax = _int_range(dt)
        lo = dmin if lo == -np.inf else int(np.clip(np.trunc(lo), dmin, dmax))
        hi = dmax if hi == np.inf else int(np.clip(np.trunc(hi), dmin, dmax))
        lo = None if lo == dmin else lo
        hi = None if hi == dmax else hi
    else:
        lo = None if lo == -np.inf else lo
        hi = None if hi == np.inf else hi
    y = x
    if lo is not None:
        y = ctx.emit(R.maximum(y, const(lo, dt)))
    if hi is not None:
        y = R.minimum(y, const(hi, dt))
    return [y]


def _int_div_te(a: te.Tensor, b: te.Tensor) -> te.Tensor:
    """C division that never traps: x / 0 = x (the reference), INT_MIN / -1 wraps."""
    from tvm import topi

    def body(p: tirx.PrimExpr, q: tirx.PrimExpr) -> tirx.PrimExpr:
        dt = str(p.dtype)
        zero, one = tirx.const(0, dt), tirx.const(1, dt)
        if dt.startswith("uint") or dt == "bool":
            return tirx.truncdiv(p, tirx.Select(q == zero, one, q))
        minus_one = tirx.const(-1, dt)
        safe = tirx.Select(tirx.Or(q == zero, q == minus_one), one, q)
        return tirx.Select(q == minus_one, zero - p, tirx.truncdiv(p, safe))

    return _broadcast_te(a, b, body, topi)


def _broadcast_te(a: te.Tensor, b: te.Tensor, body, topi) -> te.Tensor:
    shape = np.broadcast_shapes(tuple(int(d) for d in a.shape), tuple(int(d) for d in b.shape))
    a2 = topi.broadcast_to(a, shape) if tuple(int(d) for d in a.shape) != shape else a
    b2 = topi.broadcast_to(b, shape) if tuple(int(d) for d in b.shape) != shape else b
    return te.compute(shape, lambda *i: body(a2[i], b2[i]), name="T_binary")


@lowers(ew.div)
def _div(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    a, b = args
    if _is_float(a):
        return [R.divide(a, b)]
    return [ctx.emit_te(_int_div_te, a, b, name="int_div")]


def _int_pow_func(n: int, dtype: str) -> tirx.PrimFunc:
    """Exact integer power by square-and-multiply in int64 (the reference's arithmetic),
    over a flat buffer. A loop, not an expression: a nested Let chain explodes in TVM's
    simplifier. A negative exponent gives 1 (the reference raises)."""
    @T.prim_func(private=True)
    def int_pow(a: T.Buffer((n,), dtype), b: T.Buffer((n,), dtype), out: T.Buffer((n,), dtype)):
        T.func_attr({"tirx.noalias": True})
        for i in T.parallel(n):
            acc = T.decl_buffer((3,), "int64", scope="local")   # result, base, exponent
            acc[0] = T.int64(1)
            acc[1] = T.Cast("int64", a[i])
            acc[2] = T.Cast("int64", b[i])
            while acc[2] > T.int64(0):
                if acc[2] % T.int64(2) == T.int64(1):
                    acc[0] = acc[0] * acc[1]
                acc[1] = acc[1] * acc[1]
                acc[2] = acc[2] // T.int64(2)
            out[i] = T.Cast(dtype, acc[0])
    return int_pow


@lowers(ew.pow_)
def _pow(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    a, b = args
    if _is_float(a):
        return [R.power(a, b)]
    dt = dtype_of(a)
    shape = tuple(node.outputs[0].type.shape)
    n = int(np.prod(shape, dtype=np.int64))
    flat = [ctx.emit(R.reshape(R.broadcast_to(v, shape), (n,))) for v in (a, b)]
    gv = ctx.bb.add_func(_int_pow_func(n, dt), "int_pow")
    y = ctx.emit(relax.call_tir(gv, flat, relax.TensorType((n,), dt)))
    return [R.reshape(y, shape)]


def _nan_minmax_te(a: te.Tensor, b: te.Tensor, is_max: bool) -> te.Tensor:
    from tvm import topi

    def body(p: tirx.PrimExpr, q: tirx.PrimExpr) -> tirx.PrimExpr:
        m = tirx.max(p, q) if is_max else tirx.min(p, q)
        return tirx.Select(tirx.isnan(p), p, tirx.Select(tirx.isnan(q), q, m))
    return _broadcast_te(a, b, body, topi)


@lowers(ew.minimum, ew.maximum)
def _minmax(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    a, b = args
    is_max = node.op is ew.maximum
    if not _is_float(a):
        return [(R.maximum if is_max else R.minimum)(a, b)]
    return [ctx.emit_te(_nan_minmax_te, a, b, is_max, name="nan_max" if is_max else "nan_min")]


@lowers(ew.prelu)
def _prelu(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    x, slope = args
    neg = ctx.emit(R.multiply(x, slope))
    return [R.where(R.greater_equal(x, const(0, dtype_of(x))), x, neg)]


@lowers(ew.where)
def _where(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    return [R.where(args[0], args[1], args[2])]


def _mod_body(p: tirx.PrimExpr, q: tirx.PrimExpr, fmod: bool) -> tirx.PrimExpr:
    """The reference's x mod y on scalars. Integers: a divisor of 0 or -1 becomes 1 (the result is 0
    either way, and the hardware division never traps). Floats: C fmod, and for Python's mod the
    divisor added when the signs differ, a zero taking the divisor's sign (float16 in float32, as numpy)."""
    dt = str(p.dtype)
    if dt.startswith("float"):
        wide = "float32" if dt == "float16" else dt
        p, q = p.astype(wide), q.astype(wide)
        zero = tirx.const(0, wide)
        r = tirx.truncmod(p, q)                      # LLVM frem: C fmod
        if not fmod:
            floored = tirx.Select(_opposite_signs(r, q, zero), r + q, r)
            r = tirx.Select(r == zero, tirx.copysign(zero, q), floored)
        return r.astype(dt)
    zero, one = tirx.const(0, dt), tirx.const(1, dt)
    trivial = q == zero if dt.startswith("uint") else tirx.Or(q == zero, q == tirx.const(-1, dt))
    r = tirx.truncmod(p, tirx.Select(trivial, one, q))
    if fmod or dt.startswith("uint"):
        return r
    return tirx.Select(_opposite_signs(r, q, zero), r + q, r)


def _opposite_signs(r: tirx.PrimExpr, q: tirx.PrimExpr, zero: tirx.PrimExpr) -> tirx.PrimExpr:
    """r and q nonzero with opposite signs (spelled without a bool !=, which LLVM rejects)."""
    return tirx.Or(tirx.And(r < zero, q > zero), tirx.And(r > zero, q < zero))


def _mod_te(a: te.Tensor, b: te.Tensor, fmod: bool) -> te.Tensor:
    from tvm import topi
    return _broadcast_te(a, b, lambda p, q: _mod_body(p, q, fmod), topi)


@lowers(ew.mod)
def _mod(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    return [ctx.emit_te(_mod_te, args[0], args[1], node.attrs["fmod"], name="mod")]
