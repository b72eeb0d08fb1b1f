"""The LLM ops of opsets 24-28 and ai.onnx.preview, decomposed into IR ops over static shapes:

- Swish (24) and SwiGLU (28): x * sigmoid(alpha x), and Swish(A) * B;
- TensorScatter (24), the KV-cache write: a scatter_elements along the sequence axis at
  write_indices + position (modulo the cache length when circular);
- CausalConvWithState (27): concat(past_state or zeros, x) -> depthwise conv -> [SiLU], with
  present_state the last k - 1 positions of that concatenation;
- LinearAttention (27): the recurrence over the (static) sequence, unrolled one token at a time,
  in float32 like onnx.reference (linear / gated / delta / gated_delta state updates, grouped-query
  reads of the per-KV-head state);
- ai.onnx.preview.FlexAttention (1): scaled Q K^T over repeated K/V heads -> score_mod ->
  softmax -> prob_mod -> matmul V, the modifier subgraphs inlined node by node through the
  ordinary converters (so any subgraph of supported ops with static shapes is accepted)."""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from compiler.diagnostics import Unsupported
from compiler.ops import elementwise as ew
from compiler.ops import indexing, linalg, nn
from compiler.ops import shape as shape_ops
from compiler.types import DType
from frontends.onnx.context import ConvertContext, Operand, onnx_dtype_name
from frontends.onnx.converters_attention import _heads, _repeat_heads, _reshape, _transpose

F32 = np.dtype(np.float32)


def _cast(ctx: ConvertContext, x: Operand, dtype) -> Operand:
    """x in `dtype` (no node when it already is)."""
    dtype = np.dtype(dtype)
    return x if ctx.np_dtype(x) == dtype else ctx.emit(ew.cast, [x], to=DType.from_numpy(dtype))


def _slice(ctx: ConvertContext, x: Operand, axis: int, start: int, end: int) -> Operand:
    """x[..., start:end, ...] along `axis`."""
    return ctx.emit(shape_ops.slice_, [x], starts=(start,), ends=(end,), axes=(axis,), steps=(1,))


# -- Swish / SwiGLU --------------------------------------------------------------------------
def _swish(ctx: ConvertContext, x: Operand, alpha: float = 1.0) -> Operand:
    """x * sigmoid(alpha * x) (SiLU when alpha is 1)."""
    gate = x if alpha == 1.0 else ctx.emit(ew.mul, [x, ctx.const(alpha, like=x)])
    return ctx.emit(ew.mul, [x, ctx.emit(ew.sigmoid, [gate])])


