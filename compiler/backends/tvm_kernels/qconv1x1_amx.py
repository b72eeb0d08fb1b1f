"""The 1x1 conv on int16 data on Intel AMX tiles (`QConvSpec.amx` for a 1x1 conv; the 3x3 ones:
qconv2d_amx.py). The VNNI kernel multiplies int16 data with vpdpwssd, 32 products per instruction (half of
vpdpbusd's; a 1x1 conv at 16 bits takes 2.4-3.3x its 8-bit time). AMX multiplies bytes only, so each int16 value
u = x + 32768 (uint16) is split into its bytes, u = 256 hi + lo, and the conv is 256 conv(hi) + conv(lo): two
uint8 x int8 products on the tiles, exact in int32 arithmetic (both sides wrap alike).

A 1x1 conv with stride 1 is a matmul over the flattened pixels, so the kernel is built on its image as one row
(`flat`: h = 1, w = h w) and its data, residual and output parameters then declared in their real shapes
(common.reshape_params: the same bytes). For each tile of 16 pixels a `rows` stage gathers
their channels (16-channel blocks of the NCHW16c data, the reduction padded to 64) into 2 groups of 16 rows,
the high bytes and the low bytes; the rows intrinsic (amx.register_rows) multiplies them by rn 16-channel blocks
of the weight in the vnni_rows form (cop/16, kp/4, 16, 4) (compiler/layouts.pack_rows_conv_weight) over the
whole reduction, and the write-back combines (hi << 8) + lo and runs the VNNI conv's epilogue
(qconv2d.write_back_te) on the block's pixels. The +32768 is folded into the bias like any zero point
(QConvSpec.xz).
"""
from __future__ import annotations

import dataclasses
from typing import Tuple

from tvm import s_tir, te, tirx

from . import amx
from .common import SCHEDULE_ATTR, block_or_none, reshape_params

# Which convs: int16 1x1 convs, 1 thread, Sapphire Rapids, us (vnni16 / amx): 64->64 @40x40 88 / 69, 112->672
# @14x14 168 / 93, 160->960 @7x7 85 / 40, 960->160 @7x7 76 / 27, 672->112 @14x14 110 / 51 (7 output blocks: one
# per call), 480->80 @14x14 56 / 36 (5); slower: 80->240 @14x14 37 / 48 (15 blocks, the reduction padded to 128),
# 64->48 @9x9 5.4 / 6.8 (3 blocks).
MIN_CHANNELS = 64               # a shorter reduction leaves most of each 64-byte tile row empty
ODD_BLOCKS_CHANNELS = 256       # with an odd number of output blocks, at least this many input channels


