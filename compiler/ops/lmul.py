"""L-Mul (Luo & Sun 2024, "Addition is All You Need"): a float multiply approximated by ONE integer add
of the operands' bit patterns (dialect `lmul`): `lmul.mul` elementwise and `lmul.matmul`, a matmul whose
multiplies are L-Mul and whose float32 sum runs in a fixed order. The numpy references below, on the
bit patterns, ARE the semantics (ALGORITHMS.md §3.4); backends match `lmul.mul` bit for bit.

With (exponent || m-bit mantissa) of each operand read as an unsigned integer F:

    R = F_x + F_y - (127 << m) + 2^(m - l(m)),   sign = s_x xor s_y,   l(m) = m (m <= 3), 3 (m = 4), 4 (m > 4)

i.e. (1 + x_m + y_m + 2^-l(m)) * 2^(x_e + y_e): the exact product's x_m * y_m term replaced by the
constant 2^-l(m). A carry out of the mantissa field increments the exponent by itself, so in that case
the value is 2^(x_e + y_e + 1) * (x_m + y_m + 2^-l(m)) (the integer add, not the formula's renormalized
value: 1.5 * 1.5 with m = 3 gives 2.25, the formula 2.125). Attributes:

- `mantissa_bits` m: the operands' mantissas are TRUNCATED to their top m bits (toward zero) before the
  add; the result then has exactly m mantissa bits, so nothing is rounded afterwards. The paper's
  forms are m = 3 and m = 4 (fp8-like precision); m = 23 (f32) / 7 (bf16) is the whole mantissa.
- `dtype` "f32" | "bf16": the bit format modelled (8-bit exponent, bias 127, 23 / 7 mantissa bits).
  Tensors stay float32 in the IR: a bf16 operand is the upper 16 bits of the float32 (truncation), so
  bf16 with m bits equals f32 with m bits; the attribute records the format and bounds m to 1..7.

Special values (the integer add alone would wrap; these are stated, and every backend matches them):
- NaN in either operand, or inf times zero (or a subnormal): NaN (the quiet NaN 0x7FC00000, sign cleared);
- inf times a nonzero finite value: inf with the xor sign;
- zero or a subnormal operand (exponent field 0; flushed, as fp8/bf16 multipliers do): signed zero;
- underflow (result exponent field <= 0): signed zero, no subnormal results;
- overflow (result exponent field >= 255): inf with the xor sign.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from compiler.ops.elementwise import _arith_infer
from compiler.ops.linalg import _matmul_infer
from compiler.ops.registry import Attr, TypeRuleError, define
from compiler.types import DType, TensorType

FORMATS = {"f32": 23, "bf16": 7}        # mantissa bits of each bit format (both: 8-bit exponent)
BIAS = 127
EXP_MAX = 255
SIGN = 0x80000000
QNAN = 0x7FC00000
INF = 0x7F800000


def offset_exponent(m: int) -> int:
    """The paper's l(m): the offset term is 2^-l(m)."""
    return m if m <= 3 else 3 if m == 4 else 4


def _check(ins: list[TensorType], a: dict[str, Any], what: str) -> None:
    if a["dtype"] not in FORMATS:
        raise TypeRuleError(f"{what}: dtype {a['dtype']!r}; expected one of {', '.join(FORMATS)}")
    if not 1 <= a["mantissa_bits"] <= FORMATS[a["dtype"]]:
        raise TypeRuleError(f"{what}: mantissa_bits must be in 1..{FORMATS[a['dtype']]} for {a['dtype']}, "
                            f"got {a['mantissa_bits']}")
    for t in ins:
        if t.dtype is not DType.F32:
            raise TypeRuleError(f"{what} takes float32 tensors (the bit format is the dtype attribute), "
                                f"got {t.dtype.value}")


def lmul_values(x: np.ndarray, y: np.ndarray, mantissa_bits: int) -> np.ndarray:
    """L-Mul of float32 arrays (broadcasting) on their bit patterns, in int64 (no wrap); float32 out."""
    m = mantissa_bits
    drop = 23 - m
    bx = np.asarray(x, np.float32).view(np.uint32).astype(np.int64)
    by = np.asarray(y, np.float32).view(np.uint32).astype(np.int64)
    bx, by = np.broadcast_arrays(bx, by)
    sign = (bx ^ by) & SIGN
    fx, fy = (bx & 0x7FFFFFFF) >> drop, (by & 0x7FFFFFFF) >> drop       # exponent || truncated mantissa
    ex, ey = fx >> m, fy >> m
    r = fx + fy - (BIAS << m) + (1 << (m - offset_exponent(m)))         # the one integer add
    er = r >> m                                                          # result exponent field
    mag = np.where(er >= EXP_MAX, INF, np.where(er <= 0, 0, r << drop))
    zero = (ex == 0) | (ey == 0)
    mag = np.where(zero, 0, mag)
    nan_x = (bx & 0x7FFFFFFF) > INF
    nan_y = (by & 0x7FFFFFFF) > INF
    inf_x, inf_y = ex == EXP_MAX, ey == EXP_MAX                          # inf, or NaN (caught below)
    special = inf_x | inf_y
    nan = nan_x | nan_y | (inf_x & (ey == 0)) | (inf_y & (ex == 0))
    out = np.where(special, sign | INF, sign | mag)
    out = np.where(nan, QNAN, out)
    return out.astype(np.uint32).view(np.float32)


def _mul_infer(ins: list[TensorType], a: dict[str, Any]) -> list[TensorType]:
    _check(ins, a, "lmul.mul")
    return _arith_infer(ins, a)


def _mul_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    return [lmul_values(ins[0], ins[1], a["mantissa_bits"])]


mul = define("lmul.mul", "L-Mul x * y on the bit patterns: sign xor, one integer add of (exponent || m-bit "
             "mantissa) fields plus the offset 2^-l(m); broadcasting (compiler/ops/lmul.py states the "
             "special values)", _mul_infer, _mul_ref, 2,
             dtype=Attr("str", "f32"), mantissa_bits=Attr("int", 23))


# -- matmul ---------------------------------------------------------------------------------------


def _matmul_check(ins: list[TensorType], a: dict[str, Any]) -> list[TensorType]:
    _check(ins, a, "lmul.matmul")
    if ins[0].rank < 2 or ins[1].rank < 2:
        raise TypeRuleError("lmul.matmul operands must have rank >= 2")
    return _matmul_infer(ins, a)


def lmul_matmul_values(x: np.ndarray, y: np.ndarray, mantissa_bits: int) -> np.ndarray:
    """sum_k lmul(x[..., i, k], y[..., k, j]) in float32, k = 0, 1, ..., K-1 in that order: acc starts at
    +0.0 and each product is added to it with one float32 (round-to-nearest-even) add."""
    shape = np.broadcast_shapes(x.shape[:-2], y.shape[:-2]) + (x.shape[-2], y.shape[-1])
    acc = np.zeros(shape, np.float32)
    for k in range(x.shape[-1]):
        acc += lmul_values(x[..., :, k:k + 1], y[..., k:k + 1, :], mantissa_bits)
    return acc


matmul = define("lmul.matmul", "numpy.matmul (rank >= 2, batch dims broadcast) whose multiplies are "
                "lmul.mul and whose float32 sum runs over k = 0..K-1 in order", _matmul_check,
                lambda ins, a: [lmul_matmul_values(ins[0], ins[1], a["mantissa_bits"])], 2,
                dtype=Attr("str", "f32"), mantissa_bits=Attr("int", 23))
