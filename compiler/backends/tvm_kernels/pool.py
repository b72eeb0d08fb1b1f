"""Max / average pool2d and global average / max pool in the blocked NCHW{b}c layout (or plain NCHW, block 0).

Input ``(n, c//b, h, w, b)`` (or ``(n, c, h, w)``), output the same layout with pooled spatial dims.  Padding is
implicit (max pads with -inf; avg divides by the number of in-image elements unless ``count_include_pad``, in
which case by the number of elements inside the padded image, like ONNX / PyTorch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
from tvm import s_tir, te, tirx

from .common import ACC_SCOPE, SCHEDULE_ATTR, finalize

__all__ = ["PoolSpec", "pool2d_te", "make_pool2d", "pool_out_hw", "pool_in_shape", "pool_out_shape",
           "pool2d_reference", "IntGlobalSumSpec", "make_int_global_sum"]


@dataclass(frozen=True)
class PoolSpec:
    """kind in {"max", "avg", "global_avg", "global_max"}; stride=(sh, sw); pad=(top, left, bottom, right);
    block = channel block of the layout (0 = plain NCHW).  Global kinds ignore kh/kw/stride/pad."""

    kind: str
    n: int
    c: int
    h: int
    w: int
    kh: int = 1
    kw: int = 1
    stride: Tuple[int, int] = (1, 1)
    pad: Tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: Tuple[int, int] = (1, 1)
    block: int = 16
    count_include_pad: bool = False
    ceil_mode: bool = False
    dtype: str = "float32"

    def __post_init__(self):
        if self.kind not in ("max", "avg", "global_avg", "global_max"):
            raise ValueError(self.kind)
        if self.block and self.c % self.block:
            raise ValueError(f"c={self.c} not divisible by block={self.block}")


def _window(spec: PoolSpec):
    if spec.kind.startswith("global"):
        return spec.h, spec.w, (1, 1), (0, 0, 0, 0), (1, 1)
    return spec.kh, spec.kw, spec.stride, spec.pad, spec.dilation


def pool_out_hw(spec: PoolSpec) -> Tuple[int, int]:
    kh, kw, (sh, sw), (pt, pl, pb, pr), (dh, dw) = _window(spec)
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if spec.ceil_mode:
        oh = -(-(spec.h + pt + pb - eh) // sh) + 1
        ow = -(-(spec.w + pl + pr - ew) // sw) + 1
        # the last window must start inside the image or the left padding (PyTorch / ONNX rule)
        if (oh - 1) * sh >= spec.h + pt:
            oh -= 1
        if (ow - 1) * sw >= spec.w + pl:
            ow -= 1
    else:
        oh = (spec.h + pt + pb - eh) // sh + 1
        ow = (spec.w + pl + pr - ew) // sw + 1
    return oh, ow


def pool_in_shape(spec: PoolSpec):
    if spec.block:
        return (spec.n, spec.c // spec.block, spec.h, spec.w, spec.block)
    return (spec.n, spec.c, spec.h, spec.w)


def pool_out_shape(spec: PoolSpec):
    oh, ow = pool_out_hw(spec)
    if spec.block:
        return (spec.n, spec.c // spec.block, oh, ow, spec.block)
    return (spec.n, spec.c, oh, ow)


UNROLLED_WINDOW = 64        # a max pool's window of at most this many values may be one expression (`unrolled`)


def pool2d_te(spec: PoolSpec, x: te.Tensor, unrolled: bool = False) -> te.Tensor:
    """Stages ``pool`` (max / sum reduction) and ``out`` (identity for max, divide by the count for avg).
    `unrolled` (a max pool whose window has at most UNROLLED_WINDOW values): one stage, each output the maximum
    of its window's loads written out as one expression, an injective computation (on a GPU a thread per
    output) where the reduction got from dlight's GPU schedule a block of 256 threads per output for its 9 or
    25 values (6.4 million blocks for ResNet-18's pool at batch 32)."""
    dt = spec.dtype
    kh, kw, (sh, sw), (pt, pl, pb, pr), (dh, dw) = _window(spec)
    oh, ow = pool_out_hw(spec)
    oshape = pool_out_shape(spec)
    if unrolled:
        assert spec.kind == "max" and kh * kw <= UNROLLED_WINDOW, (spec.kind, kh, kw)
        # int64 extents, as Relax's legalized operations have theirs: FuseTIR maps a tensor shared with a fused
        # elementwise consumer to one buffer and requires the same shape types
        return te.compute([tirx.IntImm("int64", d) for d in oshape], lambda *i: _window_max(spec, x, i),
                          name="pool")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    is_max = spec.kind in ("max", "global_max")
    padded = any(spec.pad) and not spec.kind.startswith("global")
    need_check = padded or spec.ceil_mode
    neutral = tirx.min_value(dt) if is_max else tirx.const(0.0, dt)

    def _load(idx, y, xx):
        yy, xi = y * sh + ry * dh - pt, xx * sw + rx * dw - pl
        full = (*idx[:2], yy, xi, *idx[2:])
        if not need_check:
            return x[full]
        cond = tirx.all(yy >= 0, yy < spec.h, xi >= 0, xi < spec.w)
        return tirx.if_then_else(cond, x[full], neutral)

    def _pool(*i):
        n, c, y, xx = i[:4]
        v = _load((n, c) + tuple(i[4:]), y, xx)
        return te.max(v, axis=[ry, rx]) if is_max else te.sum(v, axis=[ry, rx])

    pool = te.compute(oshape, _pool, name="pool")
    if is_max:
        return te.compute(oshape, lambda *i: pool[i], name="out")

    def _count(y, xx):
        if spec.kind == "global_avg" or not need_check:
            return tirx.const(float(kh * kw), dt)
        lo_h, hi_h = (-pt, spec.h + pb) if spec.count_include_pad else (0, spec.h)
        lo_w, hi_w = (-pl, spec.w + pr) if spec.count_include_pad else (0, spec.w)
        # windows with dilation: count positions r in [0, kh) with lo <= y*sh - pt + r*dh < hi
        y0, x0 = y * sh - pt, xx * sw - pl
        ch = tirx.Cast(dt, _count_1d(y0, kh, dh, lo_h, hi_h))
        cw = tirx.Cast(dt, _count_1d(x0, kw, dw, lo_w, hi_w))
        return ch * cw

    return te.compute(oshape, lambda *i: pool[i] / _count(i[2], i[3]), name="out")


def _window_max(spec: PoolSpec, x: te.Tensor, i: tuple) -> tirx.PrimExpr:
    """The maximum of output i's window as one expression (padding and ceil_mode positions the dtype's lowest
    value, as the reduction's neutral element)."""
    kh, kw, (sh, sw), (pt, pl, _, _), (dh, dw) = _window(spec)
    n, c, y, xx = i[:4]
    neutral = tirx.min_value(spec.dtype)
    best = None
    for r in range(kh):
        for s in range(kw):
            yy, xi = y * sh + r * dh - pt, xx * sw + s * dw - pl
            v = x[(n, c, yy, xi, *i[4:])]
            if any(spec.pad) or spec.ceil_mode:
                v = tirx.if_then_else(tirx.all(yy >= 0, yy < spec.h, xi >= 0, xi < spec.w), v, neutral)
            best = v if best is None else tirx.max(best, v)
    return best


def _count_1d(start, k, d, lo, hi):
    """Number of r in [0, k) with lo <= start + r*d < hi (as an int expression)."""
    # first valid r: ceil((lo - start) / d) clamped at 0; last valid r: floor((hi - 1 - start) / d) clamped at k-1
    first = te.max(tirx.floordiv(lo - start + d - 1, d), 0)
    last = te.min(tirx.floordiv(hi - 1 - start, d), k - 1)
    return te.max(last - first + 1, 1)


def make_pool2d(spec: PoolSpec) -> tirx.PrimFunc:
    """Scheduled PrimFunc (x, out): parallel over (n, c-block, oh), vectorized over the channel block,
    window accumulated in registers (local scope) and written back with the epilogue."""
    x = te.placeholder(pool_in_shape(spec), spec.dtype, name="x")
    func = te.create_prim_func([x, pool2d_te(spec, x)])
    for attempt in ("tiled", "simple"):
        sch = s_tir.Schedule(func)
        try:
            pool, out = sch.get_sblock("pool"), sch.get_sblock("out")
            loops = sch.get_loops(pool)
            if spec.block:
                n, c, y, xx, i, ry, rx = loops
                sch.reorder(n, c, y, xx, ry, rx, i)
            else:
                n, c, y, xx, ry, rx = loops
                i = None
            if attempt == "tiled":
                sch.set_scope(pool, 0, ACC_SCOPE)
                sch.reverse_compute_at(out, xx)
                if i is not None:
                    sch.vectorize(i)
                    sch.vectorize(sch.get_loops(out)[-1])
                sch.unroll(rx)
                sch.parallel(sch.fuse(n, c, y))
                sch.decompose_reduction(pool, ry)
            else:
                sch.parallel(sch.fuse(n, c, y))
                ol = sch.get_loops(out)
                sch.parallel(sch.fuse(*ol[:3]))
            return finalize(sch.mod["main"].with_attr(SCHEDULE_ATTR, attempt))
        except Exception:  # pragma: no cover
            pass
    return finalize(func.with_attr(SCHEDULE_ATTR, "none"))


def pool2d_reference(x: np.ndarray, spec: PoolSpec) -> np.ndarray:
    """numpy NCHW reference."""
    kh, kw, (sh, sw), (pt, pl, pb, pr), (dh, dw) = _window(spec)
    oh, ow = pool_out_hw(spec)
    n, c, h, w = x.shape
    is_max = spec.kind in ("max", "global_max")
    big = max(pb, (oh - 1) * sh + dh * (kh - 1) + 1 - h - pt, 0)
    bigw = max(pr, (ow - 1) * sw + dw * (kw - 1) + 1 - w - pl, 0)
    fill = -np.inf if is_max else 0.0
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, big), (pl, bigw)), constant_values=fill)
    mask = np.pad(np.ones((h, w)), ((pt, big), (pl, bigw)))
    if spec.count_include_pad:
        mask = np.zeros_like(mask)
        mask[: pt + h + pb, : pl + w + pr] = 1
    out = np.empty((n, c, oh, ow))
    for y in range(oh):
        for xx in range(ow):
            win = xp[:, :, y * sh: y * sh + dh * (kh - 1) + 1: dh, xx * sw: xx * sw + dw * (kw - 1) + 1: dw]
            if is_max:
                out[:, :, y, xx] = win.max(axis=(2, 3))
            else:
                m = mask[y * sh: y * sh + dh * (kh - 1) + 1: dh, xx * sw: xx * sw + dw * (kw - 1) + 1: dw]
                out[:, :, y, xx] = win.sum(axis=(2, 3)) / max(m.sum(), 1)
    return out.astype(x.dtype)


