"""Activation layout conversion NCHW <-> NCHW{b}c (and between block sizes), as TE helpers and scheduled PrimFuncs.

``NCHW{b}c`` means shape ``(n, c // b, h, w, b)`` with element ``[n, c // b, y, x, c % b]`` = logical ``[n, c, y, x]``.
A block of 0 means plain NCHW throughout this package.  Note: with h == w == 1 (after a global pool) the blocked
tensor has the same memory order as ``(n, c)``, so flattening needs no kernel.
"""
from __future__ import annotations

import numpy as np
from tvm import s_tir, te, tirx

from .common import finalize

__all__ = ["nchwc_index", "pack_nchwc_te", "unpack_nchwc_te", "repack_nchwc_te", "make_pack_nchwc", "make_unpack_nchwc",
           "make_repack_nchwc", "make_quantize_pack", "pack_nchwc_np", "unpack_nchwc_np"]


def nchwc_index(n, c, y, x, block: int) -> tuple:
    """Logical NCHW index (n, c, y, x) -> its NCHW{block}c index (n, c // block, y, x, c % block)."""
    return n, c // block, y, x, c % block


def pack_nchwc_te(x: te.Tensor, block: int, fill: int = 0) -> te.Tensor:
    """(n, c, h, w) -> (n, ceil(c/block), h, w, block); channels past c (when block does not divide c) hold
    ``fill``."""
    n, c, h, w = (int(v) for v in x.shape)
    if c % block == 0:
        return te.compute((n, c // block, h, w, block), lambda b, cb, y, xx, i: x[b, cb * block + i, y, xx],
                          name="pack_nchwc")
    return te.compute((n, -(-c // block), h, w, block),
                      lambda b, cb, y, xx, i: tirx.if_then_else(cb * block + i < c,
                                                                x[b, tirx.min(cb * block + i, c - 1), y, xx],
                                                                tirx.const(fill, x.dtype)), name="pack_nchwc")


def unpack_nchwc_te(x: te.Tensor, channels: int = None) -> te.Tensor:
    """(n, c//b, h, w, b) -> (n, channels, h, w); ``channels`` defaults to c (may be smaller to drop padding)."""
    n, cb, h, w, b = (int(v) for v in x.shape)
    channels = cb * b if channels is None else channels
    return te.compute((n, channels, h, w),
                      lambda bb, c, y, xx: x[bb, tirx.floordiv(c, b), y, xx, tirx.floormod(c, b)],
                      name="unpack_nchwc")


def repack_nchwc_te(x: te.Tensor, new_block: int) -> te.Tensor:
    """(n, c//b, h, w, b) -> (n, c//new_block, h, w, new_block)."""
    n, cb, h, w, b = (int(v) for v in x.shape)
    c = cb * b
    assert c % new_block == 0
    return te.compute((n, c // new_block, h, w, new_block),
                      lambda bb, o, y, xx, i: x[bb, tirx.floordiv(o * new_block + i, b), y, xx,
                                               tirx.floormod(o * new_block + i, b)],
                      name="repack_nchwc")


def _schedule(func, name: str, out_blocked: bool, w: int) -> "tirx.PrimFunc":
    sch = s_tir.Schedule(func)
    blk = sch.get_sblock(name)
    loops = sch.get_loops(blk)
    try:
        if out_blocked:
            n, c, y, x, i = loops
            sch.parallel(sch.fuse(n, c, y))
            sch.vectorize(i)
        else:
            n, c, y, x = loops
            sch.parallel(sch.fuse(n, c, y))
            if w % 16 == 0:
                _, xi = sch.split(x, [None, 16])
                sch.vectorize(xi)
            elif w % 8 == 0:
                _, xi = sch.split(x, [None, 8])
                sch.vectorize(xi)
    except Exception:  # pragma: no cover
        sch = s_tir.Schedule(func)
    return finalize(sch.mod["main"])


def make_pack_nchwc(n: int, c: int, h: int, w: int, block: int, dtype: str = "float32"):
    """Scheduled PrimFunc (x:(n,c,h,w), out:(n,c//block,h,w,block))."""
    x = te.placeholder((n, c, h, w), dtype, name="x")
    return _schedule(te.create_prim_func([x, pack_nchwc_te(x, block)]), "pack_nchwc", True, w)


def make_unpack_nchwc(n: int, c: int, h: int, w: int, block: int, dtype: str = "float32"):
    """Scheduled PrimFunc (x:(n,c//block,h,w,block), out:(n,c,h,w))."""
    x = te.placeholder((n, c // block, h, w, block), dtype, name="x")
    return _schedule(te.create_prim_func([x, unpack_nchwc_te(x, c)]), "unpack_nchwc", False, w)


def make_repack_nchwc(n: int, c: int, h: int, w: int, block: int, new_block: int, dtype: str = "float32"):
    """Scheduled PrimFunc (x:(n,c//block,h,w,block), out:(n,c//new_block,h,w,new_block))."""
    x = te.placeholder((n, c // block, h, w, block), dtype, name="x")
    return _schedule(te.create_prim_func([x, repack_nchwc_te(x, new_block)]), "repack_nchwc", True, w)


def make_pack_channels(n: int, c: int, h: int, w: int, block: int, cp: int, dtype: str, fill: int):
    """Scheduled PrimFunc NCHW (n, c, h, w) -> (n, cp//block, h, w, block) with channels c..cp filled with
    ``fill`` (the 3-channel stem padded to 4)."""
    assert cp == -(-c // block) * block, (c, block, cp)
    x = te.placeholder((n, c, h, w), dtype, name="x")
    return _schedule(te.create_prim_func([x, pack_nchwc_te(x, block, fill)]), "pack_nchwc", True, w)


def quantize_te(v, scale: float, zp: int, qmin: int, qmax: int, dtype: str):
    """q.quantize on a float32 TIR scalar, bit-exact with compiler/ops/quant.py: rint(v / scale) (a true float32
    division, ties to even) clamped in float32 to [qmin - zp, qmax - zp] (small integers, exact in float32: the
    same as clamping r + zp, as r is integral), then + zp in int32."""
    r = tirx.nearbyint(v / tirx.const(np.float32(scale), "float32"))
    r = tirx.max(tirx.min(r, tirx.const(float(qmax - zp), "float32")), tirx.const(float(qmin - zp), "float32"))
    return (r.astype("int32") + tirx.const(zp, "int32")).astype(dtype)


def make_quantize_pack(n: int, c: int, h: int, w: int, block: int, cp: int, scale: float, zp: int, qmin: int,
                       qmax: int, dtype: str, fill: int):
    """Scheduled PrimFunc: float32 NCHW (n, c, h, w) -> q.quantize -> (n, cp//block, h, w, block) with channels
    c..cp filled with ``fill`` (block 0: plain (n, c, h, w) output, cp ignored)."""
    x = te.placeholder((n, c, h, w), "float32", name="x")
    if not block:
        y = te.compute((n, c, h, w), lambda b, ch, yy, xx: quantize_te(x[b, ch, yy, xx], scale, zp, qmin, qmax,
                                                                        dtype), name="quantize")
        sch = s_tir.Schedule(te.create_prim_func([x, y]))
        b, ch, yy, xx = sch.get_loops(sch.get_sblock("quantize"))
        sch.parallel(sch.fuse(b, ch, yy))
        lanes = next((v for v in (16, 8) if w % v == 0), 0)
        if lanes:
            sch.vectorize(sch.split(xx, [None, lanes])[1])
        return finalize(sch.mod["main"])

    def body(b, cb, yy, xx, i):
        ch = cb * block + i
        v = quantize_te(x[b, tirx.min(ch, c - 1), yy, xx], scale, zp, qmin, qmax, dtype)
        return tirx.if_then_else(ch < c, v, tirx.const(fill, dtype)) if cp != c else v
    y = te.compute((n, cp // block, h, w, block), body, name="quantize")
    sch = s_tir.Schedule(te.create_prim_func([x, y]))
    b, cb, yy, xx, i = sch.get_loops(sch.get_sblock("quantize"))
    sch.parallel(sch.fuse(b, cb, yy))
    sch.vectorize(i)
    return finalize(sch.mod["main"])


def pack_nchwc_np(x: np.ndarray, block: int) -> np.ndarray:
    """numpy NCHW -> NCHW{block}c (block 0 returns x unchanged)."""
    if not block:
        return np.ascontiguousarray(x)
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c // block, block, h, w).transpose(0, 1, 3, 4, 2))


def unpack_nchwc_np(x: np.ndarray) -> np.ndarray:
    """numpy NCHW{b}c -> NCHW (4-D input returned unchanged)."""
    if x.ndim == 4:
        return np.ascontiguousarray(x)
    n, cb, h, w, b = x.shape
    return np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3).reshape(n, cb * b, h, w))
