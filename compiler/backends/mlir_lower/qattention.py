"""MLIR lowering of q.attention (compiler/ops/qattention.py), bit-exact with its reference.

The batch dimensions are folded into one (bh). The scores s = requant(q k^T) (an i32 batch matmul, then the
requant and the keep mask's fill in one map) are a tensor (bh, lq, lk) in i32: the recurrence reads them a
key block at a time. The running max M, sum L (bh, lq, 1) and numerator A (bh, lq, dv) are i64 tensors; one
block is

    m = max(M, rowmax(s_b));  c = shift_exp(M - m);  L = (L c) // U;  A = (A c) // U
    e = shift_exp(s_b - m);   L += rowsum(e);  A += e @ v_b;  M = m

with the first block peeled (no correction), the other whole blocks an `scf.for` carrying (M, L, A) whose
slices start at an `index` offset, and a last partial block (lk % block keys) peeled after the loop: the
blocks are the reference's, in its order, since the result depends on them. The end is
t = (A << 16) // L (floor division: A may be negative; L >= 1 since every shift_exp is) and
out = requant(t). Unlike TVM's kernel (tvm_kernels/qattention.py) this form keeps the scores of a head in
memory: the recurrence is exact, not one pass over the keys.
"""
from __future__ import annotations

import math

from iree.compiler import ir
from iree.compiler.dialects import arith, linalg, scf

from compiler.backends.mlir_lower.ivit import row_reduce, shift_exp
from compiler.backends.mlir_lower.linalg import matmul
from compiler.backends.mlir_lower.quant import requant_scalar
from compiler.backends.mlir_lower.registry import (
    LowerCtx,
    amap,
    elem_type,
    index,
    lowers,
    scalar,
    shape_of,
    slice_at,
)
from compiler.ir import Node
from compiler.ops import ivit, qattention
from compiler.ops.qattention import FRACTION_BITS, unit
from compiler.types import DType

I32, I64 = DType.I32, DType.I64
# targets whose P V sums run in i64 matmuls of at most CHUNK_KEYS keys (_Block.weighted_sum)
CHUNKED_TARGETS, CHUNK_KEYS = ("cuda",), 32


def _i64() -> ir.Type:
    return ir.IntegerType.get_signless(64)


def _c(v: int) -> ir.Value:
    return scalar(int(v), _i64())


def _rounding(shift: int) -> ir.Value:
    return _c(1 << (shift - 1) if shift > 0 else 0)


def _scores(ctx: LowerCtx, node: Node, q: ir.Value, k: ir.Value, keep: ir.Value | None) -> ir.Value:
    """requant(q k^T) clamped to [qk_qmin, qk_qmax], the fill where keep is false: (bh, lq, lk) i32."""
    a = node.attrs
    bh, lq, _ = shape_of(q)
    lk = shape_of(k)[1]
    i32 = elem_type(I32)
    maps = [amap(4, e) for e in ([0, 1, 3], [0, 2, 3], [0, 1, 2])]
    raw = linalg.batch_matmul(q, k, outs=[ctx.full((bh, lq, lk), i32, 0)], indexing_maps=maps)
    m, c, rnd = _c(a["qk_multiplier"]), _c(a["qk_shift"]), _rounding(a["qk_shift"])

    def body(x: ir.Value, *kept: ir.Value) -> ir.Value:
        s = requant_scalar(x, I32, m, c, rnd, 0, 0, a["qk_qmin"], a["qk_qmax"], i32)
        return arith.select(kept[0], s, scalar(a["fill"], i32)) if kept else s
    return ctx.ewise([raw] + ([keep] if keep is not None else []), (bh, lq, lk), i32, body)


