"""Element conversions of the MLIR backend (nn.cast's `cast_scalar`, nn.bitcast's bits), including the types it
carries in integers (compiler/backends/byte_types.py): bfloat16 as its bits in an i16, the float8 / float4 formats
as their bits in an i8, int4 / int2 (uint4 / uint2) as their value in an i8, sign- (zero-) extended.

A conversion to or from a carried type is integer arithmetic on the float32 bit pattern (arith.bitcast f32 <->
i32), ported from tvm_lower/dtypes.py: it rounds as ml_dtypes (and ONNX) do, to nearest even, saturates per the
cast's `saturate`, and never relies on float arithmetic producing a subnormal (IREE's CPU code flushes them)."""
from __future__ import annotations

from iree.compiler import ir
from iree.compiler.dialects import arith

from compiler.backends.byte_types import FORMATS, SIGN_EXTENDED, SUB_BYTE_INTS, MiniFloat, is_byte_carried, \
    refuse_inexact_source
from compiler.backends.mlir_lower.registry import elem_type, int_width, is_float_type, is_unsigned, scalar
from compiler.ir import Node
from compiler.types import DType

I = arith.CmpIPredicate
_NAN32 = 0x7FC00000


def _int(bits: int) -> ir.Type:
    return ir.IntegerType.get_signless(bits)


def _c(v: int) -> ir.Value:
    """An i32 constant."""
    return scalar(v, _int(32))


def _sel(cond: ir.Value, a: ir.Value, b: ir.Value) -> ir.Value:
    return arith.select(cond, a, b)


def _f32_bits(v: ir.Value) -> ir.Value:
    return arith.bitcast(_int(32), v)


def _f32_of(bits: ir.Value) -> ir.Value:
    return arith.bitcast(ir.F32Type.get(), bits)


# -- float8 / float4 ------------------------------------------------------------------------------------------
def encode(v: ir.Value, f: MiniFloat, saturate: bool) -> ir.Value:
    """The i8 code of float32 `v` in format f, rounded to nearest even: a normal result by the carry trick on the
    float32 bits, a subnormal one by shifting the significand right with its own round-to-even; a value past the
    largest finite one clamped to it when saturating, else f.overflow; NaN gives f.nan."""
    u = _f32_bits(v)
    sign = arith.shrui(u, _c(31))
    a = arith.andi(u, _c(0x7FFFFFFF))
    is_nan = arith.cmpi(I.sgt, a, _c(0x7F800000))
    if saturate or f.overflow is None:
        top = _c(f.max_bits)
        a = _sel(arith.andi(arith.cmpi(I.sgt, a, top), arith.cmpi(I.sle, a, _c(0x7F800000))), top, a)
    sh = 23 - f.mbits
    carry = arith.addi(arith.addi(a, _c((1 << (sh - 1)) - 1)), arith.andi(arith.shrui(a, _c(sh)), _c(1)))
    normal = arith.subi(arith.shrui(carry, _c(sh)), _c((127 - f.bias) << f.mbits))
    # below the smallest normal: the significand (implicit bit set) shifted right by s, rounded to even
    e = arith.shrui(a, _c(23))
    sig = arith.ori(arith.andi(a, _c(0x7FFFFF)), _c(0x800000))
    s = arith.maxsi(arith.minsi(arith.subi(_c(151 - f.bias - f.mbits), e), _c(31)), _c(1))   # 1..31: no poison
    q = arith.shrui(sig, s)
    rem = arith.subi(sig, arith.shli(q, s))
    half = arith.shli(_c(1), arith.subi(s, _c(1)))
    up = arith.ori(arith.cmpi(I.ugt, rem, half),
                   arith.andi(arith.cmpi(I.eq, rem, half), arith.cmpi(I.ne, arith.andi(q, _c(1)), _c(0))))
    subnormal = arith.addi(q, arith.extui(_int(32), up))
    code = _sel(arith.cmpi(I.slt, a, _c((128 - f.bias) << 23)), subnormal, normal)
    over = f.overflow if f.overflow is not None else f.max_code
    mag = _sel(arith.cmpi(I.sgt, code, _c(f.max_code)), _c(over), code)
    signed = arith.ori(mag, arith.shli(sign, _c(f.sign_bit)))
    if f.fnuz:
        zero_or_nan = arith.ori(arith.cmpi(I.eq, mag, _c(0)), arith.cmpi(I.eq, mag, _c(0x80)))
        out = _sel(is_nan, _c(0x80), _sel(zero_or_nan, mag, signed))
    elif f.overflow is None:      # float4 (ml_dtypes): NaN becomes a zero of the opposite sign
        out = _sel(is_nan, arith.shli(arith.subi(_c(1), sign), _c(f.sign_bit)), signed)
    else:
        out = _sel(is_nan, arith.ori(_c(f.nan), arith.shli(sign, _c(f.sign_bit))), signed)
    return arith.trunci(_int(8), out)


