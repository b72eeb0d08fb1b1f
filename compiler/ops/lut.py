"""q.lut_matmul: the integer linear layer with 1-4 bit weights computed by table lookup (T-MAC), its group
scales applied after each group's sum (MixPE). The reference below IS the LUT algorithm, on integers, so a
backend can match it bit for bit:

    a' = a - a_zero_point                               (rows r; K padded with zeros to Kp, a multiple of G)
    weights: b-bit unsigned codes c[k, n] = sum_i 2^i c_i[k, n], stored as b one-bit planes c_i
             (input `planes`: (b, N, Kp/8) uint8, bit t of byte q = plane bit of k = 8q + t)
    tables:  for every row r and every group of g = 4 activations j (k = 4j .. 4j+3), the 16 partial sums
             T[r, j, p] = sum_t bit_t(p) * a'[r, 4j + t]        (p: a 4-bit pattern of weight bits)
    lookups: P[r, G-group, n] = sum_i 2^i sum_{j in the group} T[r, j, pattern_i(n, j)]
             (pattern_i(n, j) = sum_t c_i[4j + t, n] << t; one lookup per bit-plane: bit-serial)
    result:  y[r, n] = sum_g u[g, n] * (P[r, g, n] - z[g, n] * S[r, g]) + bias[n],  S[r, g] = sum_{k in g} a'[r, k]
             (u: integer group scales `scales` (Kp/G, N) int16; z: group zero points `zeros` uint8; bias:
             an optional int32 (N,) input), int32.

So the layer's weight is u[g, n] * (c[k, n] - z[g, n]) in units of a per-column scale that the dyadic requant
after the op carries (passes/lut.py). No multiply touches a weight: the codes only index tables.

table="int16" keeps every table entry exact (|T| <= 4 * 255 fits int16): y is then exactly the integer
matmul of a' with those weights. table="int8" quantizes the tables as T-MAC does, one scale per row and
group of G activations (T-MAC's kernels tie act_group_size to the weight group), except that the scale is
a power of two so that dequantizing is a shift and the op stays integer:
    e[r, g] = the smallest e >= 0 with round(max_{j in g} sum_t |a'[r, 4j + t]| / 2^e) <= 127
    T8[r, j, p] = round(T[r, j, p] / 2^e), ties to even (shift_round: integer adds and shifts)
and P uses T8 and is shifted back, P << e. Every entry then lies in [-127, 127] (T-MAC: round(T / s) with s =
max sum|a| / 127, which uses the whole int8 range; the power of two wastes up to one bit of it).
The error: each entry is off by at most 2^(e-1) <= max sum|a'| / 127, so |P8 - P| <= (2^b - 1) * (G / 4) *
2^(e-1). Measured (tests/ops/test_lut.py, K = 1024, G = 64, uniform 4-bit codes with centred weights, z = 8,
the hard case): relative RMS error of the int8-table result against the exact integer matmul 1.8 % for
Gaussian int8 activations (std 40), 1.7 % for full-range int8, 1.1 % for ReLU-like uint8; the digits
models lose nothing from it (tests/ops/test_lut.py, slow). e is 0 (the int8 form exact) wherever the
four activations of every table of the group sum to at most 127 in magnitude.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from compiler.ops.quant import _need
from compiler.ops.registry import Attr, TypeRuleError, define
from compiler.types import DType, TensorType

G4 = 4                      # activations per table (T-MAC's g)
PATTERNS = 1 << G4          # entries per table
TABLE_FORMS = ("int8", "int16")
INT8_MAX = 127


# -- the packed weight ---------------------------------------------------------------------------
def padded_k(k: int, group_size: int) -> int:
    return -(-k // group_size) * group_size


def pack_planes(codes: np.ndarray, bits: int, group_size: int) -> np.ndarray:
    """(K, N) unsigned b-bit codes -> (b, N, Kp/8) uint8 bit-planes (Kp = K padded to the group size; the
    padding holds code 0): byte [i, n, q] bit t = bit i of codes[8q + t, n]."""
    c = np.asarray(codes, np.int64)
    if c.size and (c.min() < 0 or c.max() >= 1 << bits):
        raise ValueError(f"codes outside [0, {(1 << bits) - 1}]")
    k, n = c.shape
    cp = np.zeros((padded_k(k, group_size), n), np.int64)
    cp[:k] = c
    bitsarr = np.stack([(cp.T >> i) & 1 for i in range(bits)]).astype(np.uint8)      # (b, N, Kp)
    return np.packbits(bitsarr, axis=-1, bitorder="little")


def unpack_planes(planes: np.ndarray) -> np.ndarray:
    """(b, N, Kp/8) uint8 -> (b, N, Kp) one-bit planes (0/1, uint8)."""
    return np.unpackbits(np.asarray(planes, np.uint8), axis=-1, bitorder="little")


def codes_of(planes: np.ndarray, k: int) -> np.ndarray:
    """The (K, N) codes the planes hold (inverse of pack_planes)."""
    bits = unpack_planes(planes).astype(np.int64)
    return sum(bits[i] << i for i in range(bits.shape[0])).T[:k]


def dequantized_weight(planes, scales, zeros, k: int, group_size: int) -> np.ndarray:
    """The integer weight the op multiplies by, u[g, n] * (c[k, n] - z[g, n]), (K, N) int64."""
    c = codes_of(planes, padded_k(k, group_size))
    u = np.repeat(np.asarray(scales, np.int64), group_size, axis=0)
    z = np.repeat(np.asarray(zeros, np.int64), group_size, axis=0)
    return (u * (c - z))[:k]


# -- the algorithm -----------------------------------------------------------------------------------
def shift_round(x: np.ndarray, e: np.ndarray) -> np.ndarray:
    """x / 2^e rounded to the nearest integer, ties to even, in int64: (x + 2^(e-1) - 1 + (x >> e & 1)) >> e
    (x itself for e = 0). Ties to even, not DESIGN.md's ties-up requant rule: a table entry is a tie
    whenever its low e bits are 10..0 (half the entries for e = 1), and rounding all of them up biases every
    lookup the same way, an error that grows with K instead of averaging out."""
    e = np.asarray(e, np.int64)
    x = np.asarray(x, np.int64)
    half = np.where(e > 0, np.left_shift(np.int64(1), np.maximum(e - 1, 0)) - 1 + ((x >> e) & 1), 0)
    return (x + half) >> e


def table_shifts(xg: np.ndarray, group_size: int) -> np.ndarray:
    """xg (R, J, 4) activations (zero point removed) -> (R, Kp/G) power-of-two table scales e: the smallest e
    with round(M / 2^e) <= 127, M the largest |entry| of the group's tables (the larger of the sums of the
    positive and of the negative activations of a table)."""
    r, j, _ = xg.shape
    big = np.maximum(np.maximum(xg, 0).sum(-1), np.maximum(-xg, 0).sum(-1))      # max_p |T[r, j, p]|
    mx = big.reshape(r, j * G4 // group_size, group_size // G4).max(-1)
    return sum((shift_round(mx, s) > INT8_MAX).astype(np.int64) for s in range(16))


def tables(x: np.ndarray) -> np.ndarray:
    """x (R, Kp) -> (R, Kp/4, 16) partial sums: entry p of table j is sum_t bit_t(p) * x[4j + t]."""
    sel = (np.arange(PATTERNS)[:, None] >> np.arange(G4)) & 1          # (16, 4)
    return x.reshape(x.shape[0], -1, G4) @ sel.T


def patterns(planes: np.ndarray) -> np.ndarray:
    """(b, N, Kp/8) planes -> (b, N, Kp/4) table indices: the 4 weight bits of each group of 4."""
    bits = unpack_planes(planes).astype(np.int64)
    b, n, kp = bits.shape
    return (bits.reshape(b, n, kp // G4, G4) << np.arange(G4)).sum(-1)


def lut_matmul_values(a: np.ndarray, planes: np.ndarray, scales: np.ndarray, zeros: np.ndarray,
                      bias: np.ndarray | None = None, *, bits: int, group_size: int, table: str = "int8",
                      a_zero_point: int = 0) -> np.ndarray:
    """The op's result (int32, (..., N)), computed as the LUT kernel does: tables, lookups, shifts and adds,
    the group scales after each group's sum."""
    lead, k = a.shape[:-1], a.shape[-1]
    kp = planes.shape[-1] * 8
    x = np.zeros((int(np.prod(lead, dtype=np.int64)), kp), np.int64)
    x[:, :k] = np.asarray(a, np.int64).reshape(-1, k) - a_zero_point
    t = tables(x)                                                       # (R, J, 16)
    r, j = t.shape[:2]
    ng = kp // group_size
    e = np.zeros((r, ng), np.int64)
    if table == "int8":
        e = table_shifts(x.reshape(r, j, G4), group_size)
        t = shift_round(t, np.repeat(e, group_size // G4, axis=1)[..., None])
    idx = patterns(planes)                                              # (b, N, J)
    jj = np.arange(j)[:, None]
    p = np.zeros((r, ng, idx.shape[1]), np.int64)
    for i in range(bits):
        looked = t[:, jj, idx[i].T]                                     # (R, J, N)
        p += looked.reshape(r, ng, group_size // G4, -1).sum(2) << i
    p <<= e[..., None]
    s = x.reshape(r, ng, group_size).sum(-1)                            # (R, ng)
    u, z = np.asarray(scales, np.int64), np.asarray(zeros, np.int64)
    y = (u[None] * (p - z[None] * s[..., None])).sum(1)
    if bias is not None:
        y = y + np.asarray(bias, np.int64).reshape(1, -1)
    return y.astype(np.int32).reshape(*lead, -1)


# -- the op ------------------------------------------------------------------------------------------
def _infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    a, planes, scales, zeros = ins[:4]
    _need(a, (DType.I8, DType.U8), "q.lut_matmul input")
    _need(planes, (DType.U8,), "q.lut_matmul planes")
    _need(scales, (DType.I16,), "q.lut_matmul scales")
    _need(zeros, (DType.U8,), "q.lut_matmul zeros")
    b, g = attrs["bits"], attrs["group_size"]
    if not 1 <= b <= 4 or g <= 0 or g % 16 or attrs["table"] not in TABLE_FORMS:
        raise TypeRuleError(f"q.lut_matmul takes 1-4 bits, a group size that is a multiple of 16 and table "
                            f"{'/'.join(TABLE_FORMS)}; got bits={b}, group_size={g}, table={attrs['table']!r}")
    if a.rank < 1 or planes.rank != 3 or planes.shape[0] != b:
        raise TypeRuleError(f"q.lut_matmul planes must be ({b}, N, Kp/8), got {planes.shape}")
    kp = padded_k(a.shape[-1], g)
    n = planes.shape[1]
    if planes.shape[2] * 8 != kp or scales.shape != (kp // g, n) or zeros.shape != (kp // g, n):
        raise TypeRuleError(f"q.lut_matmul with K={a.shape[-1]}, group {g}, N={n} needs planes "
                            f"({b}, {n}, {kp // 8}), scales and zeros ({kp // g}, {n}); got {planes.shape}, "
                            f"{scales.shape}, {zeros.shape}")
    if len(ins) > 4 and (ins[4].dtype is not DType.I32 or ins[4].shape != (n,)):
        raise TypeRuleError(f"q.lut_matmul bias must be int32 ({n},), got {ins[4]}")
    return [TensorType((*a.shape[:-1], n), DType.I32)]


def _ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    return [lut_matmul_values(*ins, bits=a["bits"], group_size=a["group_size"], table=a["table"],
                              a_zero_point=a["a_zero_point"])]


lut_matmul = define(
    "q.lut_matmul", "Low-bit linear layer by table lookup (T-MAC): per row and group of 4 activations a table "
    "of the 16 partial sums, one lookup per weight bit-plane, planes combined by shifts; int32 sum_g u[g, n] * "
    "(P - z[g, n] * S) [+ bias] with integer group scales u and zero points z after each group's sum (MixPE); "
    "table int8 (power-of-two scale per row and group) or int16 (exact).",
    _infer, _ref, (4, 5), bits=Attr("int"), group_size=Attr("int"), table=Attr("str", "int8"),
    a_zero_point=Attr("int", 0))
