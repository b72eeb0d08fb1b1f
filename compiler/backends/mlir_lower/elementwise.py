"""Lowerings of elementwise ops to one broadcasting linalg.generic each, with arith/math bodies.

Integer semantics follow the numpy references: arithmetic wraps in the element width, integer
division truncates toward zero and never traps (x / 0 = x, INT_MIN / -1 wraps), min/max of floats
propagate NaN (arith.maximumf/minimumf), comparisons with NaN are false (ordered predicates).
"""
from __future__ import annotations

import numpy as np
from iree.compiler import ir
from iree.compiler.dialects import arith, math

from compiler.backends.byte_types import is_byte_carried
from compiler.backends.mlir_lower.casts import cast_scalar
from compiler.backends.mlir_lower.registry import LowerCtx, elem_type, in_f32, int_width, is_unsigned, lowers, scalar
from compiler.diagnostics import Unsupported
from compiler.ir import Node
from compiler.ops import elementwise as ew
from compiler.ops import unary_math as um
from compiler.types import DType


def _out(node: Node) -> tuple[tuple[int, ...], DType]:
    t = node.outputs[0].type
    return t.shape, t.dtype


def map_node(ctx: LowerCtx, node: Node, args: list[ir.Value], body) -> list[ir.Value]:
    """`node`'s one output as `body` applied elementwise to `args` (numpy broadcasting)."""
    shape, dt = _out(node)
    return [ctx.ewise(args, shape, elem_type(dt), body)]


def _sigmoid(x: ir.Value) -> ir.Value:
    one = scalar(1.0, x.type)
    return arith.divf(one, arith.addf(one, math.exp(arith.negf(x))))


_FLOAT_UNARY = {
    ew.sigmoid: _sigmoid, ew.tanh: math.tanh, ew.exp: math.exp, ew.log: math.log, ew.sqrt: math.sqrt,
    ew.erf: math.erf, ew.floor: math.floor, ew.ceil: math.ceil,
    ew.reciprocal: lambda x: arith.divf(scalar(1.0, x.type), x),
}