class _Block:
    """One key block of the recurrence on (M, L, A) (the module docstring)."""

    def __init__(self, ctx: LowerCtx, node: Node):
        self.ctx = ctx
        self.x0, self.n = ivit.exp_unit(node.attrs["scale"]), node.attrs["n"]
        self.u = unit(node.attrs["scale"], self.n)

    def __call__(self, s: ir.Value, v: ir.Value, state: list[ir.Value] | None) -> list[ir.Value]:
        ctx, x0, n, i64 = self.ctx, self.x0, self.n, _i64()
        bh, lq, width = shape_of(s)
        dv = shape_of(v)[2]
        m = row_reduce(ctx, s, I32, 2, "max")
        if state is not None:
            big, total, num = state
            m = ctx.ewise([big, m], (bh, lq, 1), i64, arith.maxsi)
            c = ctx.ewise([big, m], (bh, lq, 1), i64, lambda b, mm: shift_exp(arith.subi(b, mm), x0, n))

            def rescale(x: ir.Value, cv: ir.Value) -> ir.Value:
                return arith.floordivsi(arith.muli(x, cv), _c(self.u))
            total = ctx.ewise([total, c], (bh, lq, 1), i64, rescale)
            num = ctx.ewise([num, c], (bh, lq, dv), i64, rescale)
        e = ctx.ewise([s, m], (bh, lq, width), i64,
                      lambda x, mm: shift_exp(arith.subi(arith.extsi(i64, x), mm), x0, n))
        part_total = row_reduce(ctx, e, I64, 2, "sum")
        part_num = self.weighted_sum(e, v)
        if state is None:
            return [m, part_total, part_num]
        return [m, ctx.ewise([total, part_total], (bh, lq, 1), i64, arith.addi),
                ctx.ewise([num, part_num], (bh, lq, dv), i64, arith.addi)]


    def weighted_sum(self, e: ir.Value, v: ir.Value) -> ir.Value:
        """e @ v in i64. On cuda in matmuls of at most CHUNK_KEYS keys, added (integer sums: any order is
        exact): IREE 3.13 failed to distribute ("failed to distribute") an i64 x i8 batch matmul over 64, 96
        or 128 keys (not 40 or 48)."""
        ctx, (bh, lq, width), dv = self.ctx, shape_of(e), shape_of(v)[2]
        step = CHUNK_KEYS if ctx.target.kind in CHUNKED_TARGETS else width
        total = None
        for j0 in range(0, width, step):
            w = min(step, width - j0)
            part = matmul(ctx, slice_at(e, [0, 0, j0], [bh, lq, w], 3), slice_at(v, [0, j0, 0], [bh, w, dv], 3),
                          (bh, lq, dv), _i64())
            total = part if total is None else ctx.ewise([total, part], (bh, lq, dv), _i64(), arith.addi)
        return total


def _recurrence(ctx: LowerCtx, node: Node, s: ir.Value, v: ir.Value) -> list[ir.Value]:
    """(M, L, A) after every key block of `block` keys, in order."""
    bh, lq, lk = shape_of(s)
    dv = shape_of(v)[2]
    block = min(node.attrs["block"], lk)
    whole, rest = divmod(lk, block)
    step = _Block(ctx, node)

    def keys(j0: int | ir.Value, width: int) -> tuple[ir.Value, ir.Value]:
        return (slice_at(s, [0, 0, j0], [bh, lq, width], 3), slice_at(v, [0, j0, 0], [bh, width, dv], 3))

    state = step(*keys(0, block), None)
    if whole > 1:
        loop = scf.ForOp(index(1), index(whole), index(1), state)
        with ir.InsertionPoint(loop.body):
            j0 = arith.muli(loop.induction_variable, index(block))
            scf.YieldOp(step(*keys(j0, block), list(loop.inner_iter_args)))
        state = list(loop.results)
    if rest:
        state = step(*keys(whole * block, rest), state)
    return state


def _keep(ctx: LowerCtx, node: Node, keep: ir.Value, bh: int) -> ir.Value:
    """The keep mask broadcast to the scores' shape and its batch folded: (bh, lq, lk)."""
    shape = node.inputs[0].type.shape[:-1] + (node.inputs[1].type.shape[-2],)
    return ctx.reshape(ctx.broadcast_to(keep, shape), (bh,) + tuple(shape[-2:]))


@lowers(qattention.attention)
def _attention(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    a, out = node.attrs, node.outputs[0].type
    *batch, lq, d = node.inputs[0].type.shape
    lk, dv = node.inputs[2].type.shape[-2:]
    bh = math.prod(batch)
    q, k, v = (ctx.reshape(x, (bh, rows, cols))
               for x, rows, cols in zip(args[:3], (lq, lk, lk), (d, d, dv)))
    keep = _keep(ctx, node, args[3], bh) if len(args) == 4 else None
    _, total, num = _recurrence(ctx, node, _scores(ctx, node, q, k, keep), v)
    m, c, rnd, out_et = _c(a["multiplier"]), _c(a["shift"]), _rounding(a["shift"]), elem_type(out.dtype)

    def body(x: ir.Value, t: ir.Value) -> ir.Value:
        y = arith.floordivsi(arith.shli(x, _c(FRACTION_BITS)), t)
        return requant_scalar(y, I64, m, c, rnd, 0, a["zero_point"], a["qmin"], a["qmax"], out_et)
    y = ctx.ewise([num, total], (bh, lq, dv), out_et, body)
    return [ctx.reshape(y, out.shape)]
