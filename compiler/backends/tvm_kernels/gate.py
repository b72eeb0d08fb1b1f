"""The squeeze-excite gate on channel-blocked 8-bit (or int16) data, bit-exact with compiler/ops/quant.py:

    out[n, cb, y, x, i] = requant((int32(a[n, cb, y, x, i]) + a_off) * (int32(g[n, cb, 0, 0, i]) + g_off))

with a per-tensor requant (m, c compile-time constants). The channel block is the vector lanes: each
(n, cb) row of the activation reads one vector of its gate, and the spatial positions run in an unrolled
loop over it (the op-by-op lowering runs one flat index and reads the gate at a modulo instead).
"""
from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, te, tirx

from .common import SCHEDULE_ATTR, finalize
from .requant import Requant, pack_requant, requant_te

PARALLEL_MIN = 1 << 15          # fewer output bytes than this: one thread (a parallel region costs more)


@dataclass(frozen=True)
class GateSpec:
    n: int
    cb: int
    h: int
    w: int
    b: int
    a_dtype: str
    g_dtype: str
    a_off: int            # what is added to int32(a) (minus its zero point)
    g_off: int
    multiplier: int
    shift: int
    rq: Requant

    def shape(self) -> tuple[int, ...]:
        return (self.n, self.cb, self.h, self.w, self.b)

    def gate_shape(self) -> tuple[int, ...]:
        return (self.n, self.cb, 1, 1, self.b)


class _Consts:
    """requant_te's parameter table as compile-time constants (a per-tensor requant)."""

    def __init__(self, rows, dtype: str):
        self.rows, self.dtype = [int(r) for r in rows], dtype

    def __getitem__(self, key):
        return tirx.const(self.rows[key[0]], self.dtype)


def _factor(v, off: int):
    v = v.astype("int32")
    return v + tirx.const(off, "int32") if off else v


def make_gate(spec: GateSpec) -> tirx.PrimFunc:
    """Scheduled PrimFunc (a, g, out)."""
    rq = spec.rq
    table = pack_requant([spec.multiplier], [spec.shift], 1, 1, (3,), rq.form)
    mcr = _Consts(table, "int64" if rq.form == "i64" else "int32")
    a = te.placeholder(spec.shape(), spec.a_dtype, name="a")
    g = te.placeholder(spec.gate_shape(), spec.g_dtype, name="g")
    out = te.compute(spec.shape(), lambda n, c, y, x, i: requant_te(
        _factor(a[n, c, y, x, i], spec.a_off) * _factor(g[n, c, 0, 0, i], spec.g_off), mcr, (), rq), name="out")
    func = te.create_prim_func([a, g, out])
    sch = s_tir.Schedule(func)
    try:
        n, c, y, x, i = sch.get_loops(sch.get_sblock("out"))
        hw = sch.fuse(y, x)
        u = next(u for u in (4, 2, 1) if (spec.h * spec.w) % u == 0)
        ho, hi = sch.split(hw, [None, u])
        outer = sch.fuse(n, c, ho)
        if spec.n * spec.cb * spec.h * spec.w * spec.b >= PARALLEL_MIN:
            sch.parallel(outer)
        sch.unroll(hi)
        sch.vectorize(i)
        attempt = "simple"
    except Exception:  # pragma: no cover  (correct unscheduled)
        sch, attempt = s_tir.Schedule(func), "none"
    return finalize(sch.mod["main"].with_attr(SCHEDULE_ATTR, attempt))
