"""The INT8 conv2d on Intel AMX tiles, for kernels 3 or 4 taps wide on 8-bit data in 16-channel blocks (the
3x3 convs of detectors and ResNets): the same spec, bias, requants, residual and table as the VNNI kernel
(qconv2d.py, `QConvSpec.amx`), another weight form and accumulation.

Why it fits the tiles without an im2col: in the NCHW16c layout the 4 horizontally adjacent pixels x..x+3 of one
channel block are 64 contiguous bytes. An A tile row (64 bytes of reduction) is then one output pixel's 4 taps
(kx = 0..3; a 3-wide kernel's 4th tap weighs 0) x 16 channels of one kernel row, and the rows of 16 neighbouring
output pixels lie `stride` x 16 bytes apart in the padded data: one tileloadd with that row stride reads the
tile. The B tile of (output block, input block, kernel row) is the weight in the form (16 q, 16 j, 4 t),
reduction element k = 4 q + t = 16 kx + c (compiler/layouts.pack_amx_conv_weight). tdpbusd adds 16 pixels x 16
channels x 64 products per instruction; the intrinsic (amx.register_conv) steps over input blocks x kernel
rows with a block of rm pixel tiles x rn channel blocks in the tile registers.

int16 data (`--keep-16bit` layers): AMX multiplies bytes only, so the pad stage splits each u = x + 32768 into two
byte planes, channel block 2 cb its high bytes and 2 cb + 1 its low ones, and the int16 intrinsic
(amx.register_conv, planes 2) accumulates both planes' products in their own tiles and returns 256 high + low (exact in
int32 arithmetic; the +32768 is in the bias like any zero point, QConvSpec.xz).

The accumulator row is the output width rounded up to 16 pixels (`acc_width`); the pixels past it are computed
and never written, and the pad stage widens each padded row (`padded_width`) so that their reads stay inside it.
"""
from __future__ import annotations

from typing import Tuple

from tvm import s_tir, te, tirx

from . import amx
from .common import SCHEDULE_ATTR, block_or_none, divisors

TAPS = amx.DEPTH // 16          # horizontal taps per tile row: 64 bytes of 16-channel pixels


def fits(spec) -> bool:
    """Whether the AMX conv takes `spec` (a QConvSpec): 8-bit data in 16-channel blocks, at least 2 of them (a
    smaller reduction leaves the tiles idle; int16 data's two planes make one block enough), a kernel 3 or 4 taps
    wide (narrower ones waste most of each tile row), no dilation, an output in 16-channel blocks."""
    return (spec.x_dtype in ("uint8", "int8", "int16") and spec.in_block == 16
            and spec.cip // 16 >= (1 if spec.x_dtype == "int16" else 2)
            and spec.kw in (3, TAPS) and tuple(spec.dilation) == (1, 1) and spec.out_block == 16)


