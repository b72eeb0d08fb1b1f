"""INT8 conv2d with AVX-512 VNNI (vpdpbusd, u8 x s8 -> s32) and the dyadic requantization fused into the
register write-back; int16 activations (QuantConfig.keep_16bit's layers) with vpdpwssd (s16 x s16 -> s32, the
int8 weights widened), the same loops two input channels deep instead of four (``spec.depth``).

Layouts (``ib = spec.in_block`` in {4, 8, 16}; ``cip`` = ci rounded up to a multiple of 4 (and of ib);
``cop`` = co rounded up to 16):

* data:     ``(n, cip//ib, h, w, ib)`` uint8, int8 or int16 (``x_dtype``), **unpadded**: spatial padding (with the input
  zero point) and, for int8, the +128 shift to uint8 happen in a ``pad`` stage inside the PrimFunc.  Channels
  beyond ci (the 3-channel stem padded to 4) may hold anything: their weights are 0.
* weight:   :func:`pack_weight` -> ``(cop//16, cip//ib, kh, kw, ib//d, 16, d)``, element
  ``[o, cb, r, s, q, j, t] = w[16 o + j, ib cb + d q + t, r, s]``: int8 with d = 4, int16 with d = 2 (int16 data).
* bias:     :func:`pack_bias` -> ``(cop//16, 16)`` int32 = bias - xz * sum(w) per output channel, where
  xz = x_zero_point (uint8) or x_zero_point + 128 (int8, shifted): the zero point never reaches the kernel.
* requant parameters: :func:`pack_requant` -> ``(3, cop//16, 16)``: int64 rows m, c, 2^(c-1) (0 where c == 0), or
  the int32 rows of a cheaper exact form (``Requant.form``, see REQUANT_FORMS).
* residual: same layout as the output (a blocked one) of dtype ``residual_dtype``.
* output:   ``(n, co//b, oh, ow, b)`` with ``b = spec.out_block`` (compiler.layouts.int_out_block: 16 if
  co % 16 == 0, else 8 if co % 8 == 0: each 16-lane accumulator written as two 8-channel halves), else plain
  ``(n, co, oh, ow)``; dtype ``out_dtype``.

Epilogue (all in int64 where the reference is, bit-exact with compiler/ops/quant.py)::

    v = acc + bias                                   (int32, wraps like the reference)
    v = rq1(v)                     if rq1            (-> rq1 dtype; int32 when a residual follows)
    v = rq1b(v)                    if rq1b           (the dyadic pass's rescale of v to int32)
    r = rq2(residual) or residual  if residual       (-> int32)
    v = rq3(int32(v + r))          if residual
    v = table[v - min(v's dtype)]  if table           (an 8- or 16-bit activation lookup, passes/table_islands.py)

with rq(v) = clamp(((v - in_zp) * m + rnd) >> c + out_zp, qmin, qmax).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from tvm import te, tirx

from compiler.layouts import (int_in_block, int_out_block, pack_amx_conv_weight, pack_rows_conv_weight,
                              pack_vnni_conv_weight)

from . import qconv1x1_amx, qconv2d_amx
from .amx import INT16_OFFSET
from .common import block_or_none, divisors, finalize
from .requant import (REQUANT_FORMS, Requant, pack_requant, requant_dtype, requant_form,  # noqa: F401
                      requant_np, requant_scalar_te, requant_te)
from .table import TABLE_INDEX, table_args, table_te
from .vnni import VNNI_INTRIN, lanes, register_intrinsics  # noqa: F401

__all__ = ["QConvSpec", "Requant", "make_qconv2d", "pack_weight", "pack_bias", "pack_requant", "data_shape",
           "out_shape", "output_hw", "qconv2d_reference", "requant_np", "requant_form",
           "REQUANT_FORMS", "VNNI_INTRIN"]

# ----------------------------------------------------------------------------------------------------------------
# spec and packing
# ----------------------------------------------------------------------------------------------------------------
def _up(v: int, m: int) -> int:
    return -(-v // m) * m


@dataclass(frozen=True)
class QConvSpec:
    """One integer conv2d (groups == 1): NCHW logical shapes, OIHW int8 weights.  pad = (top, left, bottom,
    right).  ``rq1`` / ``rq2`` / ``rq3``: fused requantizations (see the module docstring); with none the output
    is the int32 accumulator + bias."""

    n: int
    ci: int
    h: int
    w: int
    co: int
    kh: int
    kw: int
    stride: Tuple[int, int] = (1, 1)
    pad: Tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: Tuple[int, int] = (1, 1)
    x_dtype: str = "uint8"
    x_zp: int = 0
    in_block: int = 16
    rq1: Optional[Requant] = None
    residual_dtype: Optional[str] = None
    rq2: Optional[Requant] = None
    rq3: Optional[Requant] = None
    rq1b: Optional[Requant] = None      # a second requant right after rq1 (the dyadic pass's rescale to int32)
    table: Optional[str] = None         # dtype of a 256-entry lookup applied last (an activation, table_islands)
    amx: bool = False                   # accumulate on AMX tiles (qconv2d_amx.py; where qconv2d_amx.fits)

    def __post_init__(self):
        if self.in_block not in (4, 8, 16) or self.cip % self.in_block:
            raise ValueError(f"in_block {self.in_block} for {self.ci} channels")
        if self.x_dtype not in ("uint8", "int8", "int16"):
            raise ValueError(self.x_dtype)
        if self.rq1b is not None and self.rq1 is None:
            raise ValueError("rq1b needs rq1")
        pre = self.rq1b or self.rq1
        if self.residual_dtype is not None and (pre is None or self.rq3 is None or pre.dtype != "int32"
                                                or self.blocked_out is False):
            raise ValueError("a residual needs rq1 -> int32, rq3 and a blocked output")
        if self.table is not None and self.pre_table_dtype not in TABLE_INDEX:
            raise ValueError("a lookup table needs an 8- or 16-bit index")
        oh, ow = output_hw(self)
        if oh <= 0 or ow <= 0:
            raise ValueError("empty output")
        if self.amx and amx_module(self) is None:
            raise ValueError("the AMX conv takes data in 16-channel blocks with a kernel 3 or 4 taps wide (8-bit: "
                             "2 blocks or more), or int16 data in a 1x1 conv with 64 channels or more")

    @property
    def cip(self) -> int:
        return _up(self.ci, 4)

    @property
    def cop(self) -> int:
        return _up(self.co, 16)

    @property
    def depth(self) -> int:
        """Input channels per multiply-add lane: 4 (vpdpbusd, 8-bit data) or 2 (vpdpwssd, int16 data)."""
        return lanes(self.x_dtype)[0]

    @property
    def out_block(self) -> int:
        return int_out_block(self.co)

    @property
    def blocked_out(self) -> bool:
        return self.out_block != 0

    @property
    def pre_table_dtype(self) -> str:
        if self.rq3 is not None:
            return self.rq3.dtype
        last = self.rq1b or self.rq1
        return last.dtype if last is not None else "int32"

    @property
    def out_dtype(self) -> str:
        return self.table or self.pre_table_dtype

    @property
    def xz(self) -> int:
        """The zero point of the data the kernel really multiplies (uint8; int8 shifted by +128; int16 as is, or
        shifted by +32768 on AMX)."""
        shift = {"int8": 128, "int16": INT16_OFFSET if self.amx else 0}
        return self.x_zp + shift.get(self.x_dtype, 0)

    @property
    def macs(self) -> int:
        oh, ow = output_hw(self)
        return self.n * self.co * oh * ow * self.ci * self.kh * self.kw


choose_in_block = int_in_block


def output_hw(spec) -> Tuple[int, int]:
    pt, pl, pb, pr = spec.pad
    oh = (spec.h + pt + pb - spec.dilation[0] * (spec.kh - 1) - 1) // spec.stride[0] + 1
    ow = (spec.w + pl + pr - spec.dilation[1] * (spec.kw - 1) - 1) // spec.stride[1] + 1
    return oh, ow


def data_shape(spec: QConvSpec):
    return (spec.n, spec.cip // spec.in_block, spec.h, spec.w, spec.in_block)


def out_shape(spec: QConvSpec):
    oh, ow = output_hw(spec)
    b = spec.out_block
    return (spec.n, spec.co // b, oh, ow, b) if b else (spec.n, spec.co, oh, ow)


def amx_module(spec: QConvSpec):
    """The AMX kernel that takes `spec` (qconv2d_amx: 3x3 on 8-bit data; qconv1x1_amx: 1x1 on int16), or None."""
    return next((m for m in (qconv2d_amx, qconv1x1_amx) if m.fits(spec)), None)


def weight_shape(spec: QConvSpec):
    if spec.amx:
        return amx_module(spec).weight_shape(spec)
    ib, d = spec.in_block, spec.depth
    return (spec.cop // 16, spec.cip // ib, spec.kh, spec.kw, ib // d, 16, d)


def pack_weight(spec: QConvSpec, w: np.ndarray) -> np.ndarray:
    """OIHW int8 -> :func:`weight_shape` (compiler.layouts.pack_vnni_conv_weight, shared with pack_weights)."""
    w = np.asarray(w)
    assert w.shape == (spec.co, spec.ci, spec.kh, spec.kw), w.shape
    if spec.amx:
        return (pack_rows_conv_weight if spec.kw == 1 else pack_amx_conv_weight)(w.astype(np.int8))
    return pack_vnni_conv_weight(w.astype(np.int8), spec.in_block, spec.depth)


def pack_bias(spec: QConvSpec, w: np.ndarray, b: Optional[np.ndarray]) -> np.ndarray:
    """(cop//16, 16) int32: bias - xz * sum(w), computed in int64 and wrapped like the reference."""
    s = np.asarray(w, np.int64).reshape(spec.co, -1).sum(axis=1)
    bb = np.zeros(spec.co, np.int64) if b is None else np.asarray(b, np.int64).reshape(spec.co)
    out = np.zeros(spec.cop, np.int64)
    out[:spec.co] = bb - spec.xz * s
    return np.ascontiguousarray(out.astype(np.int32).reshape(spec.cop // 16, 16))


# ----------------------------------------------------------------------------------------------------------------
# compute
# ----------------------------------------------------------------------------------------------------------------
def pad_te(spec: QConvSpec, data, width: Optional[int] = None):
    """The pad stage: uint8 (or int16) data padded with the zero point (int8 shifted by +128 first), `width`
    columns (default: the conv's); `data` itself when there is nothing to do. Shared with the shift-and-add conv
    (shiftadd.py)."""
    pt, pl, pb, pr = spec.pad
    shifted = spec.x_dtype == "int8"
    width = width or spec.w + pl + pr
    padded = pt or pl or pb or pr or width > spec.w + pl + pr
    if not (padded or shifted):
        return data
    kind = "int16" if spec.x_dtype == "int16" else "uint8"
    lo, hi = (-2**15, 2**15 - 1) if kind == "int16" else (0, 255)
    if not lo <= spec.xz <= hi:
        raise ValueError(f"input zero point {spec.x_zp} outside the {spec.x_dtype} range")
    fill = tirx.const(spec.xz, kind)

    def _pad(n, c, y, x, i):
        v = data[n, c, y - pt, x - pl, i]
        v = (v.astype("int32") + 128).astype("uint8") if shifted else v
        if not padded:
            return v
        return tirx.if_then_else(tirx.all(y >= pt, y < pt + spec.h, x >= pl, x < pl + spec.w), v, fill)
    return te.compute((spec.n, spec.cip // spec.in_block, spec.h + pt + pb, width, spec.in_block), _pad, name="pad")


def write_back_te(spec: QConvSpec, acc, bias, rq1=None, residual=None, rq2=None, rq3=None, rq1b=None, table=None,
                  staged: bool = False):
    """The write-back stage `out` of the int32 accumulator `acc` (n, cop/16, oh, ow, 16): bias, the
    requants, the residual, the lookup table (the epilogue of the module docstring), in the output's layout
    (out_shape). `staged` (a blocked output with a 256-entry table): the lookup is its own stage `out`
    reading the requantized values from a stage `pre_table`, so that the schedule can look up 64 lanes at a time
    (`byte_lookup_lanes`) while the requant stays 16 lanes wide. Shared with the shift-and-add conv."""
    def epi(n, o, y, x, j, res_idx=None, lookup=True):
        v = acc[n, o, y, x, j] + bias[o, j]
        if spec.rq1 is not None:
            v = requant_te(v, rq1, (o, j), spec.rq1)
        if spec.rq1b is not None:
            v = requant_te(v, rq1b, (o, j), spec.rq1b)
        if spec.residual_dtype is not None:
            r = residual[res_idx]
            r = requant_te(r, rq2, (o, j), spec.rq2) if spec.rq2 is not None else r.astype("int32")
            v = requant_te(v.astype("int32") + r.astype("int32"), rq3, (o, j), spec.rq3)
        return table_te(v, table, spec.pre_table_dtype, spec.table) if spec.table is not None and lookup else v

    def whole(i, lookup):
        if spec.out_block == 8:     # 8-channel block o: half o % 2 of the accumulator's 16-channel block o // 2
            n, o, y, x, j = i
            return epi(n, o // 2, y, x, (o % 2) * 8 + j, i, lookup)
        return epi(*i, res_idx=i, lookup=lookup)

    if spec.out_block in (8, 16) and staged and staged_table(spec):
        pre = te.compute(out_shape(spec), lambda *i: whole(i, False), name="pre_table")
        return te.compute(out_shape(spec), lambda *i: table_te(pre[i], table, spec.pre_table_dtype, spec.table),
                          name="out")
    if spec.out_block in (8, 16):
        return te.compute(out_shape(spec), lambda *i: whole(i, True), name="out")
    return te.compute(out_shape(spec), lambda n, c, y, x: epi(n, c // 16, y, x, c % 16), name="out")


def staged_table(spec: QConvSpec) -> bool:
    """Whether the write-back's lookup is worth its own stage: a 256-entry table (an 8-bit index), which AVX-512
    VBMI looks up 64 lanes per pair of permutes (tvm_byte_lookup.py), so 64 lanes cost what 16 do."""
    return spec.table is not None and spec.pre_table_dtype in ("int8", "uint8")


def qconv2d_te(spec: QConvSpec, data, weight, bias, rq1=None, residual=None, rq2=None, rq3=None, rq1b=None,
               table=None, staged: bool = False):
    ib = spec.in_block
    sh, sw = spec.stride
    dh, dw = spec.dilation
    oh, ow = output_hw(spec)
    if spec.amx and spec.kw == 1:
        return write_back_te(spec, qconv1x1_amx.conv_te(spec, data, weight), bias, rq1, residual, rq2, rq3, rq1b,
                             table, staged)
    if spec.amx:
        acc = qconv2d_amx.conv_te(spec, data, weight, oh, ow)
        return write_back_te(spec, acc, bias, rq1, residual, rq2, rq3, rq1b, table, staged)
    padded = pad_te(spec, data)
    rcb = te.reduce_axis((0, spec.cip // ib), "rcb")
    rh = te.reduce_axis((0, spec.kh), "rh")
    rw = te.reduce_axis((0, spec.kw), "rw")
    d = spec.depth
    rq = te.reduce_axis((0, ib // d), "rq")
    rt = te.reduce_axis((0, d), "rt")
    acc = te.compute(
        (spec.n, spec.cop // 16, oh, ow, 16),
        lambda n, o, y, x, j: te.sum(
            padded[n, rcb, y * sh + rh * dh, x * sw + rw * dw, rq * d + rt].astype("int32")
            * weight[o, rcb, rh, rw, rq, j, rt].astype("int32"), axis=[rcb, rh, rw, rq, rt]),
        name="conv")
    return write_back_te(spec, acc, bias, rq1, residual, rq2, rq3, rq1b, table, staged)


def qconv2d_prim_func(spec: QConvSpec) -> tirx.PrimFunc:
    data = te.placeholder(data_shape(spec), spec.x_dtype, "data")
    weight = te.placeholder(weight_shape(spec), "int8" if spec.amx else lanes(spec.x_dtype)[1], "weight")
    bias = te.placeholder((spec.cop // 16, 16), "int32", "bias")
    args = [data, weight, bias]
    kw = {}
    for name in ("rq1", "rq1b", "rq2", "rq3"):
        if getattr(spec, name) is not None:
            kw[name] = te.placeholder((3, spec.cop // 16, 16), requant_dtype(getattr(spec, name)), name)
    if spec.rq1 is not None:
        args.append(kw["rq1"])
    if spec.rq1b is not None:
        args.append(kw["rq1b"])
    if spec.residual_dtype is not None:
        kw["residual"] = te.placeholder(out_shape(spec), spec.residual_dtype, "residual")
        args.append(kw["residual"])
        if spec.rq2 is not None:
            args.append(kw["rq2"])
        args.append(kw["rq3"])
    kw |= table_args(spec)
    args += [kw["table"]] if "table" in kw else []
    out = qconv2d_te(spec, data, weight, bias, **kw, staged=True)
    return te.create_prim_func(args + [out])


# ----------------------------------------------------------------------------------------------------------------
# schedule
# ----------------------------------------------------------------------------------------------------------------
MAX_ACC = 16


def pick_tile(n_ocb: int, ow: int) -> Tuple[int, int]:
    """(reg_oc, reg_w) with reg_oc | n_ocb, reg_w | ow, <= 16 accumulators; prefers 12-16 accumulators and
    reg_oc in 2..4 (4oc x 4w measured best; the width tile must divide the width for tensorize)."""
    best, best_score = (1, 1), -1e9
    for roc in divisors(n_ocb):
        if roc > 4:
            break
        for rw in divisors(ow):
            acc = roc * rw
            if acc > MAX_ACC:
                continue
            score = acc + 0.25 * roc - (1.5 if roc == 1 else 0.0) - (1.0 if rw < 3 else 0.0)
            if score > best_score:
                best, best_score = (roc, rw), score
    return best


def sched_pad(sch):
    blk = block_or_none(sch, "pad")
    if blk is None:
        return
    n, c, y, x, i = sch.get_loops(blk)
    sch.parallel(sch.fuse(n, c, y))
    sch.vectorize(i)


def make_qconv2d(spec: QConvSpec, tile=None) -> tirx.PrimFunc:
    """Scheduled PrimFunc with params (data, weight, bias, [rq1], [rq1b], [residual, [rq2], rq3], out); opaque,
    scheduled (the schedule: qconv2d_schedule.py)."""
    from .qconv2d_schedule import schedule_qconv2d
    if spec.amx and spec.kw == 1:
        return finalize(qconv1x1_amx.make(spec, tile))
    schedule = qconv2d_amx.schedule if spec.amx else schedule_qconv2d
    return finalize(schedule(qconv2d_prim_func(spec), spec, tile))


# ----------------------------------------------------------------------------------------------------------------
# numpy reference (plain NCHW) and packing helpers for tests / benchmarks
# ----------------------------------------------------------------------------------------------------------------
def pack_data(spec: QConvSpec, x: np.ndarray) -> np.ndarray:
    """NCHW -> (n, cip//ib, h, w, ib), extra channels filled with the zero point."""
    n, c, h, w = x.shape
    xp = np.full((n, spec.cip, h, w), spec.x_zp, x.dtype)
    xp[:, :c] = x
    ib = spec.in_block
    return np.ascontiguousarray(xp.reshape(n, spec.cip // ib, ib, h, w).transpose(0, 1, 3, 4, 2))


def unpack_out(spec: QConvSpec, y: np.ndarray) -> np.ndarray:
    return y if y.ndim == 4 else np.ascontiguousarray(y.transpose(0, 1, 4, 2, 3).reshape(y.shape[0], -1, *y.shape[2:4]))


def qconv2d_reference(spec: QConvSpec, x, w, b=None, rq1_mc=None, residual=None, rq2_mc=None, rq3_mc=None,
                      rq1b_mc=None):
    """The q.conv + q.requant (+ residual) chain with compiler.ops' references, plain NCHW."""
    from compiler.ops.linalg import conv_reference
    pt, pl, pb, pr = spec.pad
    y = conv_reference(x.astype(np.int64) - spec.x_zp, np.asarray(w, np.int64),
                       None if b is None else np.asarray(b, np.int64), spec.stride, (pt, pl, pb, pr),
                       spec.dilation, 1).astype(np.int32)
    if spec.rq1 is not None:
        y = requant_np(y, *rq1_mc, spec.rq1)
    if spec.rq1b is not None:
        y = requant_np(y, *rq1b_mc, spec.rq1b)
    if spec.residual_dtype is not None:
        r = requant_np(residual, *rq2_mc, spec.rq2) if spec.rq2 is not None else residual.astype(np.int32)
        y = requant_np((y.astype(np.int32) + r.astype(np.int32)).astype(np.int32), *rq3_mc, spec.rq3)
    return y
