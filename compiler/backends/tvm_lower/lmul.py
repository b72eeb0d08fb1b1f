"""Lowerings of the L-Mul ops (compiler/ops/lmul.py): the multiply is integer arithmetic on the float32
bits (`tirx.reinterpret`), one add of the (exponent || m-bit mantissa) fields, never a float multiply.

`lmul.mul` is a broadcasting TE compute, bit-exact with the reference. `lmul.matmul` on the CPU is our
own scheduled kernel: per output row, k = 0..K-1 sequentially outside a vectorized j loop, so each output
element is the reference's float32 sum in the reference's order (bit-exact in practice; the stated
tolerance covers any backend that splits the sum). On other targets the TE compute is left to TVM's
schedules, which may reorder the sum within that tolerance.
"""
from __future__ import annotations

from collections.abc import Sequence

from tvm import relax, s_tir, te, tirx

from compiler.backends.tvm_kernels.common import finalize
from compiler.backends.tvm_lower.registry import LowerCtx, lowers, shape_of
from compiler.ir import Node
from compiler.ops import lmul

I64 = "int64"


def _c(v: int) -> tirx.PrimExpr:
    return tirx.const(int(v), I64)


def lmul_expr(x: tirx.PrimExpr, y: tirx.PrimExpr, m: int) -> tirx.PrimExpr:
    """L-Mul of two float32 scalars, as lmul.lmul_values computes it (int64, so nothing wraps)."""
    drop = 23 - m
    bx = tirx.reinterpret("uint32", x).astype(I64)
    by = tirx.reinterpret("uint32", y).astype(I64)
    ax, ay = bx & _c(0x7FFFFFFF), by & _c(0x7FFFFFFF)
    fx, fy = ax >> _c(drop), ay >> _c(drop)                 # exponent || truncated mantissa
    ex, ey = fx >> _c(m), fy >> _c(m)
    r = fx + fy + _c((1 << (m - lmul.offset_exponent(m))) - (lmul.BIAS << m))   # the one integer add
    er = r >> _c(m)
    mag = tirx.Select(er >= _c(lmul.EXP_MAX), _c(lmul.INF),
                      tirx.Select(er <= _c(0), _c(0), r << _c(drop)))
    zero_x, zero_y = ex == _c(0), ey == _c(0)
    mag = tirx.Select(tirx.Or(zero_x, zero_y), _c(0), mag)
    sign = (bx ^ by) & _c(lmul.SIGN)
    inf_x, inf_y = ex == _c(lmul.EXP_MAX), ey == _c(lmul.EXP_MAX)
    nan = tirx.any(ax > _c(lmul.INF), ay > _c(lmul.INF), tirx.And(inf_x, zero_y), tirx.And(inf_y, zero_x))
    out = tirx.Select(nan, _c(lmul.QNAN),
                      tirx.Select(tirx.Or(inf_x, inf_y), sign | _c(lmul.INF), sign | mag))
    return tirx.reinterpret("float32", out.astype("uint32"))


def _index(shape: Sequence[int], batch: Sequence[tirx.PrimExpr], tail: Sequence[tirx.PrimExpr]) -> tuple:
    """The element of an operand of `shape` at broadcast position (batch..., tail...): leading dims it
    lacks are dropped, its size-1 dims read index 0."""
    lead = shape[:len(shape) - len(tail)]
    off = len(batch) - len(lead)
    return tuple(0 if d == 1 else batch[off + i] for i, d in enumerate(lead)) + tuple(tail)


def lmul_mul_te(a: te.Tensor, b: te.Tensor, m: int, shape: Sequence[int]) -> te.Tensor:
    sa, sb = [int(d) for d in a.shape], [int(d) for d in b.shape]
    return te.compute(tuple(shape), lambda *i: lmul_expr(a[_index(sa, i, ())], b[_index(sb, i, ())], m),
                      name="lmul_mul")


def lmul_matmul_te(a: te.Tensor, b: te.Tensor, m: int, shape: Sequence[int]) -> te.Tensor:
    sa, sb = [int(d) for d in a.shape], [int(d) for d in b.shape]
    k = te.reduce_axis((0, sa[-1]), "k")
    nb = len(shape) - 2

    def body(*i):
        x = a[_index(sa, i[:nb], (i[nb], k))]
        y = b[_index(sb, i[:nb], (k, i[nb + 1]))]
        return te.sum(lmul_expr(x, y, m), axis=k)
    return te.compute(tuple(shape), body, name="lmul_matmul")


def make_lmul_matmul(sa: tuple[int, ...], sb: tuple[int, ...], shape: tuple[int, ...],
                     m: int) -> tirx.PrimFunc:
    """The CPU kernel: parallel over (batch, row), k sequential, j vectorized inside k when it divides."""
    a = te.placeholder(sa, "float32", "a")
    b = te.placeholder(sb, "float32", "b")
    sch = s_tir.Schedule(te.create_prim_func([a, b, lmul_matmul_te(a, b, m, shape)]))
    block = sch.get_sblock("lmul_matmul")
    *rows, j, k = sch.get_loops(block)
    sch.reorder(*rows, k, j)
    row = sch.fuse(*rows) if len(rows) > 1 else rows[0]
    lanes = next((n for n in (16, 8) if shape[-1] % n == 0), 0)
    if lanes:
        _, ji = sch.split(j, factors=[None, lanes])
        sch.vectorize(ji)
    sch.parallel(row)
    sch.decompose_reduction(block, k)
    return finalize(sch.mod["main"])


@lowers(lmul.mul)
def _mul(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    return [ctx.emit_te(lmul_mul_te, args[0], args[1], node.attrs["mantissa_bits"],
                        node.outputs[0].type.shape, name="lmul_mul")]


@lowers(lmul.matmul)
def _matmul(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    m = node.attrs["mantissa_bits"]
    shape = tuple(node.outputs[0].type.shape)
    if ctx.target.kind != "llvm":
        return [ctx.emit_te(lmul_matmul_te, args[0], args[1], m, shape, name="lmul_matmul")]
    sa, sb = shape_of(args[0]), shape_of(args[1])
    gv = ctx.kernel(("lmul_matmul", sa, sb, m), lambda: make_lmul_matmul(sa, sb, shape, m), "lmul_matmul")
    return [ctx.call_kernel(gv, args, shape)]