def decode(c: ir.Value, f: MiniFloat) -> ir.Value:
    """The float32 value of i8 code `c` in format f (exact): the significand as a float (exact, normal) with the
    exponent added to its bits."""
    c = arith.extui(_int(32), c)
    mag = arith.andi(c, _c((1 << f.sign_bit) - 1))
    e = arith.shrui(mag, _c(f.mbits))
    m = arith.andi(mag, _c((1 << f.mbits) - 1))
    sig = _sel(arith.cmpi(I.eq, e, _c(0)), m, arith.addi(m, _c(1 << f.mbits)))
    shift = arith.shli(arith.subi(arith.maxsi(e, _c(1)), _c(f.bias + f.mbits)), _c(23))
    bits = arith.addi(_f32_bits(arith.uitofp(ir.F32Type.get(), sig)), shift)
    bits = _sel(arith.cmpi(I.eq, sig, _c(0)), _c(0), bits)
    sign = arith.shli(arith.andi(arith.shrui(c, _c(f.sign_bit)), _c(1)), _c(31))
    nan = arith.ori(_c(_NAN32), sign)
    if f.fnuz:                                        # NaN is 0x80: a negative one, as ml_dtypes decodes it
        bits = _sel(arith.cmpi(I.eq, c, _c(0x80)), nan, arith.ori(bits, sign))
    elif f.overflow is None:
        bits = arith.ori(bits, sign)
    elif f.overflow == f.nan:                         # e4m3fn: the all-ones magnitude is NaN
        bits = _sel(arith.cmpi(I.eq, mag, _c(f.nan)), nan, arith.ori(bits, sign))
    else:                                             # e5m2: IEEE infinities and NaNs
        top = ((1 << f.ebits) - 1) << f.mbits
        special = _sel(arith.cmpi(I.eq, m, _c(0)), _c(0x7F800000), _c(_NAN32))
        bits = arith.ori(_sel(arith.cmpi(I.sge, mag, _c(top)), special, bits), sign)
    return _f32_of(bits)


def encode_e8m0(v: ir.Value, saturate: bool, round_mode: str) -> ir.Value:
    """float8_e8m0fnu of float32 `v` as ops/elementwise.e8m0_values computes it."""
    u = _f32_bits(v)
    exp = arith.andi(arith.shrui(u, _c(23)), _c(0xFF))
    false = scalar(False, _int(1))
    if round_mode == "up":
        up = arith.cmpi(I.ne, arith.andi(u, _c(0x7FFFFF)), _c(0))
    elif round_mode == "nearest":
        up = arith.andi(arith.cmpi(I.ne, arith.andi(u, _c(0x400000)), _c(0)),
                        arith.ori(arith.cmpi(I.ne, arith.andi(u, _c(0x3FFFFF)), _c(0)), arith.cmpi(I.sgt, exp, _c(0))))
    else:
        up = false
    if saturate:
        up = arith.andi(up, arith.cmpi(I.ne, exp, _c(0xFE)))
    code = _sel(arith.cmpi(I.eq, exp, _c(0xFF)), _c(0xFF),
                arith.minsi(arith.addi(exp, arith.extui(_int(32), up)), _c(0xFF)))
    return arith.trunci(_int(8), code)


