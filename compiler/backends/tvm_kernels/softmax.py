"""FP32 softmax over an inner axis: the tensor viewed as (outer, L, inner), softmax over L.

Three stages share one loop nest, parallel over (outer, blocks of the inner axis) and vectorized along
the inner axis: the running max over L, exp(x - max) and its sum, then the division. A softmax over a
short axis with a long contiguous inner axis (YOLO's DFL head: 16 bins x 4 sides x 2100 anchors) runs
at memory speed instead of one scalar reduction per column.
"""
from __future__ import annotations

from tvm import s_tir, te

from .common import ACC_SCOPE, fast_exp, finalize


def softmax_te(x: te.Tensor) -> te.Tensor:
    outer, length, inner = (int(d) for d in x.shape)
    j = te.reduce_axis((0, length), name="j")
    mx = te.compute((outer, inner), lambda o, i: te.max(x[o, j, i], axis=j), name="mx")
    e = te.compute((outer, length, inner), lambda o, k, i: fast_exp(x[o, k, i] - mx[o, i]), name="e")
    j2 = te.reduce_axis((0, length), name="j2")
    s = te.compute((outer, inner), lambda o, i: te.sum(e[o, j2, i], axis=j2), name="s")
    return te.compute((outer, length, inner), lambda o, k, i: e[o, k, i] / s[o, i], name="out")


def make_softmax(outer: int, length: int, inner: int, lanes: int = 16):
    """Scheduled PrimFunc (x: (outer, length, inner), out) for inner > 1."""
    x = te.placeholder((outer, length, inner), "float32", name="x")
    func = te.create_prim_func([x, softmax_te(x)])
    sch = s_tir.Schedule(func)
    chunk = lanes * 8 if inner >= lanes * 8 else inner
    out = sch.get_sblock("out")
    o, k, i = sch.get_loops(out)
    io, ii = sch.split(i, [None, chunk])
    sch.reorder(o, io, k, ii)
    par = sch.fuse(o, io)
    sch.parallel(par)
    for name in ("s", "e", "mx"):
        sch.compute_at(sch.get_sblock(name), par)
    for name in ("mx", "s"):
        blk = sch.get_sblock(name)
        sp, red = sch.get_loops(blk)[-2:]
        sch.reorder(red, sp)
        _vector(sch, sp, chunk, lanes)
    _vector(sch, sch.get_loops(sch.get_sblock("e"))[-1], chunk, lanes)
    _vector(sch, sch.get_loops(out)[-1], chunk, lanes)
    for name in ("mx", "s", "e"):
        sch.set_scope(sch.get_sblock(name), 0, ACC_SCOPE)
    return finalize(sch.mod["main"])


def _vector(sch, loop, extent: int, lanes: int) -> None:
    if extent % lanes == 0:
        _, v = sch.split(loop, [None, lanes])
        sch.vectorize(v)
