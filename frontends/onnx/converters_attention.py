"""The transformer ops of opset 23+: Attention, RMSNormalization and RotaryEmbedding, decomposed
into IR ops. Attention becomes the chain the attention fusion (passes/einsum.py) looks for:

    matmul(Q, transpose([repeat] K)) -> mul(scale) -> [add bias] -> softmax(-1) -> [NaN rows to 0]
      -> matmul(., [repeat] V)

with grouped-query heads repeated as reshape -> expand -> reshape, past keys/values concatenated
along the sequence, and every mask (attn_mask, is_causal, the sliding window of Attention-25 and
nonpad_kv_seqlen of Attention-24) summed into one additive bias of 0 / -inf entries."""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx

from compiler.ops import elementwise as ew
from compiler.ops import linalg, nn, reduce
from compiler.ops import shape as shape_ops
from compiler.ops import unary_math as um
from frontends.onnx.context import ConvertContext, Operand


def _reshape(ctx: ConvertContext, x: Operand, shape) -> Operand:
    return ctx.emit(shape_ops.reshape, [x], shape=tuple(int(d) for d in shape))


def _transpose(ctx: ConvertContext, x: Operand, perm) -> Operand:
    return ctx.emit(shape_ops.transpose, [x], perm=tuple(perm))


def _slice_last(ctx: ConvertContext, x: Operand, start: int, end: int, step: int = 1) -> Operand:
    return ctx.emit(shape_ops.slice_, [x], starts=(start,), ends=(end,), axes=(ctx.rank(x) - 1,), steps=(step,))


