"""TVM's code for the element types it carries as bytes (compiler/backends/byte_types.py): the float8
formats (e4m3fn, e4m3fnuz, e5m2, e5m2fnuz, e8m0fnu) and float4 e2m1 as their bit pattern in a uint8, int4 /
int2 as their value in an int8, uint4 / uint2 in a uint8 (`registry.tvm_dtype`). nn.cast to and from them
is integer bit manipulation in TE that rounds as ml_dtypes (and ONNX) do, to nearest even; nn.bitcast works
on every type. Other ops take these types only where the bytes move unchanged (`check_byte_types`)."""
from __future__ import annotations

from tvm import relax, te, tirx

from compiler.backends.byte_types import FORMATS, SIGN_EXTENDED, SUB_BYTE_INTS, MiniFloat, is_byte_carried, \
    refuse_inexact_source
from compiler.backends.tvm_lower.registry import LowerCtx, const, dtype_of, lowers, tvm_dtype
from compiler.ir import Node
from compiler.ops import elementwise as ew
from compiler.ops.bitcast import bitcast
from compiler.types import DType

R = relax.op

def _u32(v: int) -> tirx.PrimExpr:
    return tirx.const(v, "uint32")


def _i32(v: int) -> tirx.PrimExpr:
    return tirx.const(v, "int32")


def _sel(cond: tirx.PrimExpr, a: tirx.PrimExpr, b: tirx.PrimExpr) -> tirx.PrimExpr:
    return tirx.Select(cond, a, b)


def encode(v: tirx.PrimExpr, f: MiniFloat, saturate: bool) -> tirx.PrimExpr:
    """The uint8 code of float32 `v` in format f, rounded to nearest even: a normal result by the
    carry trick on the float32 bits, a subnormal one as nearbyint(|v| / quantum) (exact scaling); a value
    past the largest finite one clamped to it when saturating, else f.overflow; NaN gives f.nan. Every
    intermediate is used at most a few times, as TIR's simplifier inlines them all (rounding the
    significand bit by bit made the expression thousands of nodes and its build take seconds)."""
    u = tirx.reinterpret("uint32", v)
    sign = tirx.Cast("int32", u >> _u32(31))
    a = u & _u32(0x7FFFFFFF)
    is_nan = a > _u32(0x7F800000)
    if saturate or f.overflow is None:
        top = _u32(f.max_bits)
        a = _sel(tirx.And(tirx.Not(is_nan), a > top), top, a)
    sh = 23 - f.mbits
    normal = tirx.Cast("int32", (a + _u32((1 << (sh - 1)) - 1) + ((a >> _u32(sh)) & _u32(1))) >> _u32(sh)) - \
        _i32((127 - f.bias) << f.mbits)
    scaled = tirx.reinterpret("float32", a) * tirx.const(2.0 ** (f.bias - 1 + f.mbits), "float32")
    subnormal = tirx.Cast("int32", tirx.nearbyint(scaled))
    min_normal = _u32((128 - f.bias) << 23)                  # float32 bits of 2^(1 - bias)
    code = _sel(a < min_normal, subnormal, normal)
    mag = _sel(code > _i32(f.max_code), _i32(f.overflow if f.overflow is not None else f.max_code), code)
    signed = mag | (sign << _i32(f.sign_bit))
    if f.fnuz:
        out = _sel(is_nan, _i32(0x80), _sel(tirx.Or(mag == _i32(0), mag == _i32(0x80)), mag, signed))
    elif f.overflow is None:     # float4 (ml_dtypes): NaN becomes a zero of the opposite sign
        out = _sel(is_nan, (_i32(1) - sign) << _i32(f.sign_bit), signed)
    else:
        out = _sel(is_nan, _i32(f.nan) | (sign << _i32(f.sign_bit)), signed)
    return tirx.Cast("uint8", out)