# ----------------------------------------------------------------------------------------------------------------
# integer global average pool as the dyadic pass writes it: cast to int32, sum over (h, w), requant
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IntGlobalSumSpec:
    """int32 sum over (h, w) of 8-bit data [+ a fused requant (``qconv2d.Requant``; its (3, cop//16, 16) table
    is the kernel's second parameter)]; layout (n, c//b, h, w, b) in and (n, c//b, 1, 1, b) out with b 16 or 8
    (the int8 conv's blocks, compiler.layouts.int_out_block), or plain NCHW with block 0.  The sum is exact in
    int32 (h * w < 2^23; 2^16 for int16 data)."""

    n: int
    c: int
    h: int
    w: int
    block: int
    dtype: str
    rq: object = None

    def __post_init__(self):
        if self.block not in (0, 8, 16) or (self.block and self.c % self.block) or \
                self.h * self.w >= (2**16 if self.dtype == "int16" else 2**23):
            raise ValueError(f"int global sum {self}")

    @property
    def out_dtype(self) -> str:
        return self.rq.dtype if self.rq is not None else "int32"

    def in_shape(self):
        b = self.block
        return (self.n, self.c // b, self.h, self.w, b) if b else (self.n, self.c, self.h, self.w)

    def out_shape(self):
        b = self.block
        return (self.n, self.c // b, 1, 1, b) if b else (self.n, self.c, 1, 1)


def make_int_global_sum(spec: IntGlobalSumSpec) -> tirx.PrimFunc:
    """Scheduled PrimFunc (x, [rq table], out): parallel over channel blocks, the window summed in registers
    over the 16 channels of a block, the requant on the way out."""
    from .qconv2d import requant_dtype, requant_te
    x = te.placeholder(spec.in_shape(), spec.dtype, name="x")
    ry = te.reduce_axis((0, spec.h), name="ry")
    rx = te.reduce_axis((0, spec.w), name="rx")
    if spec.block:
        acc = te.compute(spec.out_shape(), lambda n, cb, y, xx, i: te.sum(
            x[n, cb, ry, rx, i].astype("int32"), axis=[ry, rx]), name="pool")
        b = spec.block        # the requant table is in 16-channel blocks: an 8-block is half of one
        chan = (lambda cb, i: (cb, i)) if b == 16 else (lambda cb, i: (cb // 2, cb % 2 * 8 + i))  # noqa: E731
    else:
        acc = te.compute(spec.out_shape(), lambda n, ch, y, xx: te.sum(
            x[n, ch, ry, rx].astype("int32"), axis=[ry, rx]), name="pool")
        chan = lambda ch: (ch // 16, ch % 16)  # noqa: E731
    args = [x]
    if spec.rq is not None:
        t = te.placeholder((3, -(-spec.c // 16), 16), requant_dtype(spec.rq), name="rq")
        args.append(t)
        out = te.compute(spec.out_shape(), lambda n, c, y, xx, *i: requant_te(acc[(n, c, y, xx, *i)], t,
                                                                              chan(c, *i), spec.rq), name="out")
    else:
        out = te.compute(spec.out_shape(), lambda *i: acc[i], name="out")
    func = te.create_prim_func(args + [out])
    sch = s_tir.Schedule(func)
    try:
        pool, o = sch.get_sblock("pool"), sch.get_sblock("out")
        loops = sch.get_loops(pool)
        if spec.block:
            n, c, y, xx, i, ry_, rx_ = loops
            sch.reorder(n, c, y, xx, ry_, rx_, i)
            sch.set_scope(pool, 0, ACC_SCOPE)
            sch.reverse_compute_at(o, xx)
            sch.vectorize(i)
            sch.vectorize(sch.get_loops(o)[-1])
            sch.decompose_reduction(pool, ry_)
        attempt = "tiled"
    except Exception:  # pragma: no cover
        sch, attempt = s_tir.Schedule(func), "none"
    return finalize(sch.mod["main"].with_attr(SCHEDULE_ATTR, attempt))
