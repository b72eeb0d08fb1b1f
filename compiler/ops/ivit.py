"""I-ViT integer nonlinearities (dialect `q`): Shiftmax, ShiftGELU, I-LayerNorm, and ShiftTanh
(the same shift-exponent applied to tanh, for BERT's pooler). Their numpy int64 references ARE
the semantics (ALGORITHMS.md §2.3-2.5); every backend must match them bit for bit.

Shared piece, `shift_exp(I, x0, n)` for I <= 0 at scale S, x0 = floor(-1/S) (the integer that
stands for -1.0), result ~= e^(I*S) * |x0| * 2^n:
    1. I_p = I + (I >> 1) - (I >> 4)            log2(e) ~= 1.0111b: e^x = 2^(x log2 e)
    2. I_p = max(I_p, n * x0)                   the exponent never needs a shift > n
    3. q = floor(I_p / x0), r = I_p - q * x0     q >= 0, r in (x0, 0]: 2^(r*S) * 2^-q
    4. E = (r >> 1) - x0                         2^f ~= 1 + f/2 on f in (-1, 0]
    5. exp = E << (n - q)
`>>` is an arithmetic shift (floor), `/` floor division, all in int64.

Deviation from I-ViT, as an attribute: the once-per-row (per-element for GELU/tanh) division
divides 2^D - 1 with D = `dividend_bits`; D = 31 is I-ViT (factor = floor((2^31-1)/sum) keeps
only ~log2(2^31/sum) bits, 4-5 bits for ShiftGELU's n = 23), the ivit pass uses D = 62, which
keeps the same single integer division but a 31-bit-finer factor (products stay < 2^63).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from compiler.ops._util import norm_axis
from compiler.ops.quant import INT_RANGE, _check_clamp, _need
from compiler.ops.registry import Attr, TypeRuleError, define
from compiler.types import DType, TensorType

INT31 = 2**31 - 1
GELU_ALPHA = 1.702               # GELU(x) ~= x * sigmoid(1.702 x)
NEWTON_START = 2**16             # I-LayerNorm: integer sqrt, fixed 10 Newton steps from 2^16
NEWTON_STEPS = 10
_INPUTS = (DType.I8, DType.U8, DType.I16, DType.I32)
_OUT_BITS = {DType.I8: 7, DType.U8: 8, DType.I16: 15, DType.I32: 31}


def exp_unit(scale: float) -> int:
    """x0 = floor(-1 / S): the (negative) integer that represents -1.0 at scale S (S rounded to
    float32, as scales are stored; the division in float64)."""
    return int(math.floor(-1.0 / float(np.float32(scale))))


def shift_exp(i: np.ndarray, x0: int, n: int) -> np.ndarray:
    """The integer exponential of I-ViT (steps 1-5 in the module docstring); i <= 0, int64."""
    i = np.asarray(i, np.int64)
    ip = i + (i >> 1) - (i >> 4)
    ip = np.maximum(ip, np.int64(n * x0))
    q = ip // np.int64(x0)
    r = ip - q * np.int64(x0)
    e = (r >> 1) - np.int64(x0)
    return e << (np.int64(n) - q)


def _check_dividend(a: dict[str, Any], k: int, what: str) -> None:
    if not max(31, k) <= a["dividend_bits"] <= 62:
        raise TypeRuleError(f"{what}: dividend_bits must be in [{max(31, k)}, 62]")


def _check_n(n: int, x0: int, terms: int, what: str) -> None:
    """Each shift_exp result is <= |x0| * 2^n; `terms` of them must sum within 2^31 - 1 (the
    dividend of the per-row integer division)."""
    if not 0 <= n <= 30:
        raise TypeRuleError(f"{what}: n = {n} must be in [0, 30]")
    if terms * -x0 * 2**n > INT31:
        raise TypeRuleError(f"{what}: {terms} * |x0| ({-x0}) * 2^{n} exceeds 2^31 - 1; lower n or "
                            f"use a coarser input scale")


# -- Shiftmax -------------------------------------------------------------------------------
def _shiftmax_infer(ins: list[TensorType], a: dict[str, Any]) -> list[TensorType]:
    x = ins[0]
    _need(x, _INPUTS, "shiftmax input")
    _need(TensorType((), a["dtype"]), tuple(_OUT_BITS), "shiftmax output")
    axis = norm_axis(a["axis"], x.rank)
    if a["scale"] <= 0:
        raise TypeRuleError("shiftmax scale must be positive")
    _check_n(a["n"], exp_unit(a["scale"]), x.shape[axis], "shiftmax")
    _check_dividend(a, _OUT_BITS[a["dtype"]], "shiftmax")
    return [TensorType(x.shape, a["dtype"])]


def shiftmax_values(x: np.ndarray, scale: float, n: int, axis: int, out: DType,
                    dividend_bits: int = 31) -> np.ndarray:
    x = np.asarray(x, np.int64)
    x0 = exp_unit(scale)
    e = shift_exp(x - x.max(axis=axis, keepdims=True), x0, n)             # steps 1-6
    total = np.minimum(e.sum(axis=axis, keepdims=True), INT31)            # step 7
    factor = np.int64(2**dividend_bits - 1) // total                      # step 8
    k = _OUT_BITS[out]
    y = (e * factor) >> (dividend_bits - k)
    return np.clip(y, 0, INT_RANGE[out][1]).astype(out.numpy)


def _shiftmax_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    return [shiftmax_values(ins[0], a["scale"], a["n"], norm_axis(a["axis"], ins[0].ndim), a["dtype"],
                            a["dividend_bits"])]


shiftmax = define(
    "q.shiftmax",
    "Integer softmax (I-ViT Shiftmax) along `axis`; input any int at real scale `scale` (a zero "
    "point cancels in step 1). Per row: d = x - max(x); e = shift_exp(d, x0 = floor(-1/scale), n); "
    "sum = min(sum(e), 2^31-1); factor = floor((2^D-1) / sum); y = clamp((e * factor) >> (D - k), "
    "0, qmax), D = dividend_bits (31 in I-ViT; up to 62 for a finer factor), with k = 7 (int8), 8 (uint8), 15 (int16), 31 (int32, no shift): y ~= softmax * 2^k, "
    "output scale 2^-k. Requires len(axis) * |x0| * 2^n <= 2^31-1 (checked).",
    _shiftmax_infer, _shiftmax_ref, 1,
    scale=Attr("float"), n=Attr("int", 15), axis=Attr("int", -1), dtype=Attr("dtype", DType.I8),
    dividend_bits=Attr("int", 31))


# -- ShiftGELU --------------------------------------------------------------------------------
def _shiftgelu_infer(ins: list[TensorType], a: dict[str, Any]) -> list[TensorType]:
    x = ins[0]
    _need(x, (DType.I8, DType.I16), "shiftgelu input")
    if a["scale"] <= 0:
        raise TypeRuleError("shiftgelu scale must be positive")
    if not 1 <= a["sigma_bits"] <= 15:
        raise TypeRuleError("shiftgelu sigma_bits must be in [1, 15]")
    _check_n(a["n"], exp_unit(GELU_ALPHA * float(np.float32(a["scale"]))), 2, "shiftgelu")
    _check_dividend(a, a["sigma_bits"], "shiftgelu")
    return [TensorType(x.shape, DType.I32)]


def shiftgelu_values(x: np.ndarray, scale: float, n: int, sigma_bits: int,
                     dividend_bits: int = 31, row_max: bool = True) -> np.ndarray:
    x = np.asarray(x, np.int64)
    x0 = exp_unit(GELU_ALPHA * float(np.float32(scale)))     # 1.702 folded into the scale
    m = np.maximum(x.max(axis=-1, keepdims=True) if row_max else x, 0)   # both exponents <= 0
    e1 = shift_exp(x - m, x0, n)                               # e^(z - m)
    e2 = shift_exp(-m, x0, n)                                  # e^(-m)
    factor = np.int64(2**dividend_bits - 1) // (e1 + e2)
    sigma = (e1 * factor) >> (dividend_bits - sigma_bits)                 # sigmoid(1.702 x) * 2^sigma_bits
    return (x * sigma).astype(np.int32)


def _shiftgelu_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    return [shiftgelu_values(ins[0], a["scale"], a["n"], a["sigma_bits"], a["dividend_bits"],
                             a["row_max"])]


shiftgelu = define(
    "q.shiftgelu",
    "Integer GELU (I-ViT ShiftGELU), x * sigmoid(1.702 x); input int8/int16 (zero point 0) at "
    "`scale`, output int32 at scale * 2^-sigma_bits. With x0 = floor(-1 / (1.702 * scale)) and "
    "m = max(max(x, last axis), 0) (row_max, I-ViT) or m = max(x, 0) per element (row_max=False: "
    "one exponent is always e^0, so a wide row cannot push both below 2^-n): e1 = shift_exp(x - m), e2 = shift_exp(-m); factor = "
    "floor((2^D-1) / (e1 + e2)); sigma = (e1 * factor) >> (D - sigma_bits); y = x * sigma, "
    "D = dividend_bits (31 in I-ViT). "
    "sigma_bits = 7 is I-ViT's 8-bit sigmoid. Requires 2 * |x0| * 2^n <= 2^31-1 (checked).",
    _shiftgelu_infer, _shiftgelu_ref, 1,
    scale=Attr("float"), n=Attr("int", 23), sigma_bits=Attr("int", 7), dividend_bits=Attr("int", 31),
    row_max=Attr("bool", True))


# -- ShiftTanh --------------------------------------------------------------------------------
def _shifttanh_infer(ins: list[TensorType], a: dict[str, Any]) -> list[TensorType]:
    x = ins[0]
    _need(x, (DType.I8, DType.I16), "shifttanh input")
    _need(TensorType((), a["dtype"]), (DType.I8, DType.I16), "shifttanh output")
    if a["scale"] <= 0:
        raise TypeRuleError("shifttanh scale must be positive")
    _check_n(a["n"], exp_unit(2.0 * float(np.float32(a["scale"]))), 2, "shifttanh")
    _check_dividend(a, _OUT_BITS[a["dtype"]], "shifttanh")
    return [TensorType(x.shape, a["dtype"])]


def shifttanh_values(x: np.ndarray, scale: float, n: int, out: DType,
                     dividend_bits: int = 31) -> np.ndarray:
    x = np.asarray(x, np.int64)
    x0 = exp_unit(2.0 * float(np.float32(scale)))              # e^(-2|x|): scale doubled
    e = shift_exp(-np.abs(x), x0, n)
    e0 = np.int64(-x0) << np.int64(n)                          # shift_exp(0)
    factor = np.int64(2**dividend_bits - 1) // (e0 + e)
    k = _OUT_BITS[out]
    t = ((e0 - e) * factor) >> (dividend_bits - k)
    return (np.sign(x) * np.minimum(t, INT_RANGE[out][1])).astype(out.numpy)


def _shifttanh_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    return [shifttanh_values(ins[0], a["scale"], a["n"], a["dtype"], a["dividend_bits"])]


shifttanh = define(
    "q.shifttanh",
    "Integer tanh through the Shiftmax exponent: tanh|x| = (1 - e^-2|x|) / (1 + e^-2|x|). Input "
    "int8/int16 (zero point 0) at `scale`; x0 = floor(-1 / (2 * scale)); e = shift_exp(-|x|), "
    "e0 = |x0| << n; factor = floor((2^D-1) / (e0 + e)); t = ((e0 - e) * factor) >> (D - k); "
    "y = sign(x) * min(t, qmax), k = 7 (int8) or 15 (int16), output scale 2^-k.",
    _shifttanh_infer, _shifttanh_ref, 1,
    scale=Attr("float"), n=Attr("int", 10), dtype=Attr("dtype", DType.I16), dividend_bits=Attr("int", 31))


# -- I-LayerNorm ------------------------------------------------------------------------------
def _layernorm_infer(ins: list[TensorType], a: dict[str, Any]) -> list[TensorType]:
    x, mult, bias = ins
    _need(x, (DType.I8, DType.U8, DType.I16), "layernorm input")
    _need(mult, (DType.I32,), "layernorm multiplier")
    _need(bias, (DType.I64,), "layernorm bias")
    c = x.shape[-1] if x.rank else 0
    if x.rank < 1 or mult.shape != (c,) or bias.shape != (c,):
        raise TypeRuleError(f"layernorm multiplier/bias must have shape ({c},)")
    if not 0 <= a["shift"] <= 62:
        raise TypeRuleError("layernorm shift must be in [0, 62]")
    _need(TensorType((), a["dtype"]), (DType.I8, DType.U8, DType.I16, DType.I32), "layernorm output")
    _check_clamp(a, a["dtype"])
    return [TensorType(x.shape, a["dtype"])]


def isqrt_newton(v: np.ndarray) -> np.ndarray:
    """k_0 = 2^16, k_{t+1} = floor((k_t + floor(v / k_t)) / 2), exactly 10 steps (I-ViT); k >= 64."""
    k = np.full(np.shape(v), NEWTON_START, np.int64)
    for _ in range(NEWTON_STEPS):
        k = (k + v // k) >> 1
    return k


def layernorm_values(x: np.ndarray, mult: np.ndarray, bias: np.ndarray, shift: int, zp: int,
                     qmin: int, qmax: int) -> np.ndarray:
    x = np.asarray(x, np.int64)
    c = x.shape[-1]
    mu = (2 * x.sum(axis=-1, keepdims=True) + c) // (2 * c)      # round_half_up(mean)
    y = x - mu
    var = (y * y).sum(axis=-1, keepdims=True)                    # sum, not mean
    std = isqrt_newton(var)                                      # ~ sqrt(C) * sigma
    factor = np.int64(INT31) // std
    yn = (y * factor) >> 1                                       # ~ y / std * 2^30
    rnd = np.int64(1 << (shift - 1)) if shift > 0 else np.int64(0)
    out = ((yn * mult.astype(np.int64) + bias.astype(np.int64) + rnd) >> np.int64(shift)) + zp
    return np.clip(out, qmin, qmax)


def _layernorm_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    y = layernorm_values(ins[0], ins[1], ins[2], a["shift"], a["zero_point"], a["qmin"], a["qmax"])
    return [y.astype(a["dtype"].numpy)]


layernorm = define(
    "q.layernorm",
    "Integer LayerNorm over the last axis (I-ViT I-LayerNorm), inputs x (int8/uint8/int16), "
    "mult (int32, per channel), bias (int64, per channel). mu = round_half_up(mean(x)) = "
    "floor((2 sum + C) / 2C); y = x - mu (a zero point cancels); var = sum(y^2); std = 10 Newton "
    "steps k = (k + var // k) >> 1 from 2^16; factor = (2^31-1) // std; yn = (y * factor) >> 1 "
    "(~ normalized * 2^30 / sqrt(C)); out = clamp(((yn * mult + bias + 2^(shift-1)) >> shift) + "
    "zero_point, qmin, qmax): gamma folded into the signed per-channel multiplier "
    "(gamma * sqrt(C) / (2^30 * s_out) * 2^shift), beta into bias (beta / s_out * 2^shift).",
    _layernorm_infer, _layernorm_ref, 3,
    shift=Attr("int"), zero_point=Attr("int", 0), qmin=Attr("int"), qmax=Attr("int"),
    dtype=Attr("dtype"))