def acc_width(ow: int) -> int:
    return -(-ow // amx.ROWS) * amx.ROWS


def padded_width(spec, ow: int) -> int:
    """Columns of the padded data: the conv's own, or as many as the last tile row's 4 taps read."""
    pl, pr = spec.pad[1], spec.pad[3]
    return max(spec.w + pl + pr, (acc_width(ow) - 1) * spec.stride[1] + TAPS)


def weight_shape(spec) -> Tuple[int, ...]:
    return (spec.cop // 16, spec.cip // 16, spec.kh, 16, 16, 4)


def pick_tile16(n16: int) -> Tuple[int, int]:
    """int16 data: one 16-pixel tile (its two planes' A tiles and accumulators fill the registers) x 2 channel
    blocks where they pair up."""
    return (1, 2) if n16 % 2 == 0 else (1, 1)


def pick_tile(ow: int, n16: int) -> Tuple[int, int]:
    """(rm 16-pixel tiles, rn 16-channel blocks) per block of accumulators: rm dividing the accumulator row's
    tiles, rn the output's blocks, within the 8 tile registers; fewest tile loads per tdpbusd, an A tile (16
    overlapping rows, each across two cache lines) counting twice a B tile. Measured on 3x3 convs (us,
    1 thread, Sapphire Rapids): 64->64 @40 1x2 79 / 3x1 100 / 1x1 128; 80->80 @40 3x1 149 / 1x1 176;
    64->64 @20 2x2 27 / 1x2 29; the VNNI kernel 174, 394, 46."""
    tiles = acc_width(ow) // amx.ROWS
    return min(((rm, rn) for rm in divisors(tiles) for rn in divisors(n16) if amx.block_fits(rm, rn)),
               key=lambda t: ((2 * t[0] + t[1]) / (t[0] * t[1]), -t[1]))


def tile_ok(tile, ow: int, n16: int, wide: bool = False) -> bool:
    return (tile is not None and len(tile) == 2 and amx.block_fits(*tile)
            and (acc_width(ow) // amx.ROWS) % tile[0] == 0 and n16 % tile[1] == 0
            and (not wide or (tile[0] == 1 and tile[1] <= 2)))


def default_tile(spec, ow: int) -> Tuple[int, int]:
    n16 = spec.cop // 16
    return pick_tile16(n16) if spec.x_dtype == "int16" else pick_tile(ow, n16)


def planes_te(spec, data, width: int):
    """int16 data padded with its zero point, `width` columns, as two uint8 planes per channel block: block 2 cb
    + g holds byte 1 - g of x + 32768."""
    pt, pl, pb, pr = spec.pad
    cib = spec.cip // 16

    def _planes(n, c, y, x, i):
        v = tirx.if_then_else(tirx.all(y >= pt, y < pt + spec.h, x >= pl, x < pl + spec.w),
                              data[n, c // 2, y - pt, x - pl, i], tirx.const(spec.x_zp, "int16"))
        u = v.astype("int32") + amx.INT16_OFFSET
        return tirx.if_then_else(c % 2 == 0, u >> 8, u & 255).astype("uint8")
    return te.compute((spec.n, 2 * cib, spec.h + pt + pb, width, 16), _planes, name="pad")


def conv_te(spec, data, weight, oh: int, ow: int):
    """The int32 accumulator (n, cop/16, oh, acc_width(ow), 16) of the data, padded (padded_width columns; int16
    data as two byte planes, planes_te), and the weight in weight_shape."""
    from .qconv2d import pad_te
    width = padded_width(spec, ow)
    sh, sw = spec.stride
    wide = spec.x_dtype == "int16"
    rcb = te.reduce_axis((0, (2 if wide else 1) * spec.cip // 16), "rcb")     # int16: the planes, high bytes even
    rh = te.reduce_axis((0, spec.kh), "rh")
    rq = te.reduce_axis((0, 16), "rq")
    rt = te.reduce_axis((0, 4), "rt")
    if wide:
        planes = planes_te(spec, data, width)

        def product(n, o, y, x, j):
            return planes[n, rcb, y * sh + rh, x * sw + rq // 4, rq % 4 * 4 + rt].astype("int32") \
                * tirx.if_then_else(rcb % 2 == 0, 256, 1) * weight[o, rcb // 2, rh, rq, j, rt].astype("int32")
    else:
        padded = pad_te(spec, data, width)

        def product(n, o, y, x, j):
            return padded[n, rcb, y * sh + rh, x * sw + rq // 4, rq % 4 * 4 + rt].astype("int32") \
                * weight[o, rcb, rh, rq, j, rt].astype("int32")
    return te.compute((spec.n, spec.cop // 16, oh, acc_width(ow), 16),
                      lambda *i: te.sum(product(*i), axis=[rcb, rh, rq, rt]), name="conv")


def schedule(func: tirx.PrimFunc, spec, tile=None) -> tirx.PrimFunc:
    """Parallel over (n, output block tile, row); per block of rm 16-pixel tiles x rn channel blocks the AMX
    intrinsic over the whole reduction, then the write-back of the block's valid pixels (16 lanes; a staged
    table lookup over each pixel's 16 channels)."""
    from .qconv2d import output_hw, sched_pad
    _, ow = output_hw(spec)
    n16, wide = spec.cop // 16, spec.x_dtype == "int16"
    rm, rn = tile if tile_ok(tile, ow, n16, wide) else default_tile(spec, ow)
    sch = s_tir.Schedule(func)
    conv = sch.get_sblock("conv")
    n, o, y, x, j, *red = sch.get_loops(conv)
    xo, xi = sch.split(x, [None, amx.ROWS * rm])
    if rn > 1:
        oo, at = sch.split(o, [None, rn])
        sch.reorder(n, oo, y, xo, at, xi, j, *red)
    else:
        oo, at = o, xi
        sch.reorder(n, oo, y, xo, xi, j, *red)
    for blk in filter(None, (block_or_none(sch, b) for b in ("pre_table", "out"))):     # pre_table: staged
        sch.reverse_compute_at(blk, xo)
        sch.vectorize(sch.get_loops(blk)[-1])
    sch.parallel(sch.fuse(n, oo, y))
    init = sch.decompose_reduction(conv, at)
    sch.vectorize(sch.get_loops(init)[-1])
    cib, kh, sw = spec.cip // 16, spec.kh, spec.stride[1]
    sch.tensorize(at, amx.register_conv(rm, rn, cib, kh, sw, 2 if wide else 1))
    sched_pad(sch)
    return sch.mod["main"].with_attr(SCHEDULE_ATTR, "amx")
