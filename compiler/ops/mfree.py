"""Multiplication-free attention (dialect `mfree`): ShiftAddViT's binary-code linear attention (You et al.,
NeurIPS 2023; ALGORITHMS.md §3.3), post-training. The numpy reference below IS the semantics; the TVM
kernels (compiler/backends/tvm_kernels/binary_attention.py, cuda_binary_attention.py) and the MLIR lowering
(compiler/backends/mlir_lower/binary_attention.py) match it bit for bit.

`mfree.binary_attention(Q, K, V)`, Q (..., Lq, D), K (..., Lk, D), V (..., Lk, Dv), float32, the same
leading (batch, head) dims; out (..., Lq, Dv) float32. Per leading index:

    b_q[p, e] = [Q[p, e] > 0],  b_k[m, e] = [K[m, e] > 0]         the binary codes (0 / 1)

i.e. SimHash with the identity projection: one sign bit per head dimension, no random projection
(the codes are invariant to any positive scaling of Q or K, so softmax's 1/sqrt(D) does not matter).
The similarity of query p and key m is sim(p, m) = sum_e b_q[p, e] b_k[m, e] (the dimensions where both
are positive), and attention is linear, ordered Q (K^T V):

    s     = amax / 127 (float32 division) if amax = max|V| > 0, else 1        one per-tensor scale
    v8    = clip(floor(fl(V / s + 0.5)), -127, 127)  (int)                 V in int8, float32 arithmetic
    KV[e, n] = sum_m b_k[m, e] * v8[m, n]     KS[e] = sum_m b_k[m, e]       masked adds, int32
    num[p, n] = sum_e b_q[p, e] * KV[e, n]    den[p] = sum_e b_q[p, e] * KS[e]
    r[p]  = s / float32(max(den[p], 1))                                     one division per row
    out[p, n] = float32(num[p, n]) * r[p]

so out[p] = sum_m sim(p, m) V[m] / sum_m sim(p, m), with V in int8. Every product with a code is a masked
add (select + add), the sums are integers (exact: the type rule bounds 127 * Lk * D below 2^31), so their
order is free; the float steps (the scale, the quantization, the division and the final multiply) are
single IEEE float32 operations, so every backend gets the same bits. A query whose code shares no set bit
with any key's (den = 0) has num = 0 too: its output is 0 (the max(den, 1) is the smoothing; no other
constant is added). Q, K, V are assumed finite (a NaN or inf in V makes s non-finite: unspecified).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from compiler.ops.registry import TypeRuleError, define
from compiler.types import DType, TensorType

V_LEVELS = 127            # V is quantized to [-127, 127]
I32_MAX = 2 ** 31 - 1


def _infer(ins: list[TensorType], a: dict[str, Any]) -> list[TensorType]:
    q, k, v = ins
    for name, t in zip("QKV", ins):
        if t.dtype is not DType.F32:
            raise TypeRuleError(f"mfree.binary_attention: {name} must be float32, got {t.dtype.value}")
        if t.rank < 2:
            raise TypeRuleError(f"mfree.binary_attention: {name} must have rank >= 2, got {t.shape}")
    if not q.shape[:-2] == k.shape[:-2] == v.shape[:-2] or q.rank != k.rank or q.rank != v.rank:
        raise TypeRuleError(f"mfree.binary_attention: Q {q.shape}, K {k.shape}, V {v.shape} need the same "
                            "leading dims")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise TypeRuleError(f"mfree.binary_attention: Q {q.shape} (..., Lq, D), K {k.shape} (..., Lk, D), "
                            f"V {v.shape} (..., Lk, Dv) do not agree")
    lk, d = k.shape[-2], k.shape[-1]
    if V_LEVELS * lk * d > I32_MAX:
        raise TypeRuleError(f"mfree.binary_attention: 127 * Lk * D = {V_LEVELS * lk * d} overflows the int32 "
                            "accumulator")
    return [TensorType(q.shape[:-1] + (v.shape[-1],), DType.F32)]


def v_scale(v: np.ndarray) -> np.float32:
    """The per-tensor scale s of V: max|V| / 127 in float32, 1 for an all-zero V."""
    amax = np.float32(np.max(np.abs(v))) if v.size else np.float32(0)
    return np.float32(amax / np.float32(V_LEVELS)) if amax > 0 else np.float32(1)


def quantize_v(v: np.ndarray, s: np.float32) -> np.ndarray:
    """clip(floor(fl(V / s + 0.5)), -127, 127) as int64."""
    q = np.floor(np.asarray(v, np.float32) / s + np.float32(0.5))
    return np.clip(q, -V_LEVELS, V_LEVELS).astype(np.int64)


def binary_attention_values(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The module docstring's computation in numpy (int64 sums: exact)."""
    s = v_scale(v)
    v8 = quantize_v(v, s)
    bq = (np.asarray(q) > 0).astype(np.int64)
    bk = (np.asarray(k) > 0).astype(np.int64)
    kv = np.swapaxes(bk, -1, -2) @ v8                       # (..., D, Dv)
    ks = bk.sum(axis=-2)[..., :, None]                      # (..., D, 1)
    num, den = bq @ kv, bq @ ks                             # (..., Lq, Dv), (..., Lq, 1)
    r = s / np.maximum(den, 1).astype(np.float32)
    return (num.astype(np.float32) * r).astype(np.float32)


binary_attention = define(
    "mfree.binary_attention",
    "ShiftAddViT binary-code linear attention: codes [Q > 0], [K > 0] (SimHash, identity projection), "
    "out = (b_q (b_k^T v8)) / max(b_q (b_k^T 1), 1) * s with V in int8 (per-tensor scale s) and int32 "
    "masked-add sums (compiler/ops/mfree.py states every step)",
    _infer, lambda ins, a: [binary_attention_values(*ins)], 3)
