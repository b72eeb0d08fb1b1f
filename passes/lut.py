"""lut: integer linear layers with 1-4 bit weights computed by table lookup (T-MAC; compiler/ops/lut.py).

After the integer rewrite (passes/dyadic.py), every q.matmul with a constant int8 (or int4) weight quantized
per output column becomes a q.lut_matmul: its weight requantized to b-bit unsigned codes in groups of G
rows (the K axis), each group of each column with its own step and zero point (asymmetric, MixPE's group
quantization), stored as b packed bit-planes (b/8 of the int8 bytes, plus the group scales and zeros):

    s8_n * w8[k, n]  ~=  s8_n * S_n * u[g, n] * (c[k, n] - z[g, n])          (k in group g)

S_n is a per-column step in int8 units and u[g, n] an integer (1..umax), so the group scale is applied in
integers after the group's sum (the op) and S_n joins the column's dyadic requant, exactly as the shift/add
pass moves its per-channel factor (passes/shiftadd.py): the bias is re-expressed at the new accumulator
scale s_a * s8_n * S_n (and folded into the op: the int32 add after a q.matmul goes) and every consumer's requant (or dequantize) recomputed for it.

umax bounds the int32 accumulator: |y| <= umax * Kp * max|a - a_zp| * (2^b - 1) must stay below 2^31 (with
a margin for the int8 tables' rounding), so umax = min(255, that bound); a layer where it is below 1 stays
int8. Per group the step is chosen among a few clipped ranges (the min/max range times 1, 0.95 .. 0.7), the
one with the least squared weight error; its u is the step / S_n rounded up (the grid never gets finer than
the clipped range asks for). Layers get `table` "int8" (T-MAC's quantized tables) or "int16" (exact).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from compiler.ir import Graph, Node
from compiler.ops import lut as L, quant as q
from compiler.ops.quant import INT_RANGE
from compiler.types import DType
from passes.base import register_pass
from passes.quantize import QuantRequest, spec_of, with_quant
from passes.shiftadd import _eligible, _Layer, _rescaled_consumer, _scaled

UMAX = 255
MARGIN = 0.96                       # headroom of the int32 bound for the int8 tables' rounding
CLIPS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)
I32_MIN, I32_MAX = INT_RANGE[DType.I32]


@dataclass(frozen=True)
class LutRequest(QuantRequest):
    """A quantizing compile that also asked for LUT weights: `lut` bits (0: none), groups of `lut_group`
    rows, tables `lut_table` ("int8" / "int16")."""

    lut: int = 0
    lut_group: int = 128
    lut_table: str = "int8"


# -- the weight requantization ------------------------------------------------------------------------------------
def group_size_for(k: int, group_size: int) -> int:
    """The group size used for K rows: `group_size`, or K rounded up to 16 when that is smaller."""
    return min(group_size, -(-k // 16) * 16)


def umax_for(kp: int, a_dtype: DType, a_zp: int, bits: int) -> int:
    """The largest integer group scale that keeps the int32 accumulator from overflowing."""
    lo, hi = INT_RANGE[a_dtype]
    amax = max(abs(lo - a_zp), abs(hi - a_zp))
    return int(min(UMAX, MARGIN * I32_MAX // (kp * amax * ((1 << bits) - 1))))


def quantize_groups(w: np.ndarray, bits: int, group_size: int, umax: int):
    """(K, N) weights -> (codes (K, N), u (Kp/G, N) int, z (Kp/G, N), S (N,)) with
    w ~= S * u * (codes - z) per group of `group_size` rows."""
    k, n = w.shape
    kp = L.padded_k(k, group_size)
    levels = (1 << bits) - 1
    wp = np.full((kp, n), np.nan)
    wp[:k] = w
    wg = wp.reshape(kp // group_size, group_size, n)
    lo = np.minimum(np.nanmin(wg, axis=1), 0.0)                          # (ng, N); 0 stays on the grid
    hi = np.maximum(np.nanmax(wg, axis=1), 0.0)
    s = np.maximum((hi - lo).max(0), 1e-12) / levels / umax             # (N,)
    best_err, best_c = np.full(lo.shape, np.inf), np.zeros_like(wg)
    best_u, best_z = np.ones_like(lo), np.zeros_like(lo)
    for clip in CLIPS:
        u = np.clip(np.ceil((hi - lo) * clip / levels / s - 1e-9), 1, umax)
        step = s * u
        z = np.clip(np.rint(-lo * clip / step), 0, levels)
        c = np.clip(np.rint(wg / step[:, None]) + z[:, None], 0, levels)
        err = np.nansum((step[:, None] * (c - z[:, None]) - wg) ** 2, axis=1)
        take = err < best_err
        best_err = np.where(take, err, best_err)
        best_c = np.where(take[:, None], c, best_c)
        best_u, best_z = np.where(take, u, best_u), np.where(take, z, best_z)
    c, u, z = best_c, best_u, best_z
    codes = np.nan_to_num(c.reshape(kp, n)[:k]).astype(np.int64)
    return codes, u.astype(np.int64), z.astype(np.int64), s


def packed_bytes(k: int, n: int, bits: int, group_size: int = 128) -> int:
    """Bytes a (K, N) layer's LUT weight stores: the b bit-planes, the int16 group scales, the uint8 zeros."""
    gs = group_size_for(k, group_size)
    kp = L.padded_k(k, gs)
    return bits * n * kp // 8 + (kp // gs) * n * 3