def fits(spec) -> bool:
    """A 1x1 conv, stride 1, no padding, on int16 data in 16-channel blocks with at least MIN_CHANNELS input
    channels, written in 16-channel blocks. An odd number of output blocks takes one per intrinsic call, which
    pays only for a long reduction (ODD_BLOCKS_CHANNELS)."""
    return (spec.kh == spec.kw == 1 and tuple(spec.stride) == (1, 1) and not any(spec.pad)
            and spec.x_dtype == "int16" and spec.in_block == 16 and spec.ci >= MIN_CHANNELS
            and spec.out_block == 16 and tuple(spec.dilation) == (1, 1)
            and (spec.cop // 16 % 2 == 0 or spec.ci >= ODD_BLOCKS_CHANNELS))


def flat(spec):
    """The same conv on the image as one row of h w pixels."""
    return dataclasses.replace(spec, h=1, w=spec.h * spec.w)


def make(spec, tile=None) -> tirx.PrimFunc:
    """The scheduled kernel of `spec` (QConvSpec.amx, a 1x1 conv): built on `flat(spec)`, its image-shaped
    parameters declared in `spec`'s shapes."""
    from .qconv2d import data_shape, out_shape, qconv2d_prim_func
    one_row = flat(spec)
    func = schedule(qconv2d_prim_func(one_row), one_row, tile)
    return reshape_params(func, {"data": (data_shape(one_row), data_shape(spec)),
                                 "residual": (out_shape(one_row), out_shape(spec)),
                                 "out": (out_shape(one_row), out_shape(spec))})


def depth(spec) -> int:
    """The reduction padded to a tile row."""
    return -(-spec.cip // amx.DEPTH) * amx.DEPTH


def weight_shape(spec) -> Tuple[int, ...]:
    return (spec.cop // 16, depth(spec) // 4, 16, 4)


def pick_tile(n16: int) -> Tuple[int]:
    """(rn,): 16-channel blocks per intrinsic call, 2 where they pair up (2 x 2 accumulators, 2 A and 2 B tiles)."""
    return (2,) if n16 % 2 == 0 else (1,)


def conv_te(spec, data, weight):
    """The accumulator (n, cop/16, 1, w, 16) int32 of the uint16-shifted data: (hi << 8) + lo of the two
    planes' products, through the `rows` and `conv` stages."""
    n, w, cip, kp = spec.n, spec.w, spec.cip, depth(spec)
    tiles = -(-w // amx.ROWS)

    def _rows(b, t, g, i, k):
        p = tirx.min(t * amx.ROWS + i, w - 1)           # the last tile's extra rows repeat a pixel
        v = data[b, tirx.min(k // 16, cip // 16 - 1), 0, p, k % 16].astype("int32") + amx.INT16_OFFSET
        return tirx.if_then_else(k < cip, tirx.if_then_else(g == 0, v >> 8, v & 255), 0).astype("uint8")
    rows = te.compute((n, tiles, 2, amx.ROWS, kp), _rows, name="rows")
    rk = te.reduce_axis((0, kp // 4), "rk")
    rt = te.reduce_axis((0, 4), "rt")
    acc = te.compute((n, tiles, 2, amx.ROWS, spec.cop // 16, 16), lambda b, t, g, i, o, j: te.sum(
        rows[b, t, g, i, rk * 4 + rt].astype("int32") * weight[o, rk, j, rt].astype("int32"), axis=[rk, rt]),
        name="conv")
    def _combine(b, o, y, x, j):
        t, i = x // amx.ROWS, x % amx.ROWS
        return (acc[b, t, 0, i, o, j] << 8) + acc[b, t, 1, i, o, j]
    return te.compute((n, spec.cop // 16, 1, w, 16), _combine, name="combine")


def schedule(func: tirx.PrimFunc, spec, tile=None) -> tirx.PrimFunc:
    """Parallel over (n, 16-pixel tile); per tile the rows stage once, then per rn output blocks the intrinsic
    and the write-back of those blocks (16 lanes; a staged table lookup after it)."""
    n16 = spec.cop // 16
    (rn,) = tile if tile and len(tile) == 1 and tile[0] in (1, 2) and n16 % tile[0] == 0 else pick_tile(n16)
    sch = s_tir.Schedule(func)
    sch.compute_inline(sch.get_sblock("combine"))
    stages = [b for b in ("pre_table", "out") if block_or_none(sch, b) is not None]
    wb = sch.get_sblock(stages[0])
    b, o, y, x, j = sch.get_loops(wb)
    xo, xi = sch.split(x, [None, amx.ROWS])
    oo, oi = sch.split(o, [None, rn])
    sch.reorder(b, y, xo, oo, oi, xi, j)
    sch.vectorize(j)
    tile_loop = sch.fuse(b, y, xo)
    sch.parallel(tile_loop)
    conv = sch.get_sblock("conv")
    sch.compute_at(conv, oo)
    rows = sch.get_sblock("rows")
    sch.compute_at(rows, tile_loop)
    sch.vectorize(sch.split(sch.get_loops(rows)[-1], [None, 16])[1])
    if len(stages) == 2:
        sch.reverse_compute_at(sch.get_sblock(stages[1]), oo)
        sch.vectorize(sch.get_loops(sch.get_sblock(stages[1]))[-1])
    first = sch.get_loops(conv)[2]          # under ((n, tile), output block tile)
    init = sch.decompose_reduction(conv, first)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(first, amx.register_rows(rn, depth(spec)))
    return sch.mod["main"].with_attr(SCHEDULE_ATTR, "amx")
