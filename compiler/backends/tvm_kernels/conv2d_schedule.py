"""Register-tiled s_tir schedules of the FP32 NCHW{b}c conv2d (tvm_kernels/conv2d.py): n, oc-block, oh, ow-block
outer and parallel; the reductions; then a register tile of reg_oc channel blocks x reg_w pixels, vectorized over
the channel block, with the epilogue computed at the tile."""
from __future__ import annotations

from typing import Optional, Tuple

from tvm import s_tir, tirx

from .common import ACC_SCOPE, SCHEDULE_ATTR, divisors
from .conv2d import Conv2dSpec, conv_kind, output_hw, weight_out_block

# ----------------------------------------------------------------------------------------------------------------
# schedules
# ----------------------------------------------------------------------------------------------------------------
MAX_ACC = 16  # vector accumulators in the register tile (AVX-512 has 32 regs; 28 accumulators spill)


def pick_tile(n_ocb: int, ow: int, max_acc: int = MAX_ACC) -> Tuple[int, int]:
    """(reg_oc, reg_w): output-channel blocks x output pixels held in registers; both divide their axis when
    possible.  Prefers ~14-16 accumulators and reg_oc == 2 (the measured sweet spot)."""
    best, best_score = (1, 1), -1e9
    for roc in divisors(n_ocb):
        if roc > 4:
            break
        for rw in divisors(ow):
            acc = roc * rw
            if acc > max_acc:
                continue
            score = acc - 0.75 * abs(roc - 2) - (2.0 if rw < 4 else 0.0)
            if score > best_score:
                best, best_score = (roc, rw), score
    roc, rw = best
    if roc * rw < 8 and ow > 8:
        # poor divisors (e.g. prime width): use a predicated 8-wide tile instead
        rw = 8
        roc = max(d for d in divisors(n_ocb) if d <= max(1, max_acc // rw))
    return roc, rw


def _sched_pad(sch: s_tir.Schedule, spec: Conv2dSpec):
    try:
        blk = sch.get_sblock("pad")
    except Exception:
        return
    loops = sch.get_loops(blk)
    if spec.in_block:
        n, c, y, x, i = loops
        sch.parallel(sch.fuse(n, c, y))
        sch.vectorize(i)
    else:
        n, c, y, x = loops
        sch.parallel(sch.fuse(n, c, y))


def _sched_tiled(sch: s_tir.Schedule, spec: Conv2dSpec, reg_oc: int, reg_w: int):
    """Register-tiled schedule shared by all kinds: n, oco, oh, owo | reductions | oci, owi, ob(vector)."""
    kind = conv_kind(spec)
    conv = sch.get_sblock("conv")
    out = sch.get_sblock("out")
    loops = sch.get_loops(conv)
    n, oc, y, x, o = loops[:5]
    red = loops[5:]
    oco, oci = sch.split(oc, [None, reg_oc])
    xo, xi = sch.split(x, [None, reg_w])
    sch.reorder(n, oco, y, xo, *red, oci, xi, o)
    sch.set_scope(conv, 0, ACC_SCOPE)
    sch.reverse_compute_at(out, xo)
    sch.vectorize(o)
    sch.unroll(xi)
    sch.unroll(oci)
    rx = red[2] if kind != "depthwise" else red[1]
    sch.unroll(rx)
    sch.parallel(sch.fuse(n, oco, y))
    ol = sch.get_loops(out)
    if spec.out_block:
        sch.vectorize(ol[-1])
    sch.decompose_reduction(conv, red[0])
    _sched_pad(sch, spec)


def _sched_simple(sch: s_tir.Schedule, spec: Conv2dSpec):
    """Fallback: parallel over (n, oc-block, oh), vectorized over the channel block, epilogue fused per row."""
    conv = sch.get_sblock("conv")
    out = sch.get_sblock("out")
    loops = sch.get_loops(conv)
    n, oc, y, x, o = loops[:5]
    red = loops[5:]
    sch.reorder(n, oc, y, *red, x, o)
    sch.vectorize(o)
    sch.parallel(sch.fuse(n, oc, y))
    sch.decompose_reduction(conv, red[0])
    _sched_pad(sch, spec)
    ol = sch.get_loops(out)
    sch.parallel(sch.fuse(*ol[:3]))
    if spec.out_block:
        sch.vectorize(ol[-1])


def schedule_conv2d(func: tirx.PrimFunc, spec: Conv2dSpec, tile: Optional[Tuple[int, int]] = None) -> tirx.PrimFunc:
    """Apply the register-tiled schedule (falling back to the simple one, then to the unscheduled function)."""
    oh, ow = output_hw(spec)
    ob = weight_out_block(spec)
    if tile is None:
        max_acc = MAX_ACC
        if conv_kind(spec) != "dense":
            max_acc = 8
        tile = pick_tile(spec.co // ob, ow, max_acc)
    for attempt in ("tiled", "simple"):
        sch = s_tir.Schedule(func)
        try:
            if attempt == "tiled":
                _sched_tiled(sch, spec, *tile)
            else:
                _sched_simple(sch, spec)
            return sch.mod["main"].with_attr(SCHEDULE_ATTR, attempt)
        except Exception:  # pragma: no cover - exercised only by unusual shapes
            pass
    return func.with_attr(SCHEDULE_ATTR, "none")