# -- RMSNormalization ------------------------------------------------------------------------
def _convert_rms_norm(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """Y = X / sqrt(mean(X^2 over axes [axis, rank)) + epsilon) * scale."""
    x, scale = ctx.input(0), ctx.input(1)
    rank = ctx.rank(x)
    if int(ctx.attr("stash_type", 1)) != 1:
        raise ctx.unsupported("stash_type other than 1 (float32 statistics)")
    axes = tuple(range(int(ctx.attr("axis", -1)) % rank, rank))
    ms = ctx.emit(reduce.reduce_mean, [ctx.emit(ew.mul, [x, x])], axes=axes, keepdims=True)
    eps = ctx.const(float(ctx.attr("epsilon", 1e-5)), like=ms)
    inv = ctx.emit(ew.reciprocal, [ctx.emit(ew.sqrt, [ctx.emit(ew.add, [ms, eps])])])
    return ctx.emit(ew.mul, [ctx.emit(ew.mul, [x, inv]), scale])


# -- RotaryEmbedding -------------------------------------------------------------------------
def _convert_rotary_embedding(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """Rotate the first rotary_embedding_dim features of every head by the cached angles (gathered
    at position_ids when given): pairs (x1, x2) are the two halves, or even/odd features when
    interleaved; (x1, x2) -> (cos x1 - sin x2, sin x1 + cos x2)."""
    x, cos, sin = ctx.input(0), ctx.input(1), ctx.input(2)
    dims = ctx.shape(x)
    if len(dims) == 4:                                   # (B, H, S, D) -> (B, S, H, D)
        x4 = _transpose(ctx, x, (0, 2, 1, 3))
    elif len(dims) == 3:
        heads = int(ctx.attr("num_heads", 0))
        if heads <= 0 or dims[2] % heads:
            raise ctx.invalid(f"a 3-D input of hidden size {dims[2]} needs num_heads dividing it")
        x4 = _reshape(ctx, x, (dims[0], dims[1], heads, dims[2] // heads))
    else:
        raise ctx.invalid(f"input of rank {len(dims)} (expected 3 or 4)")
    b, s, h, d = ctx.shape(x4)
    rot = int(ctx.attr("rotary_embedding_dim", 0)) or d
    if ctx.has_input(3):
        pos = ctx.input(3)
        cos, sin = (ctx.emit(shape_ops.gather, [c, pos], axis=0) for c in (cos, sin))
    if ctx.shape(cos)[-1] != rot // 2 or ctx.shape(sin)[-1] != rot // 2:
        raise ctx.invalid(f"cos/sin caches end in {ctx.shape(cos)[-1]}, expected rotary_embedding_dim/2 = {rot // 2}")
    cos, sin = (_reshape(ctx, c, (b, s, 1, rot // 2)) for c in (cos, sin))
    interleaved = bool(ctx.attr("interleaved", 0))
    x1 = _slice_last(ctx, x4, 0, rot, 2) if interleaved else _slice_last(ctx, x4, 0, rot // 2)
    x2 = _slice_last(ctx, x4, 1, rot, 2) if interleaved else _slice_last(ctx, x4, rot // 2, rot)
    real = ctx.emit(ew.sub, [ctx.emit(ew.mul, [cos, x1]), ctx.emit(ew.mul, [sin, x2])])
    imag = ctx.emit(ew.add, [ctx.emit(ew.mul, [sin, x1]), ctx.emit(ew.mul, [cos, x2])])
    if interleaved:
        pairs = [_reshape(ctx, t, (b, s, h, rot // 2, 1)) for t in (real, imag)]
        rotated = _reshape(ctx, ctx.emit(shape_ops.concat, pairs, axis=4), (b, s, h, rot))
    else:
        rotated = ctx.emit(shape_ops.concat, [real, imag], axis=3)
    if rot < d:
        rotated = ctx.emit(shape_ops.concat, [rotated, _slice_last(ctx, x4, rot, d)], axis=3)
    return _transpose(ctx, rotated, (0, 2, 1, 3)) if len(dims) == 4 else _reshape(ctx, rotated, dims)


# -- Attention -------------------------------------------------------------------------------
def _heads(ctx: ConvertContext, t: Operand, attr: str) -> Operand:
    """(B, S, hidden) -> (B, heads, S, hidden / heads); a 4-D input is already that."""
    dims = ctx.shape(t)
    if len(dims) == 4:
        return t
    heads = int(ctx.attr(attr, 0))
    if heads <= 0 or dims[2] % heads:
        raise ctx.invalid(f"3-D inputs need {attr} dividing the hidden size {dims[2]}")
    return _transpose(ctx, _reshape(ctx, t, (dims[0], dims[1], heads, dims[2] // heads)), (0, 2, 1, 3))


def _repeat_heads(ctx: ConvertContext, t: Operand, n: int) -> Operand:
    """Each head n times in place (grouped-query attention): reshape -> expand -> reshape."""
    if n == 1:
        return t
    b, h, s, d = ctx.shape(t)
    t = ctx.emit(shape_ops.expand, [_reshape(ctx, t, (b, h, 1, s, d))], shape=(b, h, n, s, d))
    return _reshape(ctx, t, (b, h * n, s, d))


def _static_bias(ctx: ConvertContext, batch: int, lq: int, lk: int, past: int) -> np.ndarray | None:
    """The data-independent part of the bias, (batch, 1, lq, lk) of 0 / -inf: is_causal,
    the sliding window (Attention-25) and nonpad_kv_seqlen (Attention-24), or None if none applies."""
    causal = bool(ctx.attr("is_causal", 0))
    left, right = int(ctx.attr("left_window_size", -1)), int(ctx.attr("right_window_size", -1))
    seqlen = ctx.const_input(6, "nonpad_kv_seqlen") if ctx.has_input(6) else None
    if not causal and left < 0 and right < 0 and seqlen is None:
        return None
    offset = (np.asarray(seqlen, np.int64).reshape(-1, 1, 1) - lq) if seqlen is not None and not past \
        else np.full((1, 1, 1), past, np.int64)
    diff = offset + np.arange(lq).reshape(1, lq, 1) - np.arange(lk).reshape(1, 1, lk)   # query pos - key
    allowed = np.ones(diff.shape, bool)
    if causal:
        allowed &= diff >= 0
    if left >= 0:
        allowed &= diff <= left
    if right >= 0:
        allowed &= -diff <= right
    if seqlen is not None:
        allowed = allowed & (np.arange(lk).reshape(1, 1, lk) < np.asarray(seqlen).reshape(-1, 1, 1))
    bias = np.where(allowed, np.float32(0), np.float32(-np.inf))
    return bias.reshape(bias.shape[0], 1, lq, lk) if bias.shape[0] > 1 else bias.reshape(lq, lk)


def _mask_bias(ctx: ConvertContext, lk: int, dtype) -> Operand | None:
    """attn_mask as an additive bias: a bool mask as 0 (attend) / -inf, a float mask as is; a mask
    shorter than the keys is padded with masked entries."""
    if not ctx.has_input(3):
        return None
    mask = ctx.input(3)
    dims = ctx.shape(mask)
    if ctx.np_dtype(mask) == np.bool_:
        mask = ctx.emit(ew.where, [mask, np.zeros((), dtype), np.full((), -np.inf, dtype)])
    if dims[-1] < lk:
        pad = np.full(tuple(dims[:-1]) + (lk - dims[-1],), -np.inf, ctx.np_dtype(mask))
        mask = ctx.emit(shape_ops.concat, [mask, pad], axis=len(dims) - 1)
    return mask


def _convert_attention(ctx: ConvertContext, node: onnx.NodeProto) -> list[Operand]:
    """Y = softmax(softcap(Q K^T * scale) + bias) V per head; also present_key / present_value
    (past concatenated with the new keys / values) and qk_matmul_output (mode 0/1: the scaled,
    softcapped scores; 2: plus the bias; 3: the softmax)."""
    q_in = ctx.input(0)
    q, k, v = _heads(ctx, q_in, "q_num_heads"), _heads(ctx, ctx.input(1), "kv_num_heads"), \
        _heads(ctx, ctx.input(2), "kv_num_heads")
    if ctx.has_input(4) != ctx.has_input(5):
        raise ctx.invalid("past_key and past_value must be given together")
    past = ctx.shape(ctx.input(4))[2] if ctx.has_input(4) else 0
    if past:
        k = ctx.emit(shape_ops.concat, [ctx.input(4), k], axis=2)
        v = ctx.emit(shape_ops.concat, [ctx.input(5), v], axis=2)
    present_k, present_v = k, v
    b, hq, lq, d = ctx.shape(q)
    hk, lk = ctx.shape(k)[1], ctx.shape(k)[2]
    if hq % hk or ctx.shape(v)[1] != hk:
        raise ctx.invalid(f"{hq} query heads cannot share {hk} key / {ctx.shape(v)[1]} value heads")
    dtype = ctx.np_dtype(q)
    scale = ctx.attr("scale")
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    root = np.asarray(np.sqrt(scale), dtype)            # as the spec scales: (Q sqrt(s)) (K^T sqrt(s))
    kt = ctx.emit(ew.mul, [_transpose(ctx, _repeat_heads(ctx, k, hq // hk), (0, 1, 3, 2)), root])
    scores = ctx.emit(linalg.matmul, [ctx.emit(ew.mul, [q, root]), kt])
    softcap = float(ctx.attr("softcap", 0.0))
    if softcap > 0:
        capped = ctx.emit(ew.tanh, [ctx.emit(ew.div, [scores, np.asarray(softcap, dtype)])])
        scores = ctx.emit(ew.mul, [capped, np.asarray(softcap, dtype)])
    qk_out = scores
    static = _static_bias(ctx, b, lq, lk, past)
    mask = _mask_bias(ctx, lk, dtype)
    bias = mask if static is None else static.astype(dtype) if mask is None else ctx.emit(ew.add, [mask, static.astype(dtype)])
    if bias is not None:
        scores = ctx.emit(ew.add, [scores, bias])
    mode = int(ctx.attr("qk_matmul_output_mode", 0))
    if mode == 2:
        qk_out = scores
    p = ctx.emit(nn.softmax, [scores], axis=ctx.rank(scores) - 1)
    if bias is not None and not (isinstance(bias, np.ndarray) and np.isfinite(bias.max(axis=-1)).all()):
        p = ctx.emit(ew.where, [ctx.emit(um.isnan, [p]), np.zeros((), dtype), p])   # fully masked rows -> 0
    if mode == 3:
        qk_out = p
    y = ctx.emit(linalg.matmul, [p, _repeat_heads(ctx, v, hq // hk)])
    if ctx.rank(q_in) == 3:
        y = _reshape(ctx, _transpose(ctx, y, (0, 2, 1, 3)), (b, lq, hq * ctx.shape(v)[3]))
    return [y, present_k, present_v, qk_out]


CONVERTERS: dict[str, Callable] = {
    "Attention": _convert_attention, "RMSNormalization": _convert_rms_norm,
    "RotaryEmbedding": _convert_rotary_embedding,
}
