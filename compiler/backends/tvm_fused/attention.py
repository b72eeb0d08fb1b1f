"""The fused attention kernel of a `k.fused{kernel = "attention"}` node (passes.einsum.fuse_attention).

Its body is [scaled] q, [scaled] [repeated] k -> matmul(q, [transpose] k) -> [div | mul by a scalar]
-> [add mask] -> softmax(last axis) -> [where(isnan(p), 0, p)] -> matmul(., [repeated] v); the node's
tile is (query block, key block), chosen by the cost model (passes.tiles; empty: passes.einsum's
default_tile). Batch dimensions are flattened into one; a mask that varies along batch dimensions
other than all of them is broadcast to the scores' batch first. A head repeat of K or
V (reshape, expand, reshape: repeat_interleave along the heads) is read in place by the kernel (grouped-
query attention); a causal mask (trilu(expand(c), upper, k) with c <= -1e9) becomes the kernel's
`causal` offset: no mask tensor, key blocks past the diagonal skipped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tvm import relax

from compiler.backends.tvm_fused.body import KernelBody, NotFusable
from compiler.backends.tvm_kernels import attention as katt
from compiler.backends.tvm_lower.registry import LowerCtx
from compiler.ir import Value
from compiler.ops import elementwise as ew
from compiler.ops import indexing, linalg, nn, shape
from compiler.ops import unary_math as um
from compiler.types import DType
from passes.einsum import default_tile

MASKED = -1e9       # a causal fill at or below this removes its keys (passes.einsum.MASKED)


@dataclass
class Attention:
    """What the body computes, in the kernel's terms."""

    q: Value
    k: Value
    v: Value
    mask: Value | None        # None: no mask tensor (none, or causal)
    scale: float
    k_transposed: bool        # k arrives as (..., d, lk)
    k_group: int
    v_group: int
    causal: int               # -1, or the offset of the causal mask
    zero_masked_rows: bool


def _scalar(v: Value) -> float | None:
    return float(v.const.reshape(-1)[0]) if v.is_const and v.const.size == 1 else None


def _unscale(v: Value) -> tuple[Value, float]:
    """v = src * c1 / c2 ... with scalar constants: (src, the factor)."""
    factor = 1.0
    while (n := v.producer) is not None and n.op in (ew.mul, ew.div) and len(n.inputs) == 2:
        x, other = (n.inputs[1], n.inputs[0]) if n.inputs[0].is_const else n.inputs
        c = _scalar(other)
        if c is None or c == 0 or x.is_const or (n.op is ew.div and n.inputs[0] is not x):
            break
        factor, v = factor * (1.0 / c if n.op is ew.div else c), x
    return v, factor


def _unrepeat(v: Value) -> tuple[Value, int]:
    """v = reshape(expand(reshape(src))) repeating each head (axis -3) of src n times: (src, n)."""
    r2 = v.producer
    ex = r2.inputs[0].producer if r2 is not None and r2.op is shape.reshape else None
    r1 = ex.inputs[0].producer if ex is not None and ex.op is shape.expand else None
    if r1 is None or r1.op is not shape.reshape:
        return v, 1
    src = tuple(r1.inputs[0].type.shape)
    n = ex.outputs[0].type.shape[-3] if len(src) >= 3 else 0
    if len(src) < 3 or tuple(r1.outputs[0].type.shape) != src[:-2] + (1,) + src[-2:] or \
            tuple(ex.outputs[0].type.shape) != src[:-2] + (n,) + src[-2:] or \
            tuple(v.type.shape) != src[:-3] + (src[-3] * n,) + src[-2:]:
        return v, 1
    return r1.inputs[0], n


def _causal(mask: Value) -> int:
    """The offset of a causal mask computed in the body (trilu(expand(c), upper, k >= 1)), or -1."""
    t = mask.producer
    src = t.inputs[0].producer if t is not None and t.op is indexing.trilu else None
    if src is None or not t.attrs["upper"] or t.attrs["k"] < 1 or src.op is not shape.expand:
        return -1
    c = _scalar(src.inputs[0])
    return t.attrs["k"] - 1 if c is not None and c <= MASKED else -1


def _read(kb: KernelBody, dtypes: tuple[DType, ...] = (DType.F32,)) -> Attention:
    """The body, walked back from its result; NotFusable if it is not an attention body whose q, k, v are of
    one of `dtypes` (the CPU kernel: float32; the GPU's: float16 too)."""
    pv = kb.result.producer
    if pv is None or pv.op is not linalg.matmul:
        raise NotFusable("not an attention body")
    p, guard = pv.inputs[0], False
    if p.producer is not None and p.producer.op is ew.cast:      # float16: P cast back from float32
        p = p.producer.inputs[0]
    w = p.producer
    if w is not None and w.op is ew.where and w.inputs[0].producer is not None and \
            w.inputs[0].producer.op is um.isnan and w.inputs[0].producer.inputs[0] is w.inputs[2] and \
            _scalar(w.inputs[1]) == 0.0:
        p, guard = w.inputs[2], True
    sm = p.producer
    if sm is None or sm.op is not nn.softmax:
        raise NotFusable("not an attention body")
    mm = next((n for n in kb.body.nodes if n.op is linalg.matmul), None)
    if mm is None or mm is pv:
        raise NotFusable("not an attention body")
    readers = {id(x): n for n in kb.body.nodes for x in n.inputs}
    cur, scale, mask = mm.outputs[0], 1.0, None
    while cur is not sm.inputs[0]:
        n = readers.get(id(cur))
        other = None if n is None or len(n.inputs) != 2 else n.inputs[1] if n.inputs[0] is cur else n.inputs[0]
        c = _scalar(other) if other is not None else None
        if n is not None and n.op is ew.cast and n.outputs[0].type.dtype is DType.F32:   # float16 scores
            pass
        elif n is not None and n.op in (ew.mul, ew.div) and c and (n.op is ew.mul or n.inputs[0] is cur):
            scale *= 1.0 / c if n.op is ew.div else c
        elif n is not None and n.op is ew.add and mask is None and other is not None:
            mask = other
        else:
            raise NotFusable(f"{n.op.name if n else 'nothing'} between Q K^T and softmax")
        cur = n.outputs[0]
    q, q_scale = _unscale(mm.inputs[0])
    k, k_scale = _unscale(mm.inputs[1])
    t = k.producer
    r = k.type.rank
    transposed = not (t is not None and t.op is shape.transpose and
                      list(t.attrs["perm"]) == list(range(r - 2)) + [r - 1, r - 2])
    if not transposed:
        k, k_scale2 = _unscale(t.inputs[0])
        k_scale *= k_scale2
    k, k_group = _unrepeat(k)
    v, v_group = _unrepeat(pv.inputs[1])
    if q.type.dtype not in dtypes or any(x.type.dtype is not q.type.dtype for x in (k, v)):
        raise NotFusable(f"the attention kernel takes {' or '.join(t.value for t in dtypes)}")
    causal = _causal(mask) if mask is not None else -1
    return Attention(q, k, v, None if causal >= 0 else mask, scale * q_scale * k_scale, transposed,
                     k_group, v_group, causal, guard)


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
    a = _read(kb, dtypes)
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
