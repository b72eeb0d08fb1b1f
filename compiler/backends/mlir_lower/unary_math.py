"""MLIR lowerings of the extra unary math (trigonometric, hyperbolic, round) and the bitwise ops (and, or, xor,
not, shifts, bitcast). IREE expands the math dialect's trigonometric and hyperbolic functions into polynomials
and exp / log / sqrt (no libm call: its static link has none); round is math.roundeven, ties to even as the
reference's rint."""
from __future__ import annotations

from iree.compiler import ir
from iree.compiler.dialects import arith, math

from compiler.backends.byte_types import SIGN_EXTENDED
from compiler.backends.mlir_lower.casts import bits_of, from_bits
from compiler.backends.mlir_lower.elementwise import map_node
from compiler.backends.mlir_lower.registry import LowerCtx, elem_type, in_f32, int_width, is_unsigned, lowers, scalar
from compiler.ir import Node
from compiler.ops import bitwise
from compiler.ops import unary_math as um
from compiler.ops.bitcast import bitcast
from compiler.types import DType

_UNARY = {
    um.sin: math.sin, um.cos: math.cos, um.tan: math.tan, um.asin: math.asin, um.acos: math.acos,
    um.atan: math.atan, um.sinh: math.sinh, um.cosh: math.cosh, um.asinh: math.asinh, um.acosh: math.acosh,
    um.atanh: math.atanh, um.round_: math.roundeven,
    bitwise.bitwise_not: lambda x: arith.xori(x, scalar(-1, x.type)),
}
_BINARY = {bitwise.bitwise_and: arith.andi, bitwise.bitwise_or: arith.ori, bitwise.bitwise_xor: arith.xori}


@lowers(*_UNARY)
def _unary(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    return map_node(ctx, node, args, in_f32(_UNARY[node.op]))


@lowers(*_BINARY)
def _binary(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    return map_node(ctx, node, args, _BINARY[node.op])


@lowers(bitwise.bit_shift)
def _bit_shift(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    """A shift outside [0, bits) gives the sign fill (-1 for a right shift of a negative signed x, else 0), as
    the reference does; arith leaves such shifts undefined."""
    left, unsigned = node.attrs["direction"] == "left", is_unsigned(node.inputs[0].type.dtype)

    def body(x, s):
        bits, zero = int_width(x.type), scalar(0, x.type)
        inside = arith.cmpi(arith.CmpIPredicate.ult, s, scalar(bits, x.type))   # unsigned: s < 0 is huge
        safe = arith.select(inside, s, zero)
        if left:
            return arith.select(inside, arith.shli(x, safe), zero)
        if unsigned:
            return arith.select(inside, arith.shrui(x, safe), zero)
        fill = arith.select(arith.cmpi(arith.CmpIPredicate.slt, x, zero), scalar(-1, x.type), zero)
        return arith.select(inside, arith.shrsi(x, safe), fill)
    return map_node(ctx, node, args, body)


@lowers(bitcast)
def _bitcast(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    """The element's bits read as the other type: arith.bitcast; a bool (i1 here) from or to a byte: true where
    the byte is nonzero, 1 or 0 as a byte; int4 / int2 (their value in an i8) masked to and sign-extended from
    their bits (casts.bits_of / from_bits)."""
    src, to = node.inputs[0].type.dtype, node.attrs["to"]
    if src is to or (elem_type(src) == elem_type(to) and DType.BOOL not in (src, to)
                     and src not in SIGN_EXTENDED and to not in SIGN_EXTENDED):
        return [args[0]]
    return map_node(ctx, node, args, lambda x: from_bits(bits_of(x, src), to))