@lowers(*_FLOAT_UNARY)
def _float_unary(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    return map_node(ctx, node, args, in_f32(_FLOAT_UNARY[node.op]))


@lowers(um.isnan)
def _isnan(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    return map_node(ctx, node, args, lambda x: arith.cmpf(arith.CmpFPredicate.UNO, x, x))


@lowers(um.isinf)
def _isinf(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    signs = [s for s, on in ((1.0, node.attrs["detect_positive"]), (-1.0, node.attrs["detect_negative"])) if on]

    def test(x):
        hits = [arith.cmpf(arith.CmpFPredicate.OEQ, x, scalar(s * np.inf, x.type)) for s in signs]
        if not hits:
            return scalar(False, ir.IntegerType.get_signless(1))
        return hits[0] if len(hits) == 1 else arith.ori(*hits)
    return map_node(ctx, node, args, test)


@lowers(ew.identity)
def _identity(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    return [args[0]]


@lowers(ew.relu)
def _relu(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    dt = node.inputs[0].type.dtype
    if dt.is_float:
        return map_node(ctx, node, args, lambda x: arith.maximumf(x, scalar(0.0, x.type)))
    if is_unsigned(dt):
        return [args[0]]
    return map_node(ctx, node, args, lambda x: arith.maxsi(x, scalar(0, x.type)))


@lowers(ew.neg)
def _neg(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    if node.inputs[0].type.dtype.is_float:
        return map_node(ctx, node, args, arith.negf)
    return map_node(ctx, node, args, lambda x: arith.subi(scalar(0, x.type), x))


@lowers(ew.abs_)
def _abs(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    dt = node.inputs[0].type.dtype
    if dt.is_float:
        return map_node(ctx, node, args, math.absf)
    if is_unsigned(dt):
        return [args[0]]
    return map_node(ctx, node, args, math.absi)


@lowers(ew.logical_not)
def _not(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    return map_node(ctx, node, args, lambda x: arith.xori(x, scalar(1, x.type)))


@lowers(ew.softplus)
def _softplus(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    # max(x, 0) + log1p(exp(-|x|)): no overflow for large x (numpy's logaddexp)
    def body(x):
        tail = math.log1p(math.exp(arith.negf(math.absf(x))))
        return arith.addf(arith.maximumf(x, scalar(0.0, x.type)), tail)
    return map_node(ctx, node, args, body)


def _clampf(x: ir.Value, lo: float, hi: float) -> ir.Value:
    return arith.minimumf(arith.maximumf(x, scalar(lo, x.type)), scalar(hi, x.type))


@lowers(ew.hard_swish)
def _hard_swish(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    def body(x):
        gate = arith.addf(arith.divf(x, scalar(6.0, x.type)), scalar(0.5, x.type))
        return arith.mulf(x, _clampf(gate, 0.0, 1.0))
    return map_node(ctx, node, args, body)


@lowers(ew.hard_sigmoid)
def _hard_sigmoid(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    a, b = node.attrs["alpha"], node.attrs["beta"]
    return map_node(ctx, node, args, lambda x: _clampf(
        arith.addf(arith.mulf(x, scalar(a, x.type)), scalar(b, x.type)), 0.0, 1.0))


@lowers(ew.leaky_relu)
def _leaky_relu(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    alpha = node.attrs["alpha"]
    return map_node(ctx, node, args, lambda x: arith.select(
        arith.cmpf(arith.CmpFPredicate.OGE, x, scalar(0.0, x.type)), x,
        arith.mulf(x, scalar(alpha, x.type))))


@lowers(ew.elu)
def _elu(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    alpha = node.attrs["alpha"]
    return map_node(ctx, node, args, lambda x: arith.select(
        arith.cmpf(arith.CmpFPredicate.OGT, x, scalar(0.0, x.type)), x,
        arith.mulf(scalar(alpha, x.type), math.expm1(x))))


@lowers(ew.gelu)
def _gelu(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    tanh_form = node.attrs["approximate"] == "tanh"

    def body(x):
        c = lambda v: scalar(v, x.type)
        if tanh_form:
            inner = arith.mulf(c(float(np.sqrt(2 / np.pi))),
                               arith.addf(x, arith.mulf(c(0.044715), arith.mulf(x, arith.mulf(x, x)))))
            t = math.tanh(inner)
        else:
            t = math.erf(arith.mulf(x, c(float(1 / np.sqrt(2)))))
        return arith.mulf(arith.mulf(c(0.5), x), arith.addf(c(1.0), t))
    return map_node(ctx, node, args, body)


@lowers(ew.clip)
def _clip(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    # Integer inputs: the reference clamps in float then truncates, i.e. clamps to trunc(bound).
    dt = node.inputs[0].type.dtype
    lo, hi = node.attrs["min"], node.attrs["max"]
    if dt is DType.BOOL:
        return [args[0]]
    if dt.is_float:
        def body(x):
            if lo != -np.inf:
                x = arith.maximumf(x, scalar(lo, x.type))
            if hi != np.inf:
                x = arith.minimumf(x, scalar(hi, x.type))
            return x
        return map_node(ctx, node, args, body)
    info = np.iinfo(dt.numpy)
    ilo = None if lo == -np.inf else int(np.clip(np.trunc(lo), info.min, info.max))
    ihi = None if hi == np.inf else int(np.clip(np.trunc(hi), info.min, info.max))
    mx, mn = (arith.maxui, arith.minui) if is_unsigned(dt) else (arith.maxsi, arith.minsi)

    def ibody(x):
        if ilo is not None:
            x = mx(x, scalar(ilo, x.type))
        if ihi is not None:
            x = mn(x, scalar(ihi, x.type))
        return x
    return map_node(ctx, node, args, ibody)


@lowers(ew.cast)
def _cast(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    src, to = node.inputs[0].type.dtype, node.attrs["to"]
    plain = not (is_byte_carried(src) or is_byte_carried(to) or DType.BF16 in (src, to))
    if src is to or plain and elem_type(src) == elem_type(to) and src.is_float == to.is_float:
        return [args[0]]
    sat, mode = node.attrs["saturate"], node.attrs["round_mode"]
    return map_node(ctx, node, args, lambda x: cast_scalar(x, src, to, node, sat, mode))


# -- binary -------------------------------------------------------------------
def _int_div(signed: bool):
    def body(a, b):
        zero, one = scalar(0, a.type), scalar(1, a.type)
        if not signed:
            return arith.divui(a, arith.select(arith.cmpi(arith.CmpIPredicate.eq, b, zero), one, b))
        m1 = scalar(-1, a.type)
        is_m1 = arith.cmpi(arith.CmpIPredicate.eq, b, m1)
        bad = arith.ori(arith.cmpi(arith.CmpIPredicate.eq, b, zero), is_m1)
        q = arith.divsi(a, arith.select(bad, one, b))
        return arith.select(is_m1, arith.subi(zero, a), q)
    return body


def _int_pow(a, b):
    """Square-and-multiply over the exponent's bits in the element width: exact modulo 2^n,
    as the reference's int64 power truncated to the dtype (negative exponents give 1)."""
    acc, base = scalar(1, a.type), a
    zero = scalar(0, a.type)
    for bit in range(int_width(a.type) - 1):
        m = scalar(1 << bit, a.type)
        on = arith.cmpi(arith.CmpIPredicate.ne, arith.andi(b, m), zero)
        acc = arith.select(on, arith.muli(acc, base), acc)
        base = arith.muli(base, base)
    neg = arith.cmpi(arith.CmpIPredicate.slt, b, zero)
    return arith.select(neg, scalar(1, a.type), acc)


def _binary_body(op, dt: DType):
    f, u = dt.is_float, is_unsigned(dt)
    F, I = arith.CmpFPredicate, arith.CmpIPredicate
    table = {
        ew.add: arith.addf if f else arith.addi,
        ew.sub: arith.subf if f else arith.subi,
        ew.mul: arith.mulf if f else arith.muli,
        ew.div: arith.divf if f else _int_div(not u),
        ew.pow_: math.powf if f else _int_pow,
        ew.minimum: arith.minimumf if f else (arith.minui if u else arith.minsi),
        ew.maximum: arith.maximumf if f else (arith.maxui if u else arith.maxsi),
        ew.equal: (lambda a, b: arith.cmpf(F.OEQ, a, b)) if f else (lambda a, b: arith.cmpi(I.eq, a, b)),
        ew.less: (lambda a, b: arith.cmpf(F.OLT, a, b)) if f else
        (lambda a, b: arith.cmpi(I.ult if u else I.slt, a, b)),
        ew.greater: (lambda a, b: arith.cmpf(F.OGT, a, b)) if f else
        (lambda a, b: arith.cmpi(I.ugt if u else I.sgt, a, b)),
        ew.logical_and: arith.andi, ew.logical_or: arith.ori,
    }
    return table[op]


_BINARY = (ew.add, ew.sub, ew.mul, ew.div, ew.pow_, ew.minimum, ew.maximum, ew.equal, ew.less,
           ew.greater, ew.logical_and, ew.logical_or)


@lowers(*_BINARY)
def _binary(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    return map_node(ctx, node, args, _binary_body(node.op, node.inputs[0].type.dtype))


@lowers(ew.mod)
def _mod(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    """fmod: the remainder of the division truncated toward zero (arith.remf / remsi); else of the floored
    division, its sign y's: a nonzero remainder of the other sign gets y added, a zero one takes y's sign
    (floats). Integer x mod 0 is 0, as is x mod -1 (remsi traps on INT_MIN % -1)."""
    dt, floored = node.inputs[0].type.dtype, not node.attrs["fmod"]
    F, I = arith.CmpFPredicate, arith.CmpIPredicate
    if dt is DType.F64 and ctx.target.kind == "llvm":
        raise Unsupported("float64 mod on the mlir backend for llvm: IREE's CPU build links no fmod",
                          node.loc, hint="use --backend tvm, or float32")

    def fbody(x, y):
        r = arith.remf(x, y)
        if not floored:
            return r
        zero = scalar(0.0, x.type)
        other = arith.xori(arith.cmpf(F.OLT, r, zero), arith.cmpf(F.OLT, y, zero))
        r = arith.select(arith.andi(arith.cmpf(F.ONE, r, zero), other), arith.addf(r, y), r)
        return arith.select(arith.cmpf(F.OEQ, r, zero), math.copysign(zero, y), r)

    def ibody(x, y):
        zero, one = scalar(0, x.type), scalar(1, x.type)
        if is_unsigned(dt):
            y0 = arith.cmpi(I.eq, y, zero)
            return arith.select(y0, zero, arith.remui(x, arith.select(y0, one, y)))
        bad = arith.ori(arith.cmpi(I.eq, y, zero), arith.cmpi(I.eq, y, scalar(-1, x.type)))
        r = arith.select(bad, zero, arith.remsi(x, arith.select(bad, one, y)))
        if floored:
            other = arith.xori(arith.cmpi(I.slt, r, zero), arith.cmpi(I.slt, y, zero))
            r = arith.select(arith.andi(arith.cmpi(I.ne, r, zero), other), arith.addi(r, y), r)
        return r
    return map_node(ctx, node, args, fbody if dt.is_float else ibody)


@lowers(ew.prelu)
def _prelu(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    dt = node.inputs[0].type.dtype
    if dt.is_float:
        return map_node(ctx, node, args, lambda x, s: arith.select(
            arith.cmpf(arith.CmpFPredicate.OGE, x, scalar(0.0, x.type)), x, arith.mulf(x, s)))
    pred = arith.CmpIPredicate.uge if is_unsigned(dt) else arith.CmpIPredicate.sge
    return map_node(ctx, node, args, lambda x, s: arith.select(
        arith.cmpi(pred, x, scalar(0, x.type)), x, arith.muli(x, s)))


@lowers(ew.where)
def _where(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    return map_node(ctx, node, args, arith.select)