def decode_e8m0(c: ir.Value) -> ir.Value:
    """2^(c - 127) in float32, by its bits; 0xFF is NaN, 0 the subnormal 2^-127."""
    c = arith.extui(_int(32), c)
    bits = _sel(arith.cmpi(I.eq, c, _c(0)), _c(0x400000), arith.shli(c, _c(23)))
    return _f32_of(_sel(arith.cmpi(I.eq, c, _c(0xFF)), _c(_NAN32), bits))


def _nonzero(c: ir.Value, src: DType) -> ir.Value:
    """A narrow float code's value != 0 (NaN is nonzero), on the code."""
    if src is DType.F8E8M0:
        return scalar(True, _int(1))
    f = FORMATS[src]
    mask = 0xFF if f.fnuz else (1 << f.sign_bit) - 1
    return arith.cmpi(I.ne, arith.andi(c, scalar(mask, c.type)), scalar(0, c.type))


# -- bfloat16 -------------------------------------------------------------------------------------------------
def to_bf16(v: ir.Value) -> ir.Value:
    """The i16 bits of bfloat16(float32 `v`), rounded to nearest even; a NaN keeps its sign and top payload
    bits, quieted (ml_dtypes)."""
    u = _f32_bits(v)
    rounded = arith.shrui(arith.addi(arith.addi(u, _c(0x7FFF)), arith.andi(arith.shrui(u, _c(16)), _c(1))), _c(16))
    nan = arith.cmpi(I.sgt, arith.andi(u, _c(0x7FFFFFFF)), _c(0x7F800000))
    return arith.trunci(_int(16), _sel(nan, arith.ori(arith.shrui(u, _c(16)), _c(0x40)), rounded))


def from_bf16(b: ir.Value) -> ir.Value:
    """The float32 of bfloat16 bits `b` (i16): the bits moved up, exact."""
    return _f32_of(arith.shli(arith.extui(_int(32), b), _c(16)))


def _to_f64(v: ir.Value) -> ir.Value:
    """float64 of float32 `v`, exact for a subnormal too (which arith.extf flushes to zero on IREE's CPU): its
    significand as a float64 with 2^-149 added to the exponent bits."""
    i64, f64 = _int(64), ir.F64Type.get()
    u = _f32_bits(v)
    mant = arith.andi(u, _c(0x7FFFFF))
    tiny = arith.addi(arith.bitcast(i64, arith.uitofp(f64, mant)), scalar(-149 << 52, i64))
    tiny = arith.ori(tiny, arith.shli(arith.extui(i64, arith.shrui(u, _c(31))), scalar(63, i64)))
    sub = arith.andi(arith.cmpi(I.ult, arith.andi(u, _c(0x7FFFFFFF)), _c(0x800000)), arith.cmpi(I.ne, mant, _c(0)))
    return _sel(sub, arith.bitcast(f64, tiny), arith.extf(f64, v))


# -- integers -------------------------------------------------------------------------------------------------
def _float_to_int(v: ir.Value, to: DType) -> ir.Value:
    """Integer `to` (in its container) of float `v`, as ml_dtypes converts a float8 / sub-byte value: truncated
    toward zero, 0 when that is out of range or NaN."""
    bits = to.bits
    lo, end = (0, 2.0 ** bits) if to.is_unsigned else (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1))
    ok = arith.andi(arith.cmpf(arith.CmpFPredicate.OGT, v, scalar(lo - 1, v.type)),
                    arith.cmpf(arith.CmpFPredicate.OLT, v, scalar(end, v.type)))
    v = _sel(ok, v, scalar(0.0, v.type))
    et = elem_type(to)
    return arith.fptoui(et, v) if to.is_unsigned and bits >= 8 else arith.fptosi(et, v)


def _to_sub_byte(x: ir.Value, to: DType) -> ir.Value:
    """A sub-byte int of integer `x` (its container): the low bits, sign-extended for int4 / int2."""
    i8 = _int(8)
    v = arith.trunci(i8, x) if int_width(x.type) > 8 else x
    if to.is_unsigned:
        return arith.andi(v, scalar((1 << to.bits) - 1, i8))
    k = scalar(8 - to.bits, i8)
    return arith.shrsi(arith.shli(v, k), k)


