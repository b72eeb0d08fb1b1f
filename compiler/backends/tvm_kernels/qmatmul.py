"""INT8 matmul with a constant weight (linear layers) on AVX-512 VNNI, requantization fused into the write-back.

    a:       (m, k) uint8, int8 or int16 activations (int8 is shifted to uint8 by +128 in a ``pad`` stage, which
             also pads k to ``kp`` = k rounded up to 4)
    weight:  :func:`pack_weight` -> ``(np_//16, kp//d, 16, d)``, element ``[o, q, j, t] = (w - w_zp)[d q + t,
             16o + j]``  (w: (k, n) as in numpy.matmul; np_ = n rounded up to 16): int8 with d = 4 (vpdpbusd),
             int16 with d = 2 for int16 activations (vpdpwssd; QuantConfig.keep_16bit's layers)
    bias:    :func:`pack_bias` -> ``(np_,)`` int32 = bias - az * colsum(w - w_zp), az = a_zp (+128 for int8)
    rq:      ``(3, np_)`` rows of the requant's form (requant.py: int64 m, c, rnd for "i64"; int32 for the cheaper
             exact forms), per output column, i.e. the requant axis is the last one
    out:     ``(m, np_)`` of ``rq.dtype`` (int32 without a requant); the caller slices off n..np_.

The weight must fit int8 after its zero point is removed (always true for int8 weights with b_zero_point 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from tvm import s_tir, te, tirx

from compiler.layouts import pack_matmul_weight

from . import amx

from .common import ACC_SCOPE, SCHEDULE_ATTR, divisors, finalize
from .qconv2d import VNNI_INTRIN, Requant, requant_np, requant_te  # noqa: F401  (registers the intrinsics)
from .vnni import lanes
from .requant import requant_dtype

__all__ = ["QMatmulSpec", "make_qmatmul", "pack_weight", "pack_bias", "pack_requant", "qmatmul_reference"]


def _up(v: int, m: int) -> int:
    return -(-v // m) * m


@dataclass(frozen=True)
class QMatmulSpec:
    m: int
    k: int
    n: int
    a_dtype: str = "uint8"
    a_zp: int = 0
    rq: Optional[Requant] = None
    amx: bool = False           # accumulate in AMX tiles (amx.py) instead of vpdpbusd; needs amx_fits()

    @property
    def kp(self) -> int:
        """k padded: to 4 (a vpdpbusd step), to 64 on AMX (a tile's row)."""
        return _up(self.k, amx.DEPTH if self.amx else 4)

    @property
    def mp(self) -> int:
        """m padded: to 16 on AMX (a tile's rows); the padded rows are computed and never written."""
        return _up(self.m, amx.ROWS) if self.amx else self.m

    @property
    def np_(self) -> int:
        return _up(self.n, 16)

    @property
    def az(self) -> int:
        return self.a_zp + (128 if self.a_dtype == "int8" else 0)

    @property
    def depth(self) -> int:
        """Reduction steps per multiply-add lane: 4 (vpdpbusd, 8-bit activations) or 2 (vpdpwssd, int16)."""
        return lanes(self.a_dtype)[0]

    @property
    def out_dtype(self) -> str:
        return self.rq.dtype if self.rq is not None else "int32"


def out_shape(spec: QMatmulSpec):
    return (spec.m, spec.np_)


def weight_fits(w: np.ndarray, w_zp: int) -> bool:
    d = np.asarray(w, np.int64) - w_zp
    return bool(d.size == 0 or (d.min() >= -128 and d.max() <= 127))


def pack_weight(spec: QMatmulSpec, w: np.ndarray, w_zp: int = 0) -> np.ndarray:
    """(w - w_zp) in the vnni_matmul form (compiler/layouts.py), zero rows up to spec.kp; weight_fits(w, w_zp)
    holds. For int16 activations the same form two rows deep, int16."""
    if spec.depth == 2:
        d = np.zeros((spec.kp, spec.np_), np.int16)
        d[:spec.k, :spec.n] = np.asarray(w, np.int64) - w_zp
        return np.ascontiguousarray(d.reshape(spec.kp // 2, 2, spec.np_ // 16, 16).transpose(2, 0, 3, 1))
    packed = pack_matmul_weight((np.asarray(w, np.int64) - w_zp).astype(np.int8), "vnni_matmul")
    extra = spec.kp // 4 - packed.shape[1]
    return np.pad(packed, ((0, 0), (0, extra), (0, 0), (0, 0))) if extra else packed


def pack_bias(spec: QMatmulSpec, w: np.ndarray, w_zp: int = 0, b: Optional[np.ndarray] = None) -> np.ndarray:
    s = (np.asarray(w, np.int64) - w_zp).sum(axis=0)
    out = np.zeros(spec.np_, np.int64)
    out[:spec.n] = (0 if b is None else np.asarray(b, np.int64)) - spec.az * s
    return out.astype(np.int32)


def pack_requant(multiplier, shift, spec: QMatmulSpec) -> np.ndarray:
    """The (3, np_) parameter table of spec.rq's form (int64 rows for "i64", int32 for the cheaper ones)."""
    from .qconv2d import pack_requant as pr
    return pr(multiplier, shift, spec.n, spec.np_, (3, spec.np_), form=spec.rq.form)


def qmatmul_te(spec: QMatmulSpec, a, w, bias, rq=None):
    shifted = spec.a_dtype == "int8"
    if _has_pad(spec):
        def _pad(i, kk):
            v = a[i, kk]
            v = (v.astype("int32") + 128).astype("uint8") if shifted else v
            if spec.kp == spec.k and spec.mp == spec.m:
                return v
            inside = kk < spec.k if spec.mp == spec.m else tirx.all(kk < spec.k, i < spec.m)
            return tirx.if_then_else(inside, v, tirx.const(0, "int16" if spec.depth == 2 else "uint8"))
        ap = te.compute((spec.mp, spec.kp), _pad, name="pad")
    else:
        ap = a
    d = spec.depth
    rq_ = te.reduce_axis((0, spec.kp // d), "rq")
    rt = te.reduce_axis((0, d), "rt")
    acc = te.compute((spec.mp, spec.np_ // 16, 16),
                     lambda i, o, j: te.sum(ap[i, rq_ * d + rt].astype("int32") * w[o, rq_, j, rt].astype("int32"),
                                            axis=[rq_, rt]), name="acc")

    def epi(i, col):
        v = acc[i, col // 16, col % 16] + bias[col]
        if spec.rq is not None:
            v = requant_te(v, rq, (col,), spec.rq)
        return v
    return te.compute(out_shape(spec), epi, name="out")


def _has_pad(spec: QMatmulSpec) -> bool:
    """The activations go through a pad stage: int8 shifted to uint8, k padded to kp, m to mp."""
    return spec.a_dtype == "int8" or spec.kp != spec.k or spec.mp != spec.m


def pick_tile(m: int, n16: int) -> Tuple[int, int]:
    best, score = (1, 1), -1
    for rm in divisors(m):
        if rm > 16:
            break
        for rn in divisors(n16):
            if rn > 4 or rm * rn > 16:
                continue
            s = rm * rn - (0.5 if rn == 1 else 0)
            if s > score:
                best, score = (rm, rn), s
    return best


def unscheduled(spec: QMatmulSpec, weight_shape: tuple, weight_dtype: str, compute) -> tirx.PrimFunc:
    """The PrimFunc (a, weight, bias[, rq], out) of `compute(spec, a, weight, bias, rq)`, before scheduling."""
    a = te.placeholder((spec.m, spec.k), spec.a_dtype, "a")
    w = te.placeholder(weight_shape, weight_dtype, "weight")
    bias = te.placeholder((spec.np_,), "int32", "bias")
    args = [a, w, bias]
    rq = None
    if spec.rq is not None:
        rq = te.placeholder((3, spec.np_), requant_dtype(spec.rq), "rq")
        args.append(rq)
    return te.create_prim_func(args + [compute(spec, a, w, bias, rq)])


def make_qmatmul(spec: QMatmulSpec, tile=None) -> tirx.PrimFunc:
    d, w_dtype, intrin = lanes(spec.a_dtype)
    func = unscheduled(spec, (spec.np_ // 16, spec.kp // d, 16, d), w_dtype, qmatmul_te)
    return schedule(func, spec, tile, intrin, columns_outer=False)


def amx_fits(m: int, k: int, n: int) -> bool:
    """The AMX schedule takes at least one 16-row tile and half a 64-deep step (rows and reduction are padded
    up to those, a cost in wasted work the matrix units repay), and column blocks in groups of 2 or 3."""
    return m >= amx.ROWS and k >= amx.DEPTH // 2 and amx.columns_fit(_up(n, 16) // 16)


def pick_amx_tile(m: int, n16: int) -> Tuple[int, int]:
    """(16-row tiles, 16-column blocks) per block: the most accumulator tiles the 8 registers hold."""
    return max(((rm, rn) for rm in divisors(m // amx.ROWS) for rn in divisors(n16)
                if rn >= 2 and amx.block_fits(rm, rn)), key=lambda t: (t[0] * t[1], -abs(t[0] - t[1])))


def amx_block(tile, m: int, n16: int) -> Tuple[int, int]:
    """`tile` = (16-row tiles, 16-column blocks) where it is an AMX block for m rows and n16 column blocks, else
    pick_amx_tile's."""
    if tile and len(tile) == 2 and tile[1] >= 2 and amx.block_fits(*tile) and m % (amx.ROWS * tile[0]) == 0 and \
            n16 % tile[1] == 0:
        return tuple(tile)
    return pick_amx_tile(m, n16)


def schedule(func: tirx.PrimFunc, spec, tile, intrin: str, columns_outer: bool) -> tirx.PrimFunc:
    """The tiled schedule of an unscheduled() matmul: (rows, 16-column blocks) tiles from `tile` or pick_tile,
    accumulators in registers, the 16 columns x 4 k of each block tensorized with `intrin`, the tiles in
    parallel (column tiles outer when `columns_outer`: each thread then streams its part of the weight once).
    With spec.amx: blocks of (rm 16-row tiles, rn column blocks) whose whole reduction is one AMX intrinsic
    (amx.py), then the bias and requant written back 16 lanes at a time."""
    on_amx = getattr(spec, "amx", False)
    if on_amx:
        rm, rn = amx_block(tile, spec.mp, spec.np_ // 16)
    else:
        rm, rn = tile or pick_tile(spec.m, spec.np_ // 16)
    sch = s_tir.Schedule(func)
    accb, out = sch.get_sblock("acc"), sch.get_sblock("out")
    i, o, j, kq, kt = sch.get_loops(accb)
    io, ii = sch.split(i, [None, amx.ROWS * rm if on_amx else rm])
    oo, oi = sch.split(o, [None, rn])
    outer, inner = (oo, io) if columns_outer else (io, oo)
    sch.reorder(outer, inner, *((ii, oi, j, kq) if on_amx else (kq, ii, oi, j)), kt)
    sch.set_scope(accb, 0, ACC_SCOPE)
    sch.reverse_compute_at(out, inner)
    _, cv = sch.split(sch.get_loops(out)[-1], [None, 16])
    sch.vectorize(cv)
    if not on_amx:
        sch.unroll(ii)
        sch.unroll(oi)
    sch.parallel(sch.fuse(outer, inner))
    init = sch.decompose_reduction(accb, ii if on_amx else kq)
    if on_amx:
        sch.tensorize(ii, amx.register(rm, rn, spec.kp))
    else:
        sch.tensorize(j, intrin)
    sch.vectorize(sch.get_loops(init)[-1])
    if _has_pad(spec):
        sch.parallel(sch.get_loops(sch.get_sblock("pad"))[0])
    return finalize(sch.mod["main"].with_attr(SCHEDULE_ATTR, "amx" if on_amx else "tiled"))


def qmatmul_reference(spec: QMatmulSpec, a, w, w_zp=0, b=None, mc=None) -> np.ndarray:
    y = ((np.asarray(a, np.int64) - spec.a_zp) @ (np.asarray(w, np.int64) - w_zp))
    if b is not None:
        y = y + np.asarray(b, np.int64)
    y = y.astype(np.int32)
    if spec.rq is not None:
        from compiler.ops.quant import requant_values
        y = requant_values(y, mc[0], mc[1], spec.rq.in_zp, spec.rq.out_zp, spec.rq.qmin, spec.rq.qmax,
                           axis=-1).astype(spec.rq.dtype)
    return y
