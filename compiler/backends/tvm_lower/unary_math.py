"""Lowerings of the extra unary math (trigonometric, hyperbolic, round, isnan, isinf) and the
bitwise ops. Round is a TE nearbyint: ties to even, as the reference's rint. The hyperbolic
functions are TE formulas over exp/log/sqrt: LLVM has no vector intrinsic for them, and TVM
fails to compile their intrinsics once the CPU schedule vectorizes a fused kernel."""
from __future__ import annotations

from tvm import relax, te, tirx

from compiler.backends.tvm_lower.registry import LowerCtx, lowers, lowers_table
from compiler.ir import Node
from compiler.ops import bitwise
from compiler.ops import unary_math as um

R = relax.op

_UNARY = {
    um.sin: R.sin, um.cos: R.cos, um.tan: R.tan, um.asin: R.asin, um.acos: R.acos,
    um.atan: R.atan, um.isnan: R.isnan, bitwise.bitwise_not: R.bitwise_not,
}
_BINARY = {
    bitwise.bitwise_and: R.bitwise_and, bitwise.bitwise_or: R.bitwise_or,
    bitwise.bitwise_xor: R.bitwise_xor,
}


lowers_table(_UNARY)
lowers_table(_BINARY)


def _hyperbolic(name: str, x: tirx.PrimExpr) -> tirx.PrimExpr:
    one, half = tirx.const(1, x.dtype), tirx.const(0.5, x.dtype)
    if name == "sinh":
        return (tirx.exp(x) - tirx.exp(-x)) * half
    if name == "cosh":
        return (tirx.exp(x) + tirx.exp(-x)) * half
    if name == "asinh":      # odd: computed on |x| so large negative x keeps its precision
        a = tirx.abs(x)
        r = tirx.log(a + tirx.sqrt(a * a + one))
        return tirx.Select(x < tirx.const(0, x.dtype), -r, r)
    if name == "acosh":
        return tirx.log(x + tirx.sqrt(x * x - one))
    return half * tirx.log((one + x) / (one - x))     # atanh


@lowers(um.sinh, um.cosh, um.asinh, um.acosh, um.atanh)
def _hyperbolic_op(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    name = node.op.short_name

    def fn(x: te.Tensor) -> te.Tensor:
        return te.compute(x.shape, lambda *i: _hyperbolic(name, x[i]), name=name)
    return [ctx.emit_te(fn, args[0], name=name)]


@lowers(um.round_)
def _round(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    def fn(x: te.Tensor) -> te.Tensor:
        return te.compute(x.shape, lambda *i: tirx.nearbyint(x[i]), name="round")
    return [ctx.emit_te(fn, args[0], name="round_even")]


@lowers(um.isinf)
def _isinf(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    pos, neg = node.attrs["detect_positive"], node.attrs["detect_negative"]

    def fn(x: te.Tensor) -> te.Tensor:
        def body(*i):
            v = x[i]
            zero = tirx.const(0, x.dtype)
            hit = tirx.isinf(v)
            if not (pos and neg):
                hit = tirx.And(hit, v > zero if pos else v < zero) if (pos or neg) else \
                    tirx.const(False, "bool")
            return hit
        return te.compute(x.shape, body, name="isinf")
    return [ctx.emit_te(fn, args[0], name="isinf")]


@lowers(bitwise.bit_shift)
def _bit_shift(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    """Shifts outside [0, bits) give the sign fill (LLVM would leave them undefined)."""
    left = node.attrs["direction"] == "left"
    shape = tuple(node.outputs[0].type.shape)

    def fn(x: te.Tensor, s: te.Tensor) -> te.Tensor:
        from tvm import topi
        x2, s2 = topi.broadcast_to(x, shape), topi.broadcast_to(s, shape)
        dt = str(x.dtype)
        bits = tirx.const(int(dt.lstrip("uint")), dt)
        zero = tirx.const(0, dt)

        def body(*i):
            v, k = x2[i], s2[i]
            bad = tirx.Or(k >= bits, k < zero) if dt.startswith("int") else k >= bits
            safe = tirx.Select(bad, zero, k)
            shifted = v << safe if left else v >> safe
            fill = zero if left or not dt.startswith("int") else \
                tirx.Select(v < zero, tirx.const(-1, dt), zero)
            return tirx.Select(bad, fill, shifted)
        return te.compute(shape, body, name="bit_shift")
    return [ctx.emit_te(fn, args[0], args[1], name="bit_shift")]
