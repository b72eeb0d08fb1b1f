"""The I-ViT integer ops (q.shiftmax, q.shiftgelu, q.shifttanh, q.layernorm), bit-exact with the
numpy int64 references in compiler/ops/ivit.py: every step in i64, `>>` as arith.shrsi (numpy's
arithmetic shift), `<<` as arith.shli, int64 products wrapping as numpy's do.

numpy's `//` is floor division. Where both operands are provably of one sign the quotient is
>= 0 and arith.divsi (truncation) equals it: shift_exp's ip // x0 (ip <= 0, x0 <= -1), the
factors (2^D-1) // sum and (2^31-1) // std (positive divisors: every shift_exp result is >= 1,
the Newton iterate is >= 64) and the Newton step var // k (var >= 0). The one signed dividend,
LayerNorm's mean floor((2 sum + C) / 2C), uses arith.floordivsi.

Row reductions (max, sum, sum of squares) are keepdims linalg.generic reductions (ctx.reduce)
over the op's axis in i64; the row values (factor, Newton square root) are elementwise maps over
the reduced tensor, read back by a broadcasting map. The Newton square root is its 10 fixed
steps from 2^16, unrolled in one map body.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from iree.compiler import ir
from iree.compiler.dialects import arith, util

from compiler.backends.mlir_lower.quant import _to_i64
from compiler.backends.mlir_lower.registry import LowerCtx, elem_type, lowers, scalar
from compiler.ir import Node
from compiler.ops import ivit
from compiler.ops._util import norm_axis
from compiler.ops.quant import INT_RANGE
from compiler.types import DType

I64_MIN = -2**63
# targets whose row reductions read their input as an i64 tensor of its own (row_reduce)
WIDE_INPUT_TARGETS = ("cuda",)


def _i64() -> ir.Type:
    return ir.IntegerType.get_signless(64)


def _c(v: int) -> ir.Value:
    """An i64 scalar constant."""
    return scalar(int(v), _i64())


def _clamp(v: ir.Value, lo: int, hi: int) -> ir.Value:
    return arith.minsi(arith.maxsi(v, _c(lo)), _c(hi))


def _div_by(a: ir.Value, d: int, bound: int) -> ir.Value:
    """a // d for 0 <= a <= bound and a constant d > 0, as (a * M) >> s with M = ceil(2^s / d): exact when
    bound * d < 2^s (a = q d + r: a M / 2^s = q + (r + a (M d - 2^s) / 2^s) / d, and M d - 2^s < d).

    LLVM turns a division by a constant into a multiply-high, which NVPTX cannot select once IREE has
    narrowed the values to vectors of i16 ("Cannot select: v2i16 smul_lohi", an abort); a product that
    needs 64 bits is not narrowed."""
    s = max(32, (bound * d).bit_length() + 1)
    m = -(-(1 << s) // d)
    if bound * m >= 2**63:
        return arith.divsi(a, _c(d))
    return arith.shrsi(arith.muli(a, _c(m)), _c(s))


def shift_exp(i: ir.Value, x0: int, n: int) -> ir.Value:
    """compiler.ops.ivit.shift_exp on one i64 scalar i <= 0 (steps 1-5 of its docstring)."""
    ip = arith.subi(arith.addi(i, arith.shrsi(i, _c(1))), arith.shrsi(i, _c(4)))
    ip = arith.maxsi(ip, _c(n * x0))
    # ip // x0 with ip in [n x0, 0], x0 < 0: the quotient is (-ip) // (-x0) >= 0
    q = _div_by(arith.subi(_c(0), ip), -x0, -n * x0)
    r = arith.subi(ip, arith.muli(q, _c(x0)))
    e = arith.subi(arith.shrsi(r, _c(1)), _c(x0))
    return arith.shli(e, arith.subi(_c(n), q))


def row_reduce(ctx: LowerCtx, x: ir.Value, dt: DType, axis: int, kind: str,
                pre: Callable[[ir.Value], ir.Value] | None = None) -> ir.Value:
    """keepdims i64 "max" or "sum" of x (elements of IR dtype `dt`, widened to i64, then `pre`)
    along `axis`.

    On cuda (WIDE_INPUT_TARGETS) the reduction reads an i64 tensor of its own, behind
    util.optimization_barrier: IREE 3.13's GPU reduction distribution fails ("failed to distribute") on a
    reduction whose body widens to i64, and it fuses an elementwise producer's widening (of x, or inside
    shift_exp's map) into that body."""
    if ctx.target.kind in WIDE_INPUT_TARGETS:
        if dt is not DType.I64:
            x = ctx.ewise([x], ir.RankedTensorType(x.type).shape, _i64(), lambda a: _to_i64(a, dt))
            dt = DType.I64
        x = util.optimization_barrier([x.type], [x])
    def widen(a: ir.Value) -> ir.Value:
        w = _to_i64(a, dt)
        return pre(w) if pre else w
    if kind == "max":
        return ctx.reduce(x, [axis], I64_MIN, arith.maxsi, True, _i64(), widen)
    return ctx.reduce(x, [axis], 0, arith.addi, True, _i64(), widen)


def row_map(ctx: LowerCtx, row: ir.Value, fn: Callable[[ir.Value], ir.Value]) -> ir.Value:
    """An i64 elementwise map over a reduced (per-row) tensor: once per row, not per element."""
    return ctx.ewise([row], ir.RankedTensorType(row.type).shape, _i64(), fn)


def _dividend(bits: int) -> ir.Value:
    return _c(2**bits - 1)


