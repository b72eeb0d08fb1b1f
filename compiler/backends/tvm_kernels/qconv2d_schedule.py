"""The s_tir schedule of the INT8 VNNI conv (qconv2d.py): parallel over n, output-channel tile and row; a
register tile of reg_oc 16-channel accumulators x reg_w pixels, vpdpbusd tensorized over the 16 channels x 4
input channels (vpdpwssd over 16 x 2 for int16 data), the write-back (bias, requants, residual, table) computed at the tile. A 16-channel block output
(or plain NCHW) takes the write-back after the accumulator tile (reverse_compute_at); an 8-channel block output
writes each accumulator as two half blocks, the tile computed at the write-back's tile (compute_at)."""
from __future__ import annotations

import re

from tvm import s_tir, tirx

from .common import SCHEDULE_ATTR
from .qconv2d import QConvSpec, output_hw, pick_tile, sched_pad, staged_table
from .vnni import lanes


def tile_half_blocks(sch, conv, out, roc: int, rw: int, reduction: tuple, inner: tuple = (), unroll_rw=False):
    """The tile of an 8-channel block output: `out` (n, co/8, oh, ow, 8) split into 2 roc blocks x rw columns
    (parallel over n, tile, row), its 8 lanes vectorized, the conv's (roc x rw) accumulator tile computed at
    each tile (compute_at: the write-back's o // 2, o % 2 indexing defeats reverse_compute_at) with its loops
    ordered (reduction..., o, x, j, inner...) by block variable name (unit loops are gone), o and x unrolled.
    Returns (the conv's loops by block variable name, the outermost of them: where the reduction decomposes)."""
    n, o, y, x, j = sch.get_loops(out)
    oo, oi = sch.split(o, [None, 2 * roc])
    xo, xi = sch.split(x, [None, rw])
    sch.reorder(n, oo, y, xo, oi, xi, j)
    sch.compute_at(conv, xo)
    sch.unroll(oi)
    sch.unroll(xi)
    sch.vectorize(j)
    sch.parallel(sch.fuse(n, oo, y))
    loops = sch.get_loops(conv)[2:]
    realize = sch.get(loops[-1]).body
    binds = [(iv.var.name, set(re.findall(r"\w+", str(v)))) for iv, v in zip(realize.block.iter_vars,
                                                                          realize.iter_values)]
    lp = {name: loop for loop in loops for name, used in binds if sch.get(loop).loop_var.name in used}
    order = [lp[k] for k in (*reduction, "v_o", "v_x", "v_j", *inner) if k in lp]
    sch.reorder(*order)
    for k in ("v_o", "v_x") + (("v_rw",) if unroll_rw else ()):
        if k in lp:
            sch.unroll(lp[k])
    return lp, order[0]


