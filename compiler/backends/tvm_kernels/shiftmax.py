"""I-ViT Shiftmax over the middle axis of (rows, length, inner) int8/uint8/int16 data, with the following
per-tensor q.requant fused. inner = 1 (a softmax over the last axis, attention's): one row at a time, everything
of that row in registers / L1, the row's elements in the vector lanes. inner > 1 (a softmax over an outer axis,
a detector's 16 distance bins on axis 1): 16 neighbouring rows at a time (8, 4, 2 where 16 does not divide
`inner`), one per lane, each step along `length` one contiguous vector; no transpose before or after.

Bit-exact with compiler.ops.ivit.shiftmax_values.  The exponent runs in int32, which is exact here: the
input is at most 16 bits, so d = x - max(x) >= -65535 and I_p = d + (d >> 1) - (d >> 4) > -2^17; the
clamp n * x0 and every term |x0| * 2^n stay below 2^31 because the op's type rule requires
length * |x0| * 2^n <= 2^31 - 1, which also bounds the row sum.  int32 lanes vectorize twice as wide as
int64 and LLVM turns the floor division by the constant x0 into multiplies.  The factor (2^D - 1) // sum is
one int64 division per row; e * factor and the requant run in int64 (e * factor < 2^62 by construction).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tvm import s_tir, te, tirx

from compiler.backends.tvm_lower.ivit import shift_exp_expr
from compiler.ops import ivit
from .common import SCHEDULE_ATTR, finalize, vectorize_under_reduction
from .qconv2d import Requant, requant_scalar_te

__all__ = ["ShiftmaxSpec", "make_shiftmax"]

I32, I64 = "int32", "int64"


@dataclass(frozen=True)
class ShiftmaxSpec:
    rows: int
    length: int
    x_dtype: str          # "int8" / "uint8" / "int16"
    x0: int               # ivit.exp_unit(scale)
    n: int
    k: int                # output bits of the shiftmax (7, 8, 15, 31)
    qmax: int             # its clamp
    dividend_bits: int
    sm_dtype: str         # the shiftmax's own output dtype
    rq: Optional[Requant] = None
    rq_m: int = 0
    rq_c: int = 0
    inner: int = 1        # elements between two of a row's: the product of the axes after the softmax's

    def __post_init__(self):
        if self.x_dtype not in ("int8", "uint8", "int16"):
            raise ValueError(f"shiftmax kernel takes 8/16-bit inputs, got {self.x_dtype}")

    @property
    def out_dtype(self) -> str:
        return self.rq.dtype if self.rq is not None else self.sm_dtype


def _c64(v: int):
    return tirx.const(int(v), I64)


def shiftmax_te(spec: ShiftmaxSpec, x):
    rows, length, inner = spec.rows, spec.length, spec.inner
    k1 = te.reduce_axis((0, length), "k1")
    mx = te.compute((rows, inner), lambda r, i: te.max(x[r, k1, i].astype(I32), axis=k1), name="row_max")
    e = te.compute((rows, length, inner),
                   lambda r, j, i: shift_exp_expr(x[r, j, i].astype(I32) - mx[r, i], spec.x0, spec.n, I32),
                   name="shift_exp")
    k2 = te.reduce_axis((0, length), "k2")
    s = te.compute((rows, inner), lambda r, i: te.sum(e[r, k2, i].astype(I64), axis=k2), name="row_sum")
    f = te.compute((rows, inner), lambda r, i: tirx.floordiv(_c64(2**spec.dividend_bits - 1),
                                                             tirx.min(s[r, i], _c64(ivit.INT31))), name="factor")

    def body(r, j, i):
        y = (e[r, j, i].astype(I64) * f[r, i]) >> _c64(spec.dividend_bits - spec.k)
        y = tirx.max(tirx.min(y, _c64(spec.qmax)), _c64(0))
        rq = spec.rq
        if rq is None:
            return y.astype(spec.sm_dtype)
        # the shiftmax result, as the requant reads it
        return requant_scalar_te(y.astype(spec.sm_dtype), spec.rq_m, spec.rq_c, rq)
    return te.compute((rows, length, inner), body, name="out")


LANES = 16                                  # int32 lanes of a 512-bit vector


def make_shiftmax(spec: ShiftmaxSpec) -> tirx.PrimFunc:
    x = te.placeholder((spec.rows, spec.length, spec.inner), spec.x_dtype, "x")
    sch = s_tir.Schedule(te.create_prim_func([x, shiftmax_te(spec, x)]))
    out = sch.get_sblock("out")
    r, j, i = sch.get_loops(out)
    if spec.inner == 1:
        at = r
    else:                                   # `lanes` rows side by side: (r, i / lanes, j, lane)
        lanes = next(w for w in (LANES, 8, 4, 2, 1) if spec.inner % w == 0)
        io, ii = sch.split(i, [None, lanes])
        sch.reorder(r, io, j, ii)
        at = io
    for name in ("factor", "row_sum", "shift_exp", "row_max"):
        sch.compute_at(sch.get_sblock(name), at)
    sch.parallel(r if spec.rows > 1 or spec.inner == 1 else at)       # before a reduction is decomposed
    if spec.inner == 1 and spec.length % LANES == 0:     # the row in the lanes; other lengths stay scalar
        for blk in ("shift_exp", "out"):
            row = sch.get_loops(sch.get_sblock(blk))[1:]         # under r: j (and the unit inner loop)
            _, ji = sch.split(sch.fuse(*row) if len(row) > 1 else row[0], [None, LANES])
            sch.vectorize(ji)
    elif spec.inner > 1 and lanes > 1:      # one row per lane: every block's innermost loop is the lanes
        for blk in ("row_max", "row_sum"):
            vectorize_under_reduction(sch, sch.get_sblock(blk))
        for blk in ("shift_exp", "factor", "out"):
            sch.vectorize(sch.get_loops(sch.get_sblock(blk))[-1])
    return finalize(sch.mod["main"].with_attr(SCHEDULE_ATTR, "tiled"))