def lut_fits(k: int, bits: int, group_size: int = 128) -> bool:
    """Whether a layer of K rows can take `bits`-bit LUT weights for any 8-bit activations (umax >= 1)."""
    return umax_for(L.padded_k(k, group_size_for(k, group_size)), DType.U8, 0, bits) >= 1


def lut_weight(w8: np.ndarray, bits: int, group_size: int = 128, a_dtype: DType = DType.U8,
               a_zp: int = 0) -> np.ndarray:
    """The (K, N) int8 weight `w8` as the rewrite makes it, in int8 units: S_n * u[g, n] * (c[k, n] - z[g, n])
    (umax for activations `a_dtype` with zero point `a_zp`; the default, uint8 with 0, is the widest range)."""
    k = w8.shape[0]
    gs = group_size_for(k, group_size)
    umax = umax_for(L.padded_k(k, gs), a_dtype, a_zp, bits)
    if umax < 1:
        raise ValueError(f"K = {k} is too long for {bits}-bit LUT weights (the int32 accumulator could "
                         "overflow)")
    codes, u, z, s = quantize_groups(np.asarray(w8, np.float64), bits, gs, umax)
    return s * L.dequantized_weight(L.pack_planes(codes, bits, gs), u, z, k, gs)


# -- the rewrite -----------------------------------------------------------------------------------------------
def _lut_eligible(n: Node) -> bool:
    return n.op is q.matmul and _eligible(n) or (
        n.op is q.matmul and n.inputs[1].is_const and n.inputs[1].type.dtype is DType.I4 and
        n.inputs[1].type.rank == 2 and n.attrs["b_zero_point"] == 0 and spec_of(n.inputs[1]) is not None and
        not any(spec_of(n.inputs[1]).zero_point))