def decode(c: tirx.PrimExpr, f: MiniFloat) -> tirx.PrimExpr:
    """The float32 value of uint8 code `c` in format f (exact)."""
    c = tirx.Cast("int32", c)
    mag = c & _i32((1 << f.sign_bit) - 1)
    e = mag >> _i32(f.mbits)
    m = mag & _i32((1 << f.mbits) - 1)
    sig = _sel(e == _i32(0), m, m + _i32(1 << f.mbits))
    p2 = tirx.reinterpret("float32", tirx.Cast("uint32", tirx.max(e, _i32(1)) - _i32(f.bias + f.mbits - 127))
                          << _u32(23))
    val = tirx.Cast("float32", sig) * p2
    val = _sel((c >> _i32(f.sign_bit)) & _i32(1) == _i32(1), -val, val)
    nan = tirx.const(float("nan"), "float32")
    if f.fnuz:
        out = _sel(c == _i32(0x80), nan, val)
    elif f.overflow is None:
        out = val
    elif f.overflow == f.nan:                     # e4m3fn: the all-ones magnitude is NaN
        out = _sel(mag == _i32(f.nan), nan, val)
    else:                                         # e5m2: IEEE infinities and NaNs
        inf = tirx.const(float("inf"), "float32")
        top = _i32(((1 << f.ebits) - 1) << f.mbits)
        out = _sel(mag >= top, _sel(m == _i32(0), _sel(c == mag, inf, -inf), nan), val)
    return out


def encode_e8m0(v: tirx.PrimExpr, saturate: bool, round_mode: str) -> tirx.PrimExpr:
    """float8_e8m0fnu of float32 `v` as ops/elementwise.e8m0_values computes it."""
    u = tirx.reinterpret("uint32", v)
    exp = tirx.Cast("int32", (u >> _u32(23)) & _u32(0xFF))
    if round_mode == "up":
        up = (u & _u32(0x7FFFFF)) > _u32(0)
    elif round_mode == "nearest":
        up = tirx.And((u & _u32(0x400000)) > _u32(0), tirx.Or((u & _u32(0x3FFFFF)) > _u32(0), exp > _i32(0)))
    else:
        up = tirx.const(False, "bool")
    if saturate:
        up = tirx.And(up, exp != _i32(0xFE))
    code = _sel(exp == _i32(0xFF), _i32(0xFF), tirx.min(exp + _sel(up, _i32(1), _i32(0)), _i32(0xFF)))
    return tirx.Cast("uint8", code)


def decode_e8m0(c: tirx.PrimExpr) -> tirx.PrimExpr:
    """2^(c - 127) in float32; 0xFF is NaN, 0 the subnormal 2^-127."""
    c32 = tirx.Cast("uint32", c)
    bits = _sel(c32 == _u32(0), _u32(0x400000), c32 << _u32(23))
    return _sel(c32 == _u32(0xFF), tirx.const(float("nan"), "float32"), tirx.reinterpret("float32", bits))


def to_int(v: tirx.PrimExpr, src: str, to: DType) -> tirx.PrimExpr:
    """Integer type `to` (in its container) of `v` of TVM type `src`, as ml_dtypes converts: a float
    truncated toward zero, 0 when that is out of range, NaN or infinite; an integer wrapped to the low
    bits (for the sub-byte types)."""
    bits, container = to.bits, tvm_dtype(to)
    if src.startswith("float"):
        lo, end = (0, 2.0 ** bits) if to.is_unsigned else (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1))
        t = tirx.trunc(v)
        ok = tirx.And(t >= tirx.const(lo, src), t < tirx.const(end, src))
        return _sel(ok, tirx.Cast(container, t), tirx.const(0, container))
    low = tirx.Cast("int32", tirx.Cast("int64", v) & tirx.const((1 << bits) - 1, "int64"))
    if not to.is_unsigned:
        low = (low ^ _i32(1 << (bits - 1))) - _i32(1 << (bits - 1))
    return tirx.Cast(container, low)


# -- nn.cast --------------------------------------------------------------------------------------------
def _elementwise(ctx: LowerCtx, x: relax.Expr, body, name: str) -> relax.Expr:
    return ctx.emit_te(lambda t: te.compute(t.shape, lambda *i: body(t(*i)), name=name), x, name=name)


def plain_cast(x: relax.Expr, to: DType) -> relax.Expr:
    """Relax's cast between the types TVM has (a sub-byte int source is its int8 / uint8 value)."""
    if dtype_of(x) == "bool":                      # select, not a cast: LLVM rejects i1 fcmp
        if to is DType.BOOL:
            return x
        dt = tvm_dtype(to)
        return R.where(x, const(1, dt), const(0, dt))
    if to is DType.BOOL:
        return R.not_equal(x, const(0, dtype_of(x)))
    # float -> int: LLVM's fptosi truncates toward zero, as the reference does
    return R.astype(x, tvm_dtype(to))


