"""The fused attention kernel of a `k.fused{kernel = "attention"}` node (passes.einsum.fuse_attention).

What the body computes is read by backends/attention_body.py; the node's
tile is (query block, key block), chosen by the cost model (passes.tiles; empty: passes.einsum's
default_tile). Batch dimensions are flattened into one; a mask that varies along batch dimensions
other than all of them is broadcast to the scores' batch first. A head repeat of K or
V (reshape, expand, reshape: repeat_interleave along the heads) is read in place by the kernel (grouped-
query attention); a causal mask (trilu(expand(c), upper, k) with c <= -1e9) becomes the kernel's
`causal` offset: no mask tensor, key blocks past the diagonal skipped.
"""
from __future__ import annotations

import math

import numpy as np
from tvm import relax

from compiler.backends.attention_body import Attention, read_attention
from compiler.backends.tvm_fused.body import KernelBody, NotFusable
from compiler.backends.tvm_kernels import attention as katt
from compiler.backends.tvm_lower.registry import LowerCtx
from compiler.ir import Value
from compiler.types import DType
from passes.einsum import default_tile


def _mask_dims(mask: Value, scores: tuple[int, ...], bh: int) -> tuple[tuple[int, ...], int, int, bool]:
    """(the mask's shape at the scores' rank, the kernel's mask batch (1 or bh), its rows (1 or lq), whether
    it must be broadcast to the scores' batch first: it varies along some batch dimensions, not all)."""
    ms = (1,) * (len(scores) - mask.type.rank) + tuple(mask.type.shape)
    *mbatch, mrows, _ = ms
    batch = math.prod(mbatch)
    spread = batch not in (1, bh) or (batch == bh and tuple(mbatch) != scores[:-2])
    return ms, bh if spread else batch, mrows, spread


def _mask_arg(ctx: LowerCtx, kb: KernelBody, mask, args, scores: tuple[int, ...], bh: int, lk: int):
    """The mask as (1 or bh, 1 or lq, lk); a dummy row where there is none."""
    if mask is None:
        return relax.const(np.zeros((1, 1, lk), np.float32))
    i = kb.operand_of(mask)
    arg = relax.const(np.ascontiguousarray(mask.const, np.float32)) if i is None else args[i]
    ms, batch, mrows, spread = _mask_dims(mask, scores, bh)
    if ms[-1] != lk:
        arg = ctx.bb.emit(relax.op.broadcast_to(ctx.reshape(arg, ms), ms[:-1] + (lk,)))
    if spread:
        arg = ctx.bb.emit(relax.op.broadcast_to(ctx.reshape(arg, ms[:-1] + (lk,)), scores[:-2] + (mrows, lk)))
    return ctx.reshape(arg, (batch, mrows, lk))


def attention_plan(kb: KernelBody, dtypes: tuple[DType, ...] = (DType.F32,)) -> tuple[katt.AttentionSpec, Attention]:
    """(the kernel's spec, what the body computes) of an attention body; NotFusable if the kernel cannot
    take it. The tile is the node's, or passes.einsum.default_tile's where it is empty (choose_tiles
    never ran: MLIR / CUDA pipelines, `--emit einsum`)."""
    a = read_attention(kb.body, dtypes)
    *batch, lq, d = a.q.type.shape
    lk, dv = a.v.type.shape[-2:]
    bh = math.prod(batch)
    if any(kb.operand_of(x) is None for x in (a.q, a.k, a.v)):
        raise NotFusable("q, k and v must be operands of the attention kernel")
    mbatch = mrows = 0
    if a.mask is not None:
        if kb.operand_of(a.mask) is None and not a.mask.is_const:
            raise NotFusable("the attention mask must be an operand or a constant")
        _, mbatch, mrows, _ = _mask_dims(a.mask, tuple(batch) + (lq, lk), bh)
    tile = tuple(kb.node.attrs["tile"])
    tq, tk = tile if len(tile) == 2 else default_tile(lq, lk)
    try:
        spec = katt.AttentionSpec(bh, lq, lk, d, dv, a.scale, tq, tk, False, mbatch, mrows,
                                  a.k_group, a.v_group, a.causal, a.zero_masked_rows)
    except ValueError as e:
        raise NotFusable(str(e)) from None
    return spec, a


def _view(ctx: LowerCtx, x: relax.Expr, shape) -> relax.Expr:
    """x with another shape and the same bytes: relax's memory.view, where a reshape would be a copy kernel
    (0.4 ms for 12 heads x 1024 x 64 floats)."""
    return ctx.bb.emit(relax.op.memory.view(x, tuple(int(d) for d in shape)))


def emit_attention(ctx: LowerCtx, kb: KernelBody, args: list[relax.Expr]) -> relax.Expr:
    spec, a = attention_plan(kb)
    bh, lq, lk, d, dv = spec.bh, spec.lq, spec.lk, spec.d, spec.dv
    idx = [kb.operand_of(x) for x in (a.q, a.k, a.v)]
    marg = _mask_arg(ctx, kb, a.mask, args, tuple(a.q.type.shape[:-2]) + (lq, lk), bh, lk)
    kh, vh = bh // a.k_group, bh // a.v_group
    # the kernel reads K as (heads, keys, d); a K the graph gives transposed is transposed back here
    k = _view(ctx, args[idx[1]], (kh, lk, d)) if not a.k_transposed else \
        ctx.bb.emit(relax.op.permute_dims(ctx.reshape(args[idx[1]], (kh, d, lk)), [0, 2, 1]))
    ins = [_view(ctx, args[idx[0]], (bh, lq, d)), k, _view(ctx, args[idx[2]], (vh, lk, dv)), marg]
    gv = ctx.kernel(("attention", spec), lambda: katt.make_attention(spec), "attention")
    out = ctx.call_kernel(gv, ins, (bh, lq, dv))
    return _view(ctx, out, kb.result.type.shape)
