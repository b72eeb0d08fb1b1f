"""q.attention: integer-only attention in one pass over key blocks, Shiftmax inside the running
recurrence (the integer form of passes.einsum.ONE_PASS).

The unfused integer attention (passes/ivit.py) is
    s = requant(q @ k^T) (int16)  [s = where(keep, s, fill)]  p = requant(shiftmax(s))  o = requant(p @ v)
and rounds p to int8 before P V. This op keeps, per query row, the running max M, the running sum L
of shift_exp(s - M) and the running numerator A = sum shift_exp(s - M) v (int64), walking the keys in
blocks of `block`:

    m = max(M, max of the block's s)
    c = shift_exp(M - m, x0, n)                       the running state's correction, a fraction of U
    L = (L * c) // U,  A = (A * c) // U              U = |x0| 2^n = shift_exp(0)
    e = shift_exp(s - m, x0, n);  L += sum e;  A += e @ v;  M = m

and ends with t = (A << 16) // L (the softmax-weighted mean of v with 16 fraction bits: one integer
division per output element) and o = requant(t). With one block it is Shiftmax without P's rounding;
with several, each correction is I-ViT's exponent of a max difference, whose 2^f ~ 1 + f/2 step is
not multiplicative: shift_exp(a) shift_exp(b) / U != shift_exp(a + b). So the result depends on the
block, which is an attribute. Its distance from the unfused integer attention is stated and tested in
tests/ops/test_qattention.py.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from compiler.ops.ivit import exp_unit, shift_exp
from compiler.ops.quant import INT_RANGE, _check_clamp, _need, requant_values
from compiler.ops.registry import Attr, TypeRuleError, define
from compiler.types import DType, TensorType

FRACTION_BITS = 16           # t = (A << 16) // L
_STATE_BITS = 63             # A * c must stay below 2^63: |A| <= L * 128 <= 2^38, c <= U


def unit(scale: float, n: int) -> int:
    """U = shift_exp(0): the integer that stands for e^0 = 1."""
    return -exp_unit(scale) << n


def _infer(ins: list[TensorType], a: dict[str, Any]) -> list[TensorType]:
    q, k, v = ins[:3]
    for x, what in ((q, "q"), (k, "k"), (v, "v")):
        _need(x, (DType.I8,), f"attention {what}")
    if q.rank < 2 or k.rank != q.rank or v.rank != q.rank:
        raise TypeRuleError(f"attention needs q, k, v of one rank >= 2, got {q.shape}, {k.shape}, {v.shape}")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-2] != v.shape[:-2] or q.shape[-1] != k.shape[-1] or \
            k.shape[-2] != v.shape[-2]:
        raise TypeRuleError(f"attention shapes q {q.shape}, k {k.shape}, v {v.shape} do not agree")
    lq, lk = q.shape[-2], k.shape[-2]
    if len(ins) == 4:
        keep = ins[3]
        if keep.dtype is not DType.BOOL or keep.rank > q.rank or any(
                m not in (1, s) for m, s in zip(keep.shape[::-1], (q.shape[:-2] + (lq, lk))[::-1])):
            raise TypeRuleError(f"attention keep mask {keep} does not broadcast to the scores "
                                f"{q.shape[:-2] + (lq, lk)}")
    if a["scale"] <= 0 or a["block"] < 1:
        raise TypeRuleError("attention needs a positive scale and block")
    u = unit(a["scale"], a["n"])
    if lk * u > 2**31 - 1 or (2**38) * u >= 2**_STATE_BITS:
        raise TypeRuleError(f"attention: {lk} keys * U ({u}) must stay within 2^31 - 1 and U below 2^25; "
                            f"lower n or use a coarser score scale")
    lo, hi = INT_RANGE[DType.I16]
    if not lo <= a["qk_qmin"] <= a["fill"] <= a["qk_qmax"] <= hi:
        raise TypeRuleError("attention scores must be int16: qk_qmin <= fill <= qk_qmax")
    _check_clamp(a, a["dtype"])
    return [TensorType(q.shape[:-1] + (v.shape[-1],), a["dtype"])]


def attention_values(q, k, v, keep, a: dict[str, Any]) -> np.ndarray:
    """The recurrence of the module docstring, in int64, the blocks in order."""
    s = np.asarray(q, np.int64) @ np.swapaxes(np.asarray(k, np.int64), -1, -2)
    s = requant_values(s, (a["qk_multiplier"],), (a["qk_shift"],), 0, 0, a["qk_qmin"], a["qk_qmax"])
    if keep is not None:
        s = np.where(keep, s, np.int64(a["fill"]))
    v = np.asarray(v, np.int64)
    x0, n, block = exp_unit(a["scale"]), a["n"], a["block"]
    u = np.int64(unit(a["scale"], n))
    big, total, num = None, np.int64(0), np.int64(0)
    for j0 in range(0, s.shape[-1], block):
        sb = s[..., j0:j0 + block]
        m = sb.max(axis=-1)
        if big is not None:
            m = np.maximum(big, m)
            c = shift_exp(big - m, x0, n)
            total, num = (total * c) // u, (num * c[..., None]) // u
        e = shift_exp(sb - m[..., None], x0, n)
        total, num, big = total + e.sum(axis=-1), num + e @ v[..., j0:j0 + block, :], m
    t = (num << FRACTION_BITS) // total[..., None]
    y = requant_values(t, (a["multiplier"],), (a["shift"],), 0, a["zero_point"], a["qmin"], a["qmax"])
    return y.astype(a["dtype"].numpy)


def _ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    return [attention_values(ins[0], ins[1], ins[2], ins[3] if len(ins) == 4 else None, a)]


attention = define(
    "q.attention",
    "Integer-only attention in one pass over key blocks of `block` keys: s = requant(q @ k^T, "
    "qk_multiplier, qk_shift) clamped to [qk_qmin, qk_qmax] (int16), s = where(keep, s, fill) with the "
    "optional 4th input; per row the running max M, sum L = sum shift_exp(s - M) and numerator A = "
    "sum shift_exp(s - M) v in int64, rescaled by c = shift_exp(M_old - M_new) as (L c) // U, (A c) // U "
    "(U = |floor(-1/scale)| 2^n) when the max grows; out = requant((A << 16) // L, multiplier, shift) + "
    "zero_point clamped to [qmin, qmax]. q, k (not transposed), v int8 with zero point 0. The result "
    "depends on `block` (compiler/ops/qattention.py).",
    _infer, _ref, (3, 4),
    qk_multiplier=Attr("int"), qk_shift=Attr("int"), qk_qmin=Attr("int"), qk_qmax=Attr("int"),
    fill=Attr("int"), scale=Attr("float"), n=Attr("int"), block=Attr("int", 64),
    multiplier=Attr("int"), shift=Attr("int"), zero_point=Attr("int", 0), qmin=Attr("int"),
    qmax=Attr("int"), dtype=Attr("dtype", DType.I8))