def to_bf16(v: tirx.PrimExpr) -> tirx.PrimExpr:
    """bfloat16 of float32 `v`, rounded to nearest even; a NaN keeps its sign and top payload bits,
    quieted (ml_dtypes; TVM's own cast turns a NaN with a low payload into an infinity)."""
    u = tirx.reinterpret("uint32", v)
    rounded = (u + _u32(0x7FFF) + ((u >> _u32(16)) & _u32(1))) >> _u32(16)
    nan = (u & _u32(0x7FFFFFFF)) > _u32(0x7F800000)
    return tirx.reinterpret("bfloat16", tirx.Cast("uint16", _sel(nan, (u >> _u32(16)) | _u32(0x40), rounded)))


@lowers(ew.cast)
def _cast(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    src, to = node.inputs[0].type.dtype, node.attrs["to"]
    if is_byte_carried(src) or is_byte_carried(to):
        return [cast_bytes(ctx, node, args[0], src, to)]
    if to is DType.BF16 and src in (DType.F32, DType.F16):
        x = args[0] if src is DType.F32 else ctx.emit(plain_cast(args[0], DType.F32))
        return [_elementwise(ctx, x, to_bf16, "to_bfloat16")]
    return [plain_cast(args[0], to)]


def cast_bytes(ctx: LowerCtx, node: Node, x: relax.Expr, src: DType, to: DType) -> relax.Expr:
    """nn.cast where `src` or `to` is carried as bytes: decode a float8 / float4 source to float32,
    then encode to the target format, or convert to a sub-byte int, or cast as usual."""
    if src.is_narrow_float:
        fmt = FORMATS.get(src)
        value = (lambda c: decode(c, fmt)) if fmt else decode_e8m0
        if to.is_int:
            return _elementwise(ctx, x, lambda c: to_int(value(c), "float32", to), f"{src.value}_to_{to.value}")
        x = _elementwise(ctx, x, value, "decode_" + src.value)
        return x if to is DType.F32 else cast_bytes(ctx, node, x, DType.F32, to) if is_byte_carried(to) \
            else plain_cast(x, to)
    if to.is_narrow_float:
        refuse_inexact_source("tvm", node, src, to)
        x32 = x if src is DType.F32 else ctx.emit(plain_cast(x, DType.F32))
        if to is DType.F8E8M0:
            sat, mode = node.attrs["saturate"], node.attrs["round_mode"]
            return _elementwise(ctx, x32, lambda v: encode_e8m0(v, sat, mode), "encode_" + to.value)
        fmt, sat = FORMATS[to], node.attrs["saturate"]
        return _elementwise(ctx, x32, lambda v: encode(v, fmt, sat), "encode_" + to.value)
    if to in SUB_BYTE_INTS and src is not DType.BOOL:
        if src is DType.BF16:
            x = ctx.emit(plain_cast(x, DType.F32))
        src_dt = dtype_of(x)
        return _elementwise(ctx, x, lambda v: to_int(v, src_dt, to), "to_" + to.value)
    return plain_cast(x, to)        # a sub-byte int (its value) or bool to a wider type


# -- nn.bitcast -----------------------------------------------------------------------------------------
def _bits_of(v: tirx.PrimExpr, src: DType) -> tirx.PrimExpr:
    """v's bit pattern as an unsigned int of max(bits, 8) bits."""
    if src is DType.BOOL:
        return tirx.Cast("uint8", v)
    if src in SIGN_EXTENDED:
        return tirx.Cast("uint8", v) & tirx.const((1 << src.bits) - 1, "uint8")
    if is_byte_carried(src):
        return v
    return tirx.reinterpret(f"uint{src.bits}", v)


def _from_bits(u: tirx.PrimExpr, to: DType) -> tirx.PrimExpr:
    if to is DType.BOOL:
        return u != tirx.const(0, u.dtype)
    if to in SIGN_EXTENDED:
        sign = _i32(1 << (to.bits - 1))
        return tirx.Cast("int8", (tirx.Cast("int32", u) ^ sign) - sign)
    if is_byte_carried(to):
        return u
    return tirx.reinterpret(tvm_dtype(to), u)


@lowers(bitcast)
def _bitcast(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    src, to = node.inputs[0].type.dtype, node.attrs["to"]
    if src is to or (tvm_dtype(src) == tvm_dtype(to) and src not in SIGN_EXTENDED and to not in SIGN_EXTENDED):
        return [args[0]]
    return [_elementwise(ctx, args[0], lambda v: _from_bits(_bits_of(v, src), to), "bitcast")]