@lowers(ivit.shiftmax)
def _shiftmax(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    a, t = node.attrs, node.inputs[0].type
    axis, out, d = norm_axis(a["axis"], t.rank), a["dtype"], a["dividend_bits"]
    x0, n, k = ivit.exp_unit(a["scale"]), a["n"], ivit._OUT_BITS[out]
    mx = row_reduce(ctx, args[0], t.dtype, axis, "max")
    e = ctx.ewise([args[0], mx], t.shape, _i64(),
                  lambda v, m: shift_exp(arith.subi(_to_i64(v, t.dtype), m), x0, n))
    total = row_reduce(ctx, e, DType.I64, axis, "sum")
    factor = row_map(ctx, total, lambda s: arith.divsi(_dividend(d), arith.minsi(s, _c(ivit.INT31))))
    out_et = elem_type(out)

    def body(ev: ir.Value, f: ir.Value) -> ir.Value:
        y = arith.shrsi(arith.muli(ev, f), _c(d - k))
        return ctx.cast_int(_clamp(y, 0, INT_RANGE[out][1]), out_et)
    return [ctx.ewise([e, factor], t.shape, out_et, body)]


@lowers(ivit.shiftgelu)
def _shiftgelu(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    a, t = node.attrs, node.inputs[0].type
    x0 = ivit.exp_unit(ivit.GELU_ALPHA * float(np.float32(a["scale"])))
    n, d, sb = a["n"], a["dividend_bits"], a["sigma_bits"]
    row_max = bool(a["row_max"])
    ins = [args[0]] + ([row_reduce(ctx, args[0], t.dtype, t.rank - 1, "max")] if row_max else [])
    i32 = ir.IntegerType.get_signless(32)

    def body(v: ir.Value, *mx: ir.Value) -> ir.Value:
        v = _to_i64(v, t.dtype)
        m = arith.maxsi(mx[0] if row_max else v, _c(0))
        e1 = shift_exp(arith.subi(v, m), x0, n)
        e2 = shift_exp(arith.subi(_c(0), m), x0, n)
        factor = arith.divsi(_dividend(d), arith.addi(e1, e2))
        sigma = arith.shrsi(arith.muli(e1, factor), _c(d - sb))
        return arith.trunci(i32, arith.muli(v, sigma))
    return [ctx.ewise(ins, t.shape, i32, body)]


@lowers(ivit.shifttanh)
def _shifttanh(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    a, t = node.attrs, node.inputs[0].type
    out, d, n = a["dtype"], a["dividend_bits"], a["n"]
    x0 = ivit.exp_unit(2.0 * float(np.float32(a["scale"])))
    k, qmax, out_et = ivit._OUT_BITS[out], INT_RANGE[out][1], elem_type(out)
    e0 = (-x0) << n                                                  # shift_exp(0)
    lt = arith.CmpIPredicate.slt

    def body(v: ir.Value) -> ir.Value:
        v = _to_i64(v, t.dtype)
        neg = arith.cmpi(lt, v, _c(0))
        e = shift_exp(arith.select(neg, v, arith.subi(_c(0), v)), x0, n)      # -|x|
        factor = arith.divsi(_dividend(d), arith.addi(_c(e0), e))
        tv = arith.minsi(arith.shrsi(arith.muli(arith.subi(_c(e0), e), factor), _c(d - k)), _c(qmax))
        sign = arith.select(neg, _c(-1), arith.select(arith.cmpi(lt, _c(0), v), _c(1), _c(0)))
        return ctx.cast_int(arith.muli(sign, tv), out_et)
    return [ctx.ewise(args, t.shape, out_et, body)]


def isqrt_newton(v: ir.Value) -> ir.Value:
    """compiler.ops.ivit.isqrt_newton on one i64 scalar v >= 0: k = (k + v // k) >> 1, the fixed
    NEWTON_STEPS steps from NEWTON_START, unrolled (k stays >= 64, so divsi is floor)."""
    k = _c(ivit.NEWTON_START)
    for _ in range(ivit.NEWTON_STEPS):
        k = arith.shrsi(arith.addi(k, arith.divsi(v, k)), _c(1))
    return k


@lowers(ivit.layernorm)
def _layernorm(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    a, t = node.attrs, node.inputs[0].type
    x, mult, bias = args
    axis, c = t.rank - 1, t.shape[-1]
    s = row_reduce(ctx, x, t.dtype, axis, "sum")
    mu = row_map(ctx, s, lambda v: arith.floordivsi(arith.addi(arith.muli(v, _c(2)), _c(c)), _c(2 * c)))
    y = ctx.ewise([x, mu], t.shape, _i64(), lambda v, m: arith.subi(_to_i64(v, t.dtype), m))
    var = row_reduce(ctx, y, DType.I64, axis, "sum", lambda v: arith.muli(v, v))
    factor = row_map(ctx, var, lambda v: arith.divsi(_c(ivit.INT31), isqrt_newton(v)))
    shift = a["shift"]
    rnd = (1 << (shift - 1)) if shift > 0 else 0
    out_et = elem_type(a["dtype"])

    def body(yv: ir.Value, f: ir.Value, m: ir.Value, b: ir.Value) -> ir.Value:
        yn = arith.shrsi(arith.muli(yv, f), _c(1))
        o = arith.addi(arith.addi(arith.muli(yn, _to_i64(m, DType.I32)), b), _c(rnd))
        o = arith.addi(arith.shrsi(o, _c(shift)), _c(a["zero_point"]))
        return ctx.cast_int(_clamp(o, a["qmin"], a["qmax"]), out_et)
    return [ctx.ewise([y, factor, mult, bias], t.shape, out_et, body)]