def tile_full_blocks(sch, conv, out, roc: int, rw: int, blocked_out: bool, inner: int = 0, unroll_rw=False,
                     vectorize_j=False, pre=None, block: int = 16):
    """The tile of a 16-channel block (or plain NCHW) output: the conv's loops (n, o, y, x, j, reduction...,
    `inner` innermost ones) split into roc 16-channel accumulators x rw pixels, ordered (n, o tile, y, x tile,
    reduction..., o, x, j, inner...), o and x unrolled, parallel over (n, o tile, y); the write-back after each
    tile (reverse_compute_at, its lanes vectorized) for a blocked output, else its own parallel loop nest; j
    vectorized when `vectorize_j` (before the reduction decomposes, as vectorize needs). With `pre` (a staged
    table lookup, qconv2d.write_back_te): `pre` at each tile, 16 lanes wide, then the lookup `out` over the
    tile's pixels `byte_lookup_lanes` at a time. Returns (the j loop, the reduction's init block)."""
    n, o, y, x, j, *rest = sch.get_loops(conv)
    reduction, tail = rest[:len(rest) - inner], rest[len(rest) - inner:]
    oo, oi = sch.split(o, [None, roc])
    xo, xi = sch.split(x, [None, rw])
    sch.reorder(n, oo, y, xo, *reduction, oi, xi, j, *tail)
    if blocked_out:
        # the accumulator tile stays in the default scope: below 1 KiB (< 16 accumulators) it is then a stack
        # array, where a "local" buffer is a workspace allocation per parallel iteration
        if pre is not None:
            sch.reverse_compute_at(pre, xo)
            sch.vectorize(sch.get_loops(pre)[-1])
            lookup_at(sch, out, xo, rw, block)
        else:
            sch.reverse_compute_at(out, xo)
            sch.vectorize(sch.get_loops(out)[-1])
    else:
        sch.parallel(sch.fuse(*sch.get_loops(out)[:3]))
    if vectorize_j:
        sch.vectorize(j)
    sch.unroll(xi)
    sch.unroll(oi)
    if unroll_rw:
        sch.unroll(reduction[2])        # (rcb, rh, rw, ...): the kernel window's columns
    sch.parallel(sch.fuse(n, oo, y))
    return j, sch.decompose_reduction(conv, reduction[0])


def byte_lookup_lanes(rw: int, block: int = 16) -> int:
    """Lanes per table lookup over a tile row of rw pixels of `block` channels: 64 (one permute pair) where they
    divide it, else 32, 16 or 8. A 16-lane lookup costs what a 64-lane one does: widen the index, two permutes, a blend,
    narrow (a 1x1 16->16 conv at 112x112 with a SiLU table: 84 us at 16 lanes, 56 at 64; 48 without the table)."""
    return next(w for w in (64, 32, 16, 8) if rw * block % w == 0)


def lookup_at(sch, out, loop, rw: int, block: int) -> None:
    """A staged lookup `out` after each tile (reverse_compute_at `loop`), its rows of rw pixels of `block`
    channels looked up `byte_lookup_lanes` at a time."""
    sch.reverse_compute_at(out, loop)
    *_, ox, oj = sch.get_loops(out)
    width = byte_lookup_lanes(rw, block)
    sch.vectorize(oj if width == block else sch.split(sch.fuse(ox, oj), [None, width])[1])


def schedule_qconv2d(func: tirx.PrimFunc, spec: QConvSpec, tile=None) -> tirx.PrimFunc:
    oh, ow = output_hw(spec)
    roc, rw = tile or pick_tile(spec.cop // 16, ow)
    sch = s_tir.Schedule(func)
    conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
    pre = sch.get_sblock("pre_table") if staged_table(spec) and spec.blocked_out else None
    intrin = lanes(spec.x_dtype)[2]
    if spec.out_block == 8:
        if (spec.cop // 16) % roc or ow % rw:       # the accumulator tile must divide the output
            roc, rw = pick_tile(spec.cop // 16, ow)
        lp, first = tile_half_blocks(sch, conv, out if pre is None else pre, roc, rw,
                                     ("v_rcb", "v_rh", "v_rw", "v_rq"), ("v_rt",), spec.kw > 1)
        if pre is not None:     # the lookup after each tile, over its rows of rw 8-channel pixels
            lookup_at(sch, out, sch.get_loops(pre)[1], rw, 8)
        init = sch.decompose_reduction(conv, first)
        sch.tensorize(lp["v_j"], intrin)
        sch.vectorize(sch.get_loops(init)[-1])
        sched_pad(sch)
        return sch.mod["main"].with_attr(SCHEDULE_ATTR, "tiled")
    j, init = tile_full_blocks(sch, conv, out, roc, rw, spec.blocked_out, inner=1, unroll_rw=spec.kw > 1, pre=pre)
    sch.tensorize(j, intrin)
    sch.vectorize(sch.get_loops(init)[-1])
    sched_pad(sch)
    return sch.mod["main"].with_attr(SCHEDULE_ATTR, "tiled")