def bits_of(v: ir.Value, src: DType) -> ir.Value:
    """v's bit pattern as an integer of max(bits, 8) bits (nn.bitcast)."""
    if src is DType.BOOL:
        return arith.extui(_int(8), v)
    if src in SIGN_EXTENDED:
        return arith.andi(v, scalar((1 << src.bits) - 1, v.type))
    if is_float_type(v.type):
        return arith.bitcast(_int(src.bits), v)
    return v


def from_bits(u: ir.Value, to: DType) -> ir.Value:
    if to is DType.BOOL:
        return arith.cmpi(I.ne, u, scalar(0, u.type))
    if to in SIGN_EXTENDED:
        return _to_sub_byte(u, to)
    et = elem_type(to)
    return arith.bitcast(et, u) if is_float_type(et) else u


# -- nn.cast --------------------------------------------------------------------------------------------------
def cast_scalar(x: ir.Value, src: DType, to: DType, node: Node | None = None, saturate: bool = True,
                round_mode: str = "up") -> ir.Value:
    """One element converted as the nn.cast reference does (float -> int truncates)."""
    if src is to:
        return x
    if src is DType.BF16 or to is DType.BF16 or is_byte_carried(src) or is_byte_carried(to):
        return _cast_carried(x, src, to, node, saturate, round_mode)
    return _plain(x, src, to)


def _cast_carried(x: ir.Value, src: DType, to: DType, node: Node | None, saturate: bool,
                  round_mode: str) -> ir.Value:
    again = lambda v, s: cast_scalar(v, s, to, node, saturate, round_mode)   # noqa: E731
    if src.is_narrow_float:
        if to is DType.BOOL:
            return _nonzero(x, src)
        v = decode(x, FORMATS[src]) if src in FORMATS else decode_e8m0(x)
        return _float_to_int(v, to) if to.is_int else _to_f64(v) if to is DType.F64 else again(v, DType.F32)
    if src is DType.BF16:
        if to is DType.BOOL:
            return arith.cmpi(I.ne, arith.andi(x, scalar(0x7FFF, x.type)), scalar(0, x.type))
        v = from_bf16(x)
        return _to_f64(v) if to is DType.F64 else again(v, DType.F32)
    if to.is_narrow_float or to is DType.BF16:
        if node is not None:
            refuse_inexact_source("mlir", node, src, to)
        v = _plain(x, src, DType.F32)
        if to is DType.BF16:
            return to_bf16(v)
        if to is DType.F8E8M0:
            return encode_e8m0(v, saturate, round_mode)
        return encode(v, FORMATS[to], saturate)
    if to in SUB_BYTE_INTS and src is not DType.BOOL:
        return _float_to_int(x, to) if is_float_type(x.type) else _to_sub_byte(x, to)
    return _plain(x, src, to)       # a sub-byte int (its value) or bool to a wider type


def _plain(x: ir.Value, src: DType, to: DType) -> ir.Value:
    """A conversion between types MLIR has (a sub-byte int source is its i8 value)."""
    et = elem_type(to)
    if src is to:
        return x
    if to is DType.BOOL:
        if src.is_float:
            return arith.cmpf(arith.CmpFPredicate.UNE, x, scalar(0.0, x.type))
        return arith.cmpi(I.ne, x, scalar(0, x.type))
    if src is DType.BOOL:
        return arith.uitofp(et, x) if to.is_float else arith.extui(et, x)
    if src.is_float and to.is_float:
        return arith.extf(et, x) if to.bits > src.bits else arith.truncf(et, x)
    if src.is_float:
        return arith.fptoui(et, x) if is_unsigned(to) else arith.fptosi(et, x)
    if to.is_float:
        return arith.uitofp(et, x) if is_unsigned(src) else arith.sitofp(et, x)
    wf, wt = int_width(x.type), int_width(et)
    if wf == wt:
        return x
    if wf > wt:
        return arith.trunci(et, x)
    return arith.extui(et, x) if is_unsigned(src) else arith.extsi(et, x)
