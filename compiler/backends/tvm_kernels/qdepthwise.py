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

The products run in int32 lanes (one channel block per vector); the register tiling is the FP32 conv's
(conv2d_schedule.schedule_conv2d on the equivalent depthwise Conv2dSpec).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from tvm import te, tirx

from .common import finalize
from .conv2d import Conv2dSpec, output_hw
from .table import TABLE_INDEX, table_args, table_te
from .requant import Requant, requant_dtype, requant_te

__all__ = ["QDepthwiseSpec", "make_qdepthwise"]


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

    def __post_init__(self):
        if self.block not in (8, 16) or self.c % self.block:
            raise ValueError(f"block {self.block} for {self.c} channels")
        if self.x_dtype not in ("uint8", "int8", "int16"):
            raise ValueError(self.x_dtype)
        if self.table is not None and (self.rq is None or self.rq.dtype not in TABLE_INDEX):
            raise ValueError("a lookup table needs an 8- or 16-bit requant before it")

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

    def _out(n, c, y, x, o):
        v = conv[n, c, y, x, o] + bias[c, o]
        v = requant_te(v, rq, (c, o), spec.rq) if spec.rq is not None else v
        return table_te(v, table, spec.rq.dtype, spec.table) if spec.table is not None else v
    return te.compute(spec.out_shape(), _out, name="out")


def make_qdepthwise(spec: QDepthwiseSpec, tile: Optional[Tuple[int, int]] = None) -> tirx.PrimFunc:
    """Scheduled PrimFunc (data, weight, bias, [rq], out)."""
    from .conv2d_schedule import schedule_conv2d
    b = spec.block
    data = te.placeholder((spec.n, spec.c // b, spec.h, spec.w, b), spec.x_dtype, "data")
    weight = te.placeholder((spec.c // b, spec.kh, spec.kw, b), "int8", "weight")
    bias = te.placeholder((spec.c // b, b), "int32", "bias")
    args = [data, weight, bias]
    rq = None
    if spec.rq is not None:
        rq = te.placeholder((3, spec.c // b, b), requant_dtype(spec.rq), "rq")
        args.append(rq)
    table = table_args(spec).get("table")
    args += [table] if table is not None else []
    out = qdepthwise_te(spec, data, weight, bias, rq, table)
    func = te.create_prim_func(args + [out])
    return finalize(schedule_conv2d(func, spec.conv, tile))
