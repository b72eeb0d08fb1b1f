"""FP32 (batched) matmul with fused bias + activation and register-tiled s_tir schedules.

Shapes (``nb = b_block(spec)``, the packed column-panel width):

* ``a``: ``(*batch, m, k)`` (row-major activations).
* ``b``:
  - ``b_is_const``: packed at compile time by :func:`pack_b` into column panels ``(n // nb, k, nb)``
    (``Bp[jo, k, ji] = B[k, jo * nb + ji]``), shared by every batch element.  ``pack_b`` takes the raw weight as
    ``(k, n)``, or ``(n, k)`` when ``transpose_b`` (ONNX Gemm transB / torch Linear weight).
  - activations: ``(*batch, k, n)``, or ``(*batch, n, k)`` when ``transpose_b`` (then the kernel repacks it into
    panels in a first stage, e.g. the ``K^T`` of attention).
* ``bias`` (``has_bias``): ``(n,)``.
* output: ``(*batch, m, n)`` = act(a @ b + bias), act in none / relu / gelu_erf / gelu_tanh.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from tvm import s_tir, te, tirx

from compiler.layouts import matmul_panel_width, pack_matmul_weight

from .common import ACC_SCOPE, SCHEDULE_ATTR, act_te, divisors, finalize, prod

__all__ = ["MatmulSpec", "matmul_te", "pack_b", "make_matmul", "b_block", "a_shape", "b_shape", "out_shape",
           "matmul_reference"]


@dataclass(frozen=True)
class MatmulSpec:
    """``out[*batch, m, n] = act(sum_k a[*batch, m, k] * B[(*batch,) k, n] + bias[n])``.

    ``b_is_const``: B is a compile-time weight pre-packed with :func:`pack_b` (no batch dims: broadcast).
    ``transpose_b``: B is given as (n, k).  activation in {"none", "relu", "gelu_erf", "gelu_tanh"}.
    """

    batch: Tuple[int, ...]
    m: int
    n: int
    k: int
    b_is_const: bool = True
    transpose_b: bool = False
    has_bias: bool = False
    activation: str = "none"
    dtype: str = "float32"

    def __post_init__(self):
        if self.activation not in ("none", "relu", "gelu_erf", "gelu_tanh"):
            raise ValueError(f"activation {self.activation!r}")
        object.__setattr__(self, "batch", tuple(int(b) for b in self.batch))

    @property
    def flops(self) -> int:
        return 2 * prod(self.batch) * self.m * self.n * self.k


def b_block(spec: MatmulSpec) -> int:
    """Column-panel width of packed B (compiler/layouts.py: matmul_panel_width)."""
    return matmul_panel_width(spec.n)


def a_shape(spec: MatmulSpec):
    return (*spec.batch, spec.m, spec.k)


def b_shape(spec: MatmulSpec):
    """Shape of the B argument of the kernel (packed for const B)."""
    if spec.b_is_const:
        nb = b_block(spec)
        return (spec.n // nb, spec.k, nb)
    return (*spec.batch, spec.n, spec.k) if spec.transpose_b else (*spec.batch, spec.k, spec.n)


def out_shape(spec: MatmulSpec):
    return (*spec.batch, spec.m, spec.n)


def pack_b(spec: MatmulSpec, w: np.ndarray) -> np.ndarray:
    """Const weight (k, n) -- or (n, k) if ``transpose_b`` -- -> panels (n // nb, k, nb), contiguous."""
    w = np.asarray(w, dtype=spec.dtype)
    if spec.transpose_b:
        w = w.T
    assert w.shape == (spec.k, spec.n), (w.shape, spec)
    return pack_matmul_weight(w, "panels")


def matmul_te(spec: MatmulSpec, a: te.Tensor, b: te.Tensor, bias: Optional[te.Tensor] = None,
              epilogue=None) -> te.Tensor:
    """Stages: ``bpack`` (only for non-const transposed B), ``mm`` (the reduction), ``out`` (bias + act, then
    ``epilogue(v, idx)`` if given, idx the output index)."""
    nb = b_block(spec)
    nbatch = len(spec.batch)
    dt = spec.dtype
    bsrc = b
    if not spec.b_is_const and spec.transpose_b:
        bsrc = te.compute((*spec.batch, spec.n // nb, spec.k, nb),
                          lambda *i: b[(*i[:nbatch], i[nbatch] * nb + i[nbatch + 2], i[nbatch + 1])], name="bpack")
    ksplit = k_split(spec)
    if ksplit > 1:
        return _matmul_ksplit_te(spec, a, bsrc, bias, ksplit, epilogue)
    kk = te.reduce_axis((0, spec.k), name="kk")

    def _mm(*idx):
        bi, i, j = idx[:nbatch], idx[nbatch], idx[nbatch + 1]
        jo, ji = tirx.floordiv(j, nb), tirx.floormod(j, nb)
        if spec.b_is_const:
            bv = bsrc[jo, kk, ji]
        elif spec.transpose_b:
            bv = bsrc[(*bi, jo, kk, ji)]
        else:
            bv = bsrc[(*bi, kk, j)]
        return te.sum(a[(*bi, i, kk)] * bv, axis=kk)

    mm = te.compute(out_shape(spec), _mm, name="mm")

    def _out(*idx):
        v = mm[idx]
        if bias is not None:
            v = v + bias[idx[-1]]
        v = act_te(v, spec.activation, dtype=dt)
        return v if epilogue is None else epilogue(v, idx)

    return te.compute(out_shape(spec), _out, name="out")


def k_split(spec: MatmulSpec) -> int:
    """Number of independent partial sums over k for skinny (GEMV-like, m * batch <= 4) matmuls, else 1.  With so
    few rows the register tile would be one FMA chain per vector, latency-bound; splitting k gives R chains."""
    mtot = spec.m * (prod(spec.batch) if spec.b_is_const else 1)
    if mtot > 4:
        return 1
    for r in (8, 4, 2):
        if spec.k % r == 0 and r * mtot <= 16:
            return r
    return 1


def _matmul_ksplit_te(spec, a, bsrc, bias, R, epilogue=None):
    """part[*b, i, r, j] = sum_ko a[.., ko*R + r] * B[ko*R + r, j];  out = act(sum_r part + bias)."""
    nb = b_block(spec)
    nbatch = len(spec.batch)
    ko = te.reduce_axis((0, spec.k // R), name="ko")

    def _part(*idx):
        bi, i, r, j = idx[:nbatch], idx[nbatch], idx[nbatch + 1], idx[nbatch + 2]
        kk = ko * R + r
        jo, ji = tirx.floordiv(j, nb), tirx.floormod(j, nb)
        if spec.b_is_const:
            bv = bsrc[jo, kk, ji]
        elif spec.transpose_b:
            bv = bsrc[(*bi, jo, kk, ji)]
        else:
            bv = bsrc[(*bi, kk, j)]
        return te.sum(a[(*bi, i, kk)] * bv, axis=ko)

    part = te.compute((*spec.batch, spec.m, R, spec.n), _part, name="part")

    rr = te.reduce_axis((0, R), name="rr")
    mm = te.compute(out_shape(spec), lambda *idx: te.sum(part[(*idx[:nbatch], idx[nbatch], rr, idx[nbatch + 1])],
                                                         axis=rr), name="mm")

    def _out(*idx):
        j = idx[nbatch + 1]
        v = mm[idx]
        if bias is not None:
            v = v + bias[j]
        v = act_te(v, spec.activation, dtype=spec.dtype)
        return v if epilogue is None else epilogue(v, idx)

    return te.compute(out_shape(spec), _out, name="out")


def _sched_ksplit(sch: s_tir.Schedule, spec: MatmulSpec, lanes: int):
    nbatch = len(spec.batch)
    nb = b_block(spec)
    part = sch.get_sblock("part")
    out = sch.get_sblock("out")
    loops = sch.get_loops(part)
    bl, i, r, j, ko = loops[:nbatch], loops[nbatch], loops[nbatch + 1], loops[nbatch + 2], loops[nbatch + 3]
    jo, jv, jl = sch.split(j, [None, max(1, nb // lanes), min(lanes, nb)])
    sch.reorder(*bl, jo, i, ko, r, jv, jl)
    mm = sch.get_sblock("mm")
    sch.set_scope(part, 0, ACC_SCOPE)
    sch.set_scope(mm, 0, ACC_SCOPE)
    sch.reverse_compute_at(mm, jo)
    sch.reverse_compute_at(out, jo)
    sch.vectorize(jl)
    sch.unroll(jv)
    sch.unroll(r)
    sch.unroll(i)
    inner = sch.get_loops(mm)[len(bl) + 1:]  # (i, j, r), or (j, r) when m == 1
    mj, mr = inner[-2:]
    sch.reorder(mr, mj)
    _, mjv = sch.split(mj, [None, min(lanes, nb)])
    sch.vectorize(mjv)
    sch.parallel(sch.fuse(*bl, jo))
    ol = sch.get_loops(out)
    _, olv = sch.split(ol[-1], [None, min(lanes, nb)])
    sch.vectorize(olv)
    sch.decompose_reduction(part, ko)
    sch.decompose_reduction(mm, mr)
    _sched_bpack(sch, nbatch)


def _sched_bpack(sch, nbatch):
    try:
        bp = sch.get_sblock("bpack")
    except Exception:
        return
    bpl = sch.get_loops(bp)
    sch.parallel(sch.fuse(*bpl[:nbatch + 1]))


def matmul_prim_func(spec: MatmulSpec, extras=(), epilogue=None) -> tirx.PrimFunc:
    """Unscheduled PrimFunc (a, b, [bias], *extras, out); ``extras`` are the placeholders ``epilogue`` reads."""
    a = te.placeholder(a_shape(spec), spec.dtype, name="a")
    b = te.placeholder(b_shape(spec), spec.dtype, name="b")
    bias = te.placeholder((spec.n,), spec.dtype, name="bias") if spec.has_bias else None
    out = matmul_te(spec, a, b, bias, epilogue)
    return te.create_prim_func([a, b] + ([bias] if bias is not None else []) + list(extras) + [out])


LANES = 16


def pick_tile(spec: MatmulSpec) -> Tuple[int, int, int]:
    """(reg_m, reg_n, lanes): rows x columns in the register tile; reg_n is a multiple of lanes dividing nb."""
    nb = b_block(spec)
    lanes = min(LANES, nb)
    mtot = spec.m if not spec.b_is_const else spec.m * prod(spec.batch)
    best, best_score = (1, lanes), -1e9
    for reg_n in (nb, nb // 2, nb // 4):
        if reg_n < lanes or reg_n % lanes:
            continue
        nv = reg_n // lanes
        for reg_m in divisors(mtot):
            acc = reg_m * nv
            if acc > 16:
                continue
            score = acc - (0.5 if reg_m < nv else 0)
            if score > best_score:
                best, best_score = (reg_m, reg_n), score
    return best[0], best[1], lanes


def _sched_tiled(sch: s_tir.Schedule, spec: MatmulSpec, reg_m: int, reg_n: int, lanes: int):
    nbatch = len(spec.batch)
    mm = sch.get_sblock("mm")
    out = sch.get_sblock("out")
    loops = sch.get_loops(mm)
    bl, i, j, k = loops[:nbatch], loops[nbatch], loops[nbatch + 1], loops[nbatch + 2]
    if spec.b_is_const and nbatch:
        i = sch.fuse(*bl, i)
        bl = []
    io, ii = sch.split(i, [None, reg_m])
    jo, jv, jl = sch.split(j, [None, reg_n // lanes, lanes])
    sch.reorder(*bl, jo, io, k, ii, jv, jl)
    sch.set_scope(mm, 0, ACC_SCOPE)
    sch.reverse_compute_at(out, io)
    if not spec.b_is_const and spec.transpose_b:
        # repack the transposed B panel right before it is used (stays in L1)
        bp = sch.get_sblock("bpack")
        sch.compute_at(bp, jo)
        bk, bj = sch.get_loops(bp)[-2:]
        sch.reorder(bj, bk)
        sch.unroll(bj)
    sch.vectorize(jl)
    sch.unroll(jv)
    sch.unroll(ii)
    sch.parallel(sch.fuse(*bl, jo))
    ol = sch.get_loops(out)
    _, olv = sch.split(ol[-1], [None, lanes])
    sch.vectorize(olv)
    sch.decompose_reduction(mm, k)


def _sched_simple(sch: s_tir.Schedule, spec: MatmulSpec):
    nbatch = len(spec.batch)
    if k_split(spec) > 1:
        part = sch.get_sblock("part")
        loops = sch.get_loops(part)
        sch.parallel(sch.fuse(*loops[:nbatch + 1]))
        sch.decompose_reduction(part, loops[-1])
        return
    mm = sch.get_sblock("mm")
    loops = sch.get_loops(mm)
    i, j, k = loops[nbatch:nbatch + 3]
    sch.reorder(*loops[:nbatch], i, k, j)
    sch.parallel(sch.fuse(*loops[:nbatch], i))
    sch.decompose_reduction(mm, k)


def make_matmul(spec: MatmulSpec, tile: Optional[Tuple[int, int, int]] = None, extras=(),
                epilogue=None) -> tirx.PrimFunc:
    """Scheduled PrimFunc with params (a, b, [bias], *extras, out); attrs op_pattern=8, tirx.is_scheduled=True.
    ``tile`` = (reg_m, reg_n, lanes) overrides the register tile; ``epilogue`` (reading ``extras``) is fused
    into the write-back."""
    func = matmul_prim_func(spec, extras, epilogue)
    tile = tile or pick_tile(spec)
    for attempt in ("tiled", "simple"):
        sch = s_tir.Schedule(func)
        try:
            if attempt == "tiled" and k_split(spec) > 1:
                _sched_ksplit(sch, spec, tile[2])
            elif attempt == "tiled":
                _sched_tiled(sch, spec, *tile)
            else:
                _sched_simple(sch, spec)
            return finalize(sch.mod["main"].with_attr(SCHEDULE_ATTR, attempt))
        except Exception:  # pragma: no cover
            pass
    return finalize(func.with_attr(SCHEDULE_ATTR, "none"))


def matmul_reference(a, b, bias=None, transpose_b=False, activation="none"):
    """float64 numpy reference; b is (.., k, n) or (.., n, k) if transpose_b."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if transpose_b:
        b64 = np.swapaxes(b64, -1, -2)
    y = a64 @ b64
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    if activation == "relu":
        y = np.maximum(y, 0)
    elif activation == "gelu_erf":
        y = 0.5 * y * (1 + np.vectorize(math.erf)(y / np.sqrt(2)))
    elif activation == "gelu_tanh":
        y = 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y ** 3)))
    return y.astype(np.float32)