def lut_rewrite(g: Graph, bits: int, group_size: int = 128, table: str = "int8",
                report: list | None = None, select: Callable[[Node], bool] | None = None) -> Graph:
    """Every eligible q.matmul of the integer graph `g` (those `select` accepts, when given) as a q.lut_matmul
    with `bits`-bit weights in groups of `group_size` rows. Per layer, `report` (when given) gets {name, bits,
    group_size, table, k, n, umax, weight_error (relative RMS against the int8 weight), bytes (planes + scales
    + zeros), int8_bytes}."""
    if not 1 <= bits <= 4 or table not in L.TABLE_FORMS:
        raise ValueError(f"LUT weights take 1-4 bits and table int8/int16; got {bits}, {table!r}")
    g = g.clone()
    uses = g.uses()
    replace: dict[int, Node | None] = {}
    for n in list(g.nodes):
        if not _lut_eligible(n) or n.inputs[0].type.dtype not in (DType.I8, DType.U8) or \
                (select is not None and not select(n)):
            continue
        lay = _Layer(g, n, uses)
        if not lay.ok:
            continue
        w = np.asarray(n.inputs[1].const, np.int64)
        gs = group_size_for(w.shape[0], group_size)
        umax = umax_for(L.padded_k(w.shape[0], gs), n.inputs[0].type.dtype, n.attrs["a_zero_point"], bits)
        if umax < 1:
            continue
        codes, u, z, s = quantize_groups(w.astype(np.float64), bits, gs, umax)
        _rewrite_layer(g, lay, codes, u, z, s, bits, gs, table, replace)
        if report is not None:
            wq = s * L.dequantized_weight(L.pack_planes(codes, bits, gs), u, z, w.shape[0], gs)
            err = float(np.sqrt(((wq - w) ** 2).sum() / max((w.astype(np.float64) ** 2).sum(), 1e-12)))
            nbytes = sum(v.const.nbytes for v in replace[id(n)].inputs[1:])
            report.append({"name": n.name, "bits": bits, "group_size": gs, "table": table, "k": w.shape[0],
                           "n": w.shape[1], "umax": umax, "weight_error": err, "bytes": int(nbytes),
                           "int8_bytes": int(w.size)})
    g.nodes = [m for m in (replace.get(id(n), n) for n in g.nodes) if m is not None]
    return g


def _rewrite_layer(g: Graph, lay: _Layer, codes, u, z, s, bits: int, gs: int, table: str,
                   replace: dict[int, Node | None]) -> None:
    n = lay.node
    w_old = n.inputs[1]
    base = w_old.name
    consts = [g.const(L.pack_planes(codes, bits, gs), base + f"_lut{bits}"),
              g.const(u.astype(np.int16), base + "_lut_scales"), g.const(z.astype(np.uint8), base + "_lut_zeros")]
    attrs = {"bits": bits, "group_size": gs, "table": table, "a_zero_point": n.attrs["a_zero_point"]}
    outputs = n.outputs
    if lay.bias_node is not None:       # the bias joins the op (one int32 add in its write-back)
        add = lay.bias_node
        b_old = add.inputs[lay.bias_index]
        b = np.asarray(b_old.const, np.float64).reshape(-1)
        bv = g.const(np.clip(np.rint(b / s), I32_MIN, I32_MAX).astype(np.int32), b_old.name + "_lut")
        bs = spec_of(b_old)
        if bs is not None:
            acc = np.broadcast_to(np.asarray(bs.scale, np.float64), s.shape) * s
            bv.type = with_quant(bv.type, dataclasses.replace(bs, scale=tuple(float(np.float32(x)) for x in acc)))
        consts.append(bv)
        outputs = add.outputs
        replace[id(add)] = None
    acc_spec = spec_of(n.outputs[0])
    if acc_spec is not None:
        acc = np.broadcast_to(np.asarray(acc_spec.scale, np.float64), s.shape) * s
        for val in lay.carriers:
            _scaled(val, acc, lay.axis)
    replace[id(n)] = Node(L.lut_matmul, [n.inputs[0], *consts], attrs, outputs, n.name, n.loc)
    for c in lay.consumers:
        replace[id(c)] = _rescaled_consumer(replace.get(id(c), c), s, lay.axis)


@register_pass("lut")
def lut_pass(g: Graph, ctx) -> Graph:
    """LUT low-bit weights (--lut 1|2|3|4): each int8 linear layer (q.matmul with a constant weight) becomes a
    q.lut_matmul with b-bit group-quantized weights, run by table lookup; with --quantize mixed, only the layers
    whose plan chose "lut<b>"; a no-op otherwise."""
    req = ctx.quant
    bits = getattr(req, "lut", 0) if req is not None else 0
    plan = ctx.results.get("plan")
    planned = plan.chosen("lut") if plan is not None else []
    if not bits and not planned:
        return g
    report: list = []
    table = getattr(req, "lut_table", "int8")
    out = lut_rewrite(g, bits, getattr(req, "lut_group", 128), table, report) if bits else g
    for choice in planned:
        out = lut_rewrite(out, int(choice[3:]), plan.lut_group, table, report, select=plan.selects(choice))
    ctx.results["lut"] = report
    return out
