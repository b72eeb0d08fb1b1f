"""INT8 (and int16-activation) depthwise conv2d (groups == channels) in blocked channel layouts, bit-exact with q.conv + q.requant.

Layouts (``b = spec.block``, 8 or 16 dividing the channel count c):

* data:    ``(n, c//b, h, w, b)`` uint8, int8 or int16, unpadded; a ``pad`` stage fills the border with the data's
  zero point, so padded positions contribute (zp - zp) * w = 0 as q.conv's do.
* weight:  ``(c//b, kh, kw, b)`` int8 (compiler.layouts' depthwise form).
* bias:    ``(c//b, b)`` int32; requant parameters ``(3, c//b, b)`` (requant.pack_requant).
* output:  ``(n, c//b, oh, ow, b)`` of the table's or the requant's dtype (int32 without either).

    acc = sum_{r,s} (x[y*sh + r*dh, x*sw + s*dw] - x_zp) * w[r, s] + bias     (int32, per channel)
    out = rq(acc)                                                          if rq
    out = table[out - min(rq dtype)]                                       if table

Two forms, both bit-exact:

* plain (``vnni=False``): the products in int32 lanes (one channel block per vector); the register tiling is the
  FP32 conv's (conv2d_schedule.schedule_conv2d on the equivalent depthwise Conv2dSpec). 9 widen-multiply-adds per
  output vector of a 3x3 kernel.
* VNNI (``vnni=True``, dilation 1, a CPU with AVX-512 VNNI): in the blocked layout, ``depth`` horizontally adjacent
  pixels of one channel block are ``depth x b`` contiguous values; one shuffle (vpermb / vpermw on VBMI CPUs) makes
  each 32-bit lane hold one channel's ``depth`` taps and one vpdpbusd (8-bit data, depth 4) or vpdpwssd (int16,
  depth 2) adds their products to that channel's accumulator: 3 (8-bit) or 6 (int16) per output vector of a 3x3
  kernel. The kernel row is cut into ``groups = ceil(kw / depth)`` such windows, the taps past kw weighted 0, and
  the pad stage widens the row to cover the last window. vpdpbusd reads unsigned bytes: int8 data is shifted to
  uint8 (+128) in the pad stage and the bias folds the shift: ``sum((x - zp) w) = sum(u(x) w) - u(zp) sum(w)``
  (``pack_vnni``; int32 wraparound is the same on both sides).
  Weight ``(c//b, kh, groups, b, depth)`` int8 (int16 for int16 data), element [cb, r, g, i, k] =
  ``w[b cb + i, r, depth g + k]`` (0 past kw).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from tvm import te, tirx

from .common import SCHEDULE_ATTR, finalize
from .conv2d import Conv2dSpec, output_hw
from .table import TABLE_INDEX, table_args, table_te
from .requant import Requant, requant_dtype, requant_te
from .vnni import register_depthwise_intrinsic

__all__ = ["QDepthwiseSpec", "make_qdepthwise", "pack_vnni"]


@dataclass(frozen=True)
class QDepthwiseSpec:
    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    stride: Tuple[int, int]
    pad: Tuple[int, int, int, int]
    dilation: Tuple[int, int]
    block: int
    x_dtype: str
    x_zp: int
    rq: Optional[Requant] = None
    table: Optional[str] = None         # dtype of a 256 / 65536-entry lookup after the requant (an activation)
    vnni: bool = False                  # the vpdpbusd / vpdpwssd form (module docstring)

    def __post_init__(self):
        if self.block not in (8, 16) or self.c % self.block:
            raise ValueError(f"block {self.block} for {self.c} channels")
        if self.x_dtype not in ("uint8", "int8", "int16"):
            raise ValueError(self.x_dtype)
        if self.table is not None and (self.rq is None or self.rq.dtype not in TABLE_INDEX):
            raise ValueError("a lookup table needs an 8- or 16-bit requant before it")
        if self.vnni and self.dilation != (1, 1):
            raise ValueError("the VNNI depthwise form reads adjacent pixels: dilation 1 only")

    @property
    def depth(self) -> int:
        """Taps per 32-bit lane in the VNNI form: 4 (vpdpbusd, 8-bit data) or 2 (vpdpwssd, int16)."""
        return 2 if self.x_dtype == "int16" else 4

    @property
    def groups(self) -> int:
        """Windows of `depth` taps per kernel row (VNNI form)."""
        return -(-self.kw // self.depth)

    @property
    def shift(self) -> int:
        """What the VNNI form adds to the data so vpdpbusd's unsigned operand holds it: 128 for int8, else 0."""
        return 128 if self.vnni and self.x_dtype == "int8" else 0

    @property
    def pre_table_dtype(self) -> str:
        return self.rq.dtype if self.rq is not None else "int32"

    @property
    def conv(self) -> Conv2dSpec:
        """The FP32 depthwise spec with the same loops: what the schedule reads."""
        return Conv2dSpec(self.n, self.c, self.h, self.w, self.c, self.kh, self.kw, self.stride, self.pad,
                          self.dilation, self.c, self.block, self.block, True, False, "none", dtype="int32")

    @property
    def out_dtype(self) -> str:
        return self.table or (self.rq.dtype if self.rq is not None else "int32")

    def out_shape(self) -> Tuple[int, ...]:
        oh, ow = output_hw(self.conv)
        return (self.n, self.c // self.block, oh, ow, self.block)


def staged_table(spec: QDepthwiseSpec) -> bool:
    """Whether the VNNI form's lookup is its own stage (qconv2d.staged_table: a 256-entry table)."""
    return spec.vnni and spec.table is not None and spec.rq is not None and spec.rq.dtype in ("int8", "uint8")


def _write_back(spec: QDepthwiseSpec, conv, bias, rq, table):
    """out = [table of] [requant of] conv + bias, per channel (both forms); a staged lookup (`staged_table`)
    reads the requantized values from a stage `pre_table`, as the int8 conv's does."""
    def _out(n, c, y, x, o, lookup=True):
        v = conv[n, c, y, x, o] + bias[c, o]
        v = requant_te(v, rq, (c, o), spec.rq) if spec.rq is not None else v
        return table_te(v, table, spec.rq.dtype, spec.table) if spec.table is not None and lookup else v
    if staged_table(spec):
        pre = te.compute(spec.out_shape(), lambda *i: _out(*i, lookup=False), name="pre_table")
        return te.compute(spec.out_shape(), lambda *i: table_te(pre[i], table, spec.rq.dtype, spec.table),
                          name="out")
    return te.compute(spec.out_shape(), lambda *i: _out(*i), name="out")


def qdepthwise_te(spec: QDepthwiseSpec, data, weight, bias, rq=None, table=None):
    b = spec.block
    pt, pl, pb, pr = spec.pad
    sh, sw = spec.stride
    dh, dw = spec.dilation
    oh, ow = output_hw(spec.conv)
    zp = tirx.const(spec.x_zp, spec.x_dtype)

    def _pad(n, c, y, x, i):
        inside = tirx.all(y >= pt, y < pt + spec.h, x >= pl, x < pl + spec.w)
        return tirx.if_then_else(inside, data[n, c, y - pt, x - pl, i], zp)
    padded = te.compute((spec.n, spec.c // b, spec.h + pt + pb, spec.w + pl + pr, b), _pad, name="pad")
    ry = te.reduce_axis((0, spec.kh), name="ry")
    rx = te.reduce_axis((0, spec.kw), name="rx")

    def _conv(n, c, y, x, o):
        d = padded[n, c, y * sh + ry * dh, x * sw + rx * dw, o].astype("int32") - tirx.const(spec.x_zp, "int32")
        return te.sum(d * weight[c, ry, rx, o].astype("int32"), axis=[ry, rx])
    conv = te.compute((spec.n, spec.c // b, oh, ow, b), _conv, name="conv")
    return _write_back(spec, conv, bias, rq, table)


def qdepthwise_vnni_te(spec: QDepthwiseSpec, data, weight, bias, rq=None, table=None):
    """The VNNI form (module docstring): the pad stage shifts the data (u(x)) and widens each row to the last
    window; conv sums u(x) * w over (kernel row, window, tap), the bias (pack_vnni's) folds u(zp) * sum(w)."""
    b, d, g = spec.block, spec.depth, spec.groups
    pt, pl, pb, pr = spec.pad
    sh, sw = spec.stride
    oh, ow = output_hw(spec.conv)
    wp = max(spec.w + pl + pr, (ow - 1) * sw + g * d)
    udt = "uint8" if d == 4 else "int16"

    def _u(v):
        return (v.astype("int32") + spec.shift).astype(udt) if spec.shift else v.astype(udt)

    def _pad(n, c, y, x, i):
        inside = tirx.all(y >= pt, y < pt + spec.h, x >= pl, x < pl + spec.w)
        return tirx.if_then_else(inside, _u(data[n, c, y - pt, x - pl, i]),
                                 tirx.const(spec.x_zp + spec.shift, udt))
    padded = te.compute((spec.n, spec.c // b, spec.h + pt + pb, wp, b), _pad, name="pad")
    ry = te.reduce_axis((0, spec.kh), name="ry")
    rg = te.reduce_axis((0, g), name="rg")
    rk = te.reduce_axis((0, d), name="rk")

    def _conv(n, c, y, x, o):
        v = padded[n, c, y * sh + ry, x * sw + rg * d + rk, o].astype("int32")
        return te.sum(v * weight[c, ry, rg, o, rk].astype("int32"), axis=[ry, rg, rk])
    conv = te.compute((spec.n, spec.c // b, oh, ow, b), _conv, name="conv")
    return _write_back(spec, conv, bias, rq, table)


def pack_vnni(spec: QDepthwiseSpec, w: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of the VNNI form from the (c, 1, kh, kw) int8 weight and (c,) int32 bias: the weight in
    windows of `depth` taps (0 past kw), the bias minus u(zp) * sum(w) per channel, wrapped to int32."""
    b, d, g = spec.block, spec.depth, spec.groups
    c, kh, kw = spec.c, spec.kh, spec.kw
    wt = np.zeros((c, kh, g * d), np.int16 if d == 2 else np.int8)
    wt[:, :, :kw] = w.reshape(c, kh, kw)
    wt = np.ascontiguousarray(wt.reshape(c // b, b, kh, g, d).transpose(0, 2, 3, 1, 4))
    corr = (spec.x_zp + spec.shift) * w.reshape(c, -1).astype(np.int64).sum(1)
    return wt, (bias.astype(np.int64) - corr).astype(np.int32).reshape(c // b, b)


VNNI_MAX_ACC = 16


def vnni_tile_fits(spec: QDepthwiseSpec, tile: Tuple[int, int]) -> bool:
    """Whether the VNNI form can take register tile (reg_oc, reg_w): both divide their axes (tensorize wants
    no predicate)."""
    roc, rw = tile
    return (spec.c // spec.block) % roc == 0 and output_hw(spec.conv)[1] % rw == 0


def vnni_tile(spec: QDepthwiseSpec) -> Tuple[int, int]:
    """The VNNI form's default tile: one channel block x the widest divisor of the output width up to
    VNNI_MAX_ACC pixels."""
    ow = output_hw(spec.conv)[1]
    return 1, max(d for d in range(1, VNNI_MAX_ACC + 1) if ow % d == 0)


def _schedule_vnni(func: tirx.PrimFunc, spec: QDepthwiseSpec, tile: Optional[Tuple[int, int]]) -> tirx.PrimFunc:
    """The VNNI conv's schedule (qconv2d_schedule.tile_full_blocks): reg_oc channel blocks x reg_w pixels of
    accumulators, the windows' (b channels x depth taps) tensorized with one shuffle + vpdpbusd / vpdpwssd."""
    from tvm import s_tir

    from .qconv2d import sched_pad
    from .qconv2d_schedule import tile_full_blocks
    oh, ow = output_hw(spec.conv)
    roc, rw = tile if tile and vnni_tile_fits(spec, tile) else vnni_tile(spec)
    sch = s_tir.Schedule(func)
    conv = sch.get_sblock("conv")
    windows = sch.get_loops(conv)[6]            # (n, c, y, x, o, ry, rg, rk)
    pre = sch.get_sblock("pre_table") if staged_table(spec) else None
    j, init = tile_full_blocks(sch, conv, sch.get_sblock("out"), roc, rw, True, inner=1, pre=pre, block=spec.block)
    sch.unroll(windows)
    sch.tensorize(j, register_depthwise_intrinsic(spec.x_dtype == "int16", spec.block))
    sch.vectorize(sch.get_loops(init)[-1])
    sched_pad(sch)
    return sch.mod["main"].with_attr(SCHEDULE_ATTR, "tiled")


def make_qdepthwise(spec: QDepthwiseSpec, tile: Optional[Tuple[int, int]] = None) -> tirx.PrimFunc:
    """Scheduled PrimFunc (data, weight, bias, [rq], out); the weight and bias of the VNNI form from pack_vnni."""
    from .conv2d_schedule import schedule_conv2d
    b = spec.block
    data = te.placeholder((spec.n, spec.c // b, spec.h, spec.w, b), spec.x_dtype, "data")
    wshape = (spec.c // b, spec.kh, spec.groups, b, spec.depth) if spec.vnni else (spec.c // b, spec.kh, spec.kw, b)
    weight = te.placeholder(wshape, "int16" if spec.vnni and spec.depth == 2 else "int8", "weight")
    bias = te.placeholder((spec.c // b, b), "int32", "bias")
    args = [data, weight, bias]
    rq = None
    if spec.rq is not None:
        rq = te.placeholder((3, spec.c // b, b), requant_dtype(spec.rq), "rq")
        args.append(rq)
    table = table_args(spec).get("table")
    args += [table] if table is not None else []
    out = (qdepthwise_vnni_te if spec.vnni else qdepthwise_te)(spec, data, weight, bias, rq, table)
    func = te.create_prim_func(args + [out])
    return finalize(_schedule_vnni(func, spec, tile) if spec.vnni else schedule_conv2d(func, spec.conv, tile))
