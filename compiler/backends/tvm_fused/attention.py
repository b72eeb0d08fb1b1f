"""The fused attention kernel of a `k.fused{kernel = "attention"}` node (passes.einsum.fuse_attention).

Its body is matmul(q, [transpose] k) -> [div | mul by a scalar] -> [add mask] -> softmax(last axis) ->
matmul(., v); the node's tile is (query block, key block). Batch dimensions are flattened into one; a
mask that varies along batch dimensions other than all of them is broadcast to the scores' batch first.
"""
from __future__ import annotations

import math

import numpy as np
from tvm import relax

from compiler.backends.tvm_fused.body import KernelBody, NotFusable
from compiler.backends.tvm_kernels import attention as katt
from compiler.backends.tvm_lower.registry import LowerCtx
from compiler.ops import elementwise as ew
from compiler.ops import linalg, nn, shape
from compiler.types import DType


def _read(kb: KernelBody):
    """(q, k, v, mask value or None, scale, k transposed) of the body, or NotFusable."""
    nodes = list(kb.body.nodes)
    transposed = nodes[0].op is not shape.transpose      # k arrives as (..., d, lk)
    k_source = None if transposed else nodes.pop(0).inputs[0]
    if len(nodes) < 3:
        raise NotFusable("not an attention body")
    mm, *mid, sm, pv = nodes
    if mm.op is not linalg.matmul or sm.op is not nn.softmax or pv.op is not linalg.matmul:
        raise NotFusable("not an attention body")
    scale, mask, cur = 1.0, None, mm.outputs[0]
    for n in mid:
        other = n.inputs[1] if n.inputs[0] is cur else n.inputs[0]
        if n.op in (ew.div, ew.mul) and other.is_const and other.const.size == 1:
            c = float(other.const.reshape(-1)[0])
            scale = 1.0 / c if n.op is ew.div else c
        elif n.op is ew.add:
            mask = other
        else:
            raise NotFusable(f"{n.op.name} inside the attention body")
        cur = n.outputs[0]
    q, k = mm.inputs[0], mm.inputs[1] if transposed else k_source
    if any(v.type.dtype is not DType.F32 for v in (q, k, pv.inputs[1])):
        raise NotFusable("the attention kernel is fp32")
    return q, k, pv.inputs[1], mask, scale, transposed


def _mask_arg(ctx: LowerCtx, kb: KernelBody, mask, args, scores: tuple[int, ...], bh: int, lk: int):
    """(the mask as (1 or bh, 1 or lq, lk), its batch, its rows); a dummy row where there is none."""
    if mask is None:
        return relax.const(np.zeros((1, 1, lk), np.float32)), 0, 0
    ms = tuple(mask.type.shape)
    *mbatch, mrows, _ = ms
    i = kb.operand_of(mask)
    arg = relax.const(np.ascontiguousarray(mask.const, np.float32)) if i is None else args[i]
    if ms[-1] != lk:
        arg = ctx.bb.emit(relax.op.broadcast_to(arg, ms[:-1] + (lk,)))
    batch = math.prod(mbatch)
    if batch not in (1, bh) or (batch == bh and tuple(mbatch) != scores[:-2]):
        arg = ctx.bb.emit(relax.op.broadcast_to(arg, scores[:-2] + (mrows, lk)))
        batch = bh
    return ctx.reshape(arg, (batch, mrows, lk)), batch, mrows


def emit_attention(ctx: LowerCtx, kb: KernelBody, args: list[relax.Expr]) -> relax.Expr:
    q, k, v, mask, scale, transposed = _read(kb)
    *batch, lq, d = q.type.shape
    lk, dv = v.type.shape[-2:]
    bh = math.prod(batch)
    tile = tuple(kb.node.attrs["tile"])
    tq, tk = tile if len(tile) == 2 else (lq, lk)
    idx = [kb.operand_of(x) for x in (q, k, v)]
    if None in idx:
        raise NotFusable("q, k and v must be operands of the attention kernel")
    scores = tuple(batch) + (lq, lk)
    marg, mbatch, mrows = _mask_arg(ctx, kb, mask, args, scores, bh, lk)
    try:
        spec = katt.AttentionSpec(bh, lq, lk, d, dv, scale, tq, tk, transposed, mbatch, mrows)
    except ValueError as e:
        raise NotFusable(str(e)) from None
    kshape = (bh, d, lk) if transposed else (bh, lk, d)
    ins = [ctx.reshape(args[idx[0]], (bh, lq, d)), ctx.reshape(args[idx[1]], kshape),
           ctx.reshape(args[idx[2]], (bh, lk, dv)), marg]
    gv = ctx.kernel(("attention", spec), lambda: katt.make_attention(spec), "attention")
    out = ctx.call_kernel(gv, ins, (bh, lq, dv))
    return ctx.reshape(out, kb.result.type.shape)