def _convert_swish(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """Y = X * sigmoid(alpha * X)."""
    return _swish(ctx, ctx.input(0), float(ctx.attr("alpha", 1.0)))


def _convert_swiglu(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """Y = Swish_alpha(A) * B for A and B of one shape (no broadcasting)."""
    a, b = ctx.input(0), ctx.input(1)
    if ctx.shape(a) != ctx.shape(b):
        raise ctx.invalid(f"A {ctx.shape(a)} and B {ctx.shape(b)} must have the same shape")
    return ctx.emit(ew.mul, [_swish(ctx, a, float(ctx.attr("alpha", 1.0))), b])


# -- TensorScatter ---------------------------------------------------------------------------
def _convert_tensor_scatter(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """present = past with update[..., s, ...] written at sequence index write_indices[batch] + s
    (mod max_sequence_length when mode is circular), as one scatter_elements along `axis`."""
    past, update = ctx.input(0), ctx.input(1)
    dims, udims = ctx.shape(past), ctx.shape(update)
    mode = ctx.attr("mode", "linear")
    if mode not in ("linear", "circular"):
        raise ctx.invalid(f"mode '{mode}' (expected linear or circular)")
    axis = int(ctx.attr("axis", -2)) % len(dims)
    if axis == 0 or len(udims) != len(dims) or udims[axis] > dims[axis] or \
            any(u != d for i, (u, d) in enumerate(zip(udims, dims)) if i != axis):
        raise ctx.invalid(f"update {udims} does not fit past_cache {dims} along axis {axis}")
    at_axis = [1] * len(dims)
    at_axis[axis] = udims[axis]
    index = np.arange(udims[axis], dtype=np.int64).reshape(at_axis)
    if ctx.has_input(2):
        starts = _reshape(ctx, _cast(ctx, ctx.input(2), np.int64), (dims[0],) + (1,) * (len(dims) - 1))
        index = ctx.emit(ew.add, [starts, index])
    if mode == "circular":            # indices are non-negative, so truncating division is floor
        wraps = ctx.emit(ew.div, [index, np.int64(dims[axis])])
        index = ctx.emit(ew.sub, [index, ctx.emit(ew.mul, [wraps, np.int64(dims[axis])])])
    index = ctx.emit(shape_ops.expand, [index], shape=tuple(udims))
    return ctx.emit(indexing.scatter_elements, [past, index, update], axis=axis, reduction="none")


# -- CausalConvWithState ---------------------------------------------------------------------
def _convert_causal_conv(ctx: ConvertContext, node: onnx.NodeProto) -> list[Operand]:
    """output = [SiLU](depthwise conv of concat(past_state or zeros, x) along length, valid
    padding, + bias); present_state = the last k - 1 positions of that concatenation."""
    x, w = ctx.input(0), ctx.input(1)
    activation = ctx.attr("activation", "none")
    if activation not in ("none", "silu", "swish"):
        raise ctx.invalid(f"activation '{activation}' (expected none, silu or swish)")
    if ctx.rank(x) != 3:
        raise ctx.invalid(f"input of rank {ctx.rank(x)} (expected (batch, channels, length))")
    b, c, length = ctx.shape(x)
    k = ctx.shape(w)[-1]
    if ctx.shape(w) != (c, 1, k):
        raise ctx.invalid(f"weight {ctx.shape(w)} (expected (channels, 1, k) = ({c}, 1, k))")
    past = ctx.input(3) if ctx.has_input(3) else np.zeros((b, c, k - 1), ctx.np_dtype(x))
    if ctx.shape(past) != (b, c, k - 1):
        raise ctx.invalid(f"past_state {ctx.shape(past)} (expected ({b}, {c}, {k - 1}))")
    padded = ctx.emit(shape_ops.concat, [past, x], axis=2) if k > 1 else x
    dtype = ctx.np_dtype(x)
    compute = F32 if dtype.itemsize < 4 else dtype      # float16: conv and SiLU each in float32, then rounded
    inputs = [_cast(ctx, t, compute) for t in [padded, w] + ([ctx.input(2)] if ctx.has_input(2) else [])]
    y = _cast(ctx, ctx.emit(linalg.conv, inputs, strides=(1,), pads=(0, 0), dilations=(1,), groups=c), dtype)
    if activation != "none":
        y = _cast(ctx, _swish(ctx, _cast(ctx, y, compute)), dtype)
    present = _slice(ctx, padded, 2, length, length + k - 1) if k > 1 else past
    return [y, present]


# -- LinearAttention -------------------------------------------------------------------------
_RULES = {"linear": (False, False), "gated": (True, False), "delta": (False, True),
          "gated_delta": (True, True)}                    # update_rule -> (decays, delta-corrects)


def _per_head(ctx: ConvertContext, t: Operand, what: str, widths: tuple[int, ...], heads: int,
              full: int | None = None) -> Operand:
    """A packed gate (B, T, n) as (B, n, T, 1) when n is in `widths` (one value per head, or one
    for all), or, when n is `full` = heads * d, as (B, heads, T, d)."""
    b, steps, last = ctx.shape(t)
    if last in widths:
        return _transpose(ctx, _reshape(ctx, t, (b, steps, last, 1)), (0, 2, 1, 3))
    if last == full:
        return _transpose(ctx, _reshape(ctx, t, (b, steps, heads, last // heads)), (0, 2, 1, 3))
    expected = widths + ((full,) if full else ())
    raise ctx.invalid(f"{what} of last dimension {last} (expected one of {expected})")


def _linear_attention_inputs(ctx: ConvertContext, gated: bool, delta: bool):
    """q (B, Hq, T, dk), k (B, Hkv, T, dk), v (B, Hkv, T, dv), the decay factors exp(decay) as
    (B, Hkv, dk or 1, T) and beta as (B, Hkv or 1, T, 1), all float32, after checking that the
    gates the update rule needs, and only those, are given."""
    for i, name, needed in ((4, "decay", gated), (5, "beta", delta)):
        if ctx.has_input(i) != needed:
            rule = ctx.attr("update_rule", "gated_delta")
            raise ctx.invalid(f"update_rule '{rule}' {'requires' if needed else 'forbids'} the {name} input")
    if any(ctx.rank(ctx.input(i)) != 3 for i in range(3)):
        raise ctx.invalid("query, key and value must be 3-D (B, T, heads * head_size)")
    q = _heads(ctx, _cast(ctx, ctx.input(0), F32), "q_num_heads")
    k, v = (_heads(ctx, _cast(ctx, ctx.input(i), F32), "kv_num_heads") for i in (1, 2))
    hkv, dk = ctx.shape(k)[1], ctx.shape(k)[3]
    if ctx.shape(q)[3] != dk:
        raise ctx.invalid(f"query head size {ctx.shape(q)[3]} differs from the key head size {dk}")
    decay = ctx.emit(ew.exp, [_transpose(ctx, _per_head(ctx, _cast(ctx, ctx.input(4), F32), "decay", (hkv,),
                                                        hkv, hkv * dk), (0, 1, 3, 2))]) if gated else None
    beta = _per_head(ctx, _cast(ctx, ctx.input(5), F32), "beta", (hkv, 1), hkv) if delta else None
    return q, k, v, decay, beta


def _recurrence(ctx: ConvertContext, q: Operand, k: Operand, v: Operand, decay: Operand | None,
                beta: Operand | None, state: Operand, scale: float) -> tuple[Operand, Operand]:
    """The outputs (B, Hq, T, dv) and the final state of the token-by-token recurrence over the
    state S (B, Hkv, dk, dv): [gated] S *= exp(g_t); [delta] v_t = beta_t (v_t - S^T k_t);
    S += k_t v_t^T; o_t = scale q_t^T S, S repeated for the query heads sharing it."""
    steps, hq, hkv = ctx.shape(q)[2], ctx.shape(q)[1], ctx.shape(k)[1]
    k_cols = _transpose(ctx, k, (0, 1, 3, 2))                                   # (B, Hkv, dk, T)
    outs = []
    for t in range(steps):
        k_t, v_t = _slice(ctx, k, 2, t, t + 1), _slice(ctx, v, 2, t, t + 1)     # (B, H, 1, d)
        if decay is not None:
            state = ctx.emit(ew.mul, [state, _slice(ctx, decay, 3, t, t + 1)])
        if beta is not None:
            retrieved = ctx.emit(linalg.matmul, [k_t, state])                    # (B, Hkv, 1, dv)
            v_t = ctx.emit(ew.mul, [_slice(ctx, beta, 2, t, t + 1), ctx.emit(ew.sub, [v_t, retrieved])])
        state = ctx.emit(ew.add, [state, ctx.emit(ew.mul, [_slice(ctx, k_cols, 3, t, t + 1), v_t])])
        read = ctx.emit(linalg.matmul, [_slice(ctx, q, 2, t, t + 1), _repeat_heads(ctx, state, hq // hkv)])
        outs.append(ctx.emit(ew.mul, [read, np.float32(scale)]))
    return (ctx.emit(shape_ops.concat, outs, axis=2) if len(outs) > 1 else outs[0]), state


def _convert_linear_attention(ctx: ConvertContext, node: onnx.NodeProto) -> list[Operand]:
    """The recurrence of `update_rule` over the sequence, in float32 from past_state (or zeros);
    chunk_size, a tuning hint for chunked kernels, does not change the result and is ignored.
    Output (B, T, Hq * dv) in the query's type, present_state (B, Hkv, dk, dv) in past_state's
    (or the query's) type."""
    rule = ctx.attr("update_rule", "gated_delta")
    if rule not in _RULES:
        raise ctx.invalid(f"update_rule '{rule}' (expected one of {', '.join(_RULES)})")
    q, k, v, decay, beta = _linear_attention_inputs(ctx, *_RULES[rule])
    b, hq, steps, dk = ctx.shape(q)
    hkv, dv = ctx.shape(k)[1], ctx.shape(v)[3]
    if hq % hkv:
        raise ctx.invalid(f"q_num_heads {hq} is not a multiple of kv_num_heads {hkv}")
    state = _cast(ctx, ctx.input(3), F32) if ctx.has_input(3) else np.zeros((b, hkv, dk, dv), F32)
    if ctx.shape(state) != (b, hkv, dk, dv):
        raise ctx.invalid(f"past_state {ctx.shape(state)} (expected {(b, hkv, dk, dv)})")
    scale = float(ctx.attr("scale", 0.0)) or 1.0 / math.sqrt(dk)
    y, state = _recurrence(ctx, q, k, v, decay, beta, state, scale)
    y = _reshape(ctx, _transpose(ctx, y, (0, 2, 1, 3)), (b, steps, hq * dv))
    state_type = ctx.np_dtype(ctx.input(3) if ctx.has_input(3) else ctx.input(0))
    return [_cast(ctx, y, ctx.np_dtype(ctx.input(0))), _cast(ctx, state, state_type)]


# -- FlexAttention (ai.onnx.preview) ---------------------------------------------------------
_PRECISIONS = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64}


def _softmax_dtype(ctx: ConvertContext, dtype: np.dtype) -> np.dtype:
    """softmax_precision when given, else float32 below 32 bits and the input type otherwise."""
    precision = ctx.attr("softmax_precision")
    if precision is None:
        return F32 if dtype.itemsize < 4 else dtype
    if int(precision) not in _PRECISIONS:
        raise ctx.unsupported(f"softmax_precision {onnx_dtype_name(int(precision))} "
                              "(supported: float16, float32, float64)")
    return np.dtype(_PRECISIONS[int(precision)])


def _apply_modifier(ctx: ConvertContext, node: onnx.NodeProto, attr: str, x: Operand) -> Operand:
    """Inline the graph attribute `attr` (one tensor in, one out) on x, converting its nodes with
    the ordinary converters in a scope that sees the outer values; its result is cast to x's type,
    as the reference does."""
    graph = ctx.attr(attr)
    if graph is None:
        return x
    from frontends.onnx import importer          # the importer imports this module
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ctx.invalid(f"{attr} has {len(graph.input)} inputs and {len(graph.output)} outputs "
                          "(expected 1 and 1)")
    try:
        importer._check_for_unsupported_ops(graph, ctx.file, ctx.opset)
    except Unsupported as e:
        raise ctx.unsupported(f"{attr} subgraph: {e.message}") from None
    outer_env, outer_used, name = ctx.env, ctx.used, ctx.node_name
    ctx.env = {**outer_env, graph.input[0].name: x,
               **{t.name: numpy_helper.to_array(t) for t in graph.initializer}}
    ctx.used = outer_used | {i for n in graph.node for i in n.input} | {graph.output[0].name}
    try:
        for i, sub in enumerate(graph.node):
            importer._convert_node(ctx, sub, f"{name}/{attr}/{importer._node_name(sub, i)}")
        if graph.output[0].name not in ctx.env:
            raise ctx.invalid(f"{attr} never produces its output '{graph.output[0].name}'")
        y = ctx.env[graph.output[0].name]
    finally:
        ctx.env, ctx.used = outer_env, outer_used
        ctx.begin(node, name)
    if ctx.shape(y) != ctx.shape(x):
        raise ctx.invalid(f"{attr} changes the shape {ctx.shape(x)} to {ctx.shape(y)}")
    return _cast(ctx, y, ctx.np_dtype(x))


def _convert_flex_attention(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """Y = prob_mod(softmax(score_mod((Q sqrt(s)) (K sqrt(s))^T))) V per head, K and V heads
    repeated for the query heads sharing them; scores, probabilities and the last matmul in the
    softmax precision, Y in V's type."""
    q, k, v = ctx.input(0), ctx.input(1), ctx.input(2)
    if any(ctx.rank(t) != 4 for t in (q, k, v)):
        raise ctx.invalid("Q, K and V must be 4-D (batch, heads, sequence, head_size)")
    hq, e = ctx.shape(q)[1], ctx.shape(q)[3]
    hkv = ctx.shape(k)[1]
    if ctx.shape(v)[1] != hkv or hq % hkv or ctx.shape(k)[3] != e or ctx.shape(k)[2] != ctx.shape(v)[2]:
        raise ctx.invalid(f"Q {ctx.shape(q)}, K {ctx.shape(k)} and V {ctx.shape(v)} do not agree")
    dtype = ctx.np_dtype(q)
    compute = _softmax_dtype(ctx, dtype)
    scale = ctx.attr("scale")
    root = np.asarray(np.sqrt(np.float32(1.0 / math.sqrt(e) if scale is None else scale)), dtype)
    kt = _transpose(ctx, ctx.emit(ew.mul, [_repeat_heads(ctx, k, hq // hkv), root]), (0, 1, 3, 2))
    scores = _cast(ctx, ctx.emit(linalg.matmul, [ctx.emit(ew.mul, [q, root]), kt]), compute)
    scores = _apply_modifier(ctx, node, "score_mod", scores)
    probs = ctx.emit(nn.softmax, [scores], axis=3)
    probs = _apply_modifier(ctx, node, "prob_mod", probs)
    y = ctx.emit(linalg.matmul, [probs, _cast(ctx, _repeat_heads(ctx, v, hq // hkv), compute)])
    return _cast(ctx, y, ctx.np_dtype(v))


CONVERTERS: dict[str, Callable] = {
    "Swish": _convert_swish, "SwiGLU": _convert_swiglu, "TensorScatter": _convert_tensor_scatter,
    "CausalConvWithState": _convert_causal_conv, "LinearAttention": _convert_linear_attention,
    "ai.onnx.preview.FlexAttention": _convert_flex_attention,
}
