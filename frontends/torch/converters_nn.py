"""ATen convolution, normalization, activation, softmax, pooling and attention."""
from __future__ import annotations

import math

import numpy as np

from compiler.ops import elementwise as ew
from compiler.ops import linalg, nn, reduce as rd, shape
from frontends.torch.importer import TorchContext, converts


def _arg(args, kwargs, i, name, default=None):
    return args[i] if len(args) > i else kwargs.get(name, default)


@converts("aten.convolution")
def _convolution(ctx: TorchContext, node, args, kwargs):
    x, w, b, stride, padding, dilation, transposed, output_padding, groups = args[:9]
    nsp = len(ctx.shape(w)) - 2
    if isinstance(padding, str):
        raise ctx.unsupported(f"padding='{padding}'")
    pads = tuple(padding) * 2 if len(padding) == nsp else tuple(padding)
    ins = [x, w] + ([b] if b is not None else [])
    if transposed:
        return ctx.emit(linalg.conv_transpose, ins, strides=tuple(stride), pads=pads,
                        dilations=tuple(dilation), groups=groups, output_padding=tuple(output_padding))
    return ctx.emit(linalg.conv, ins, strides=tuple(stride), pads=pads, dilations=tuple(dilation),
                    groups=groups)


@converts("aten._native_batch_norm_legit_no_training")
def _batch_norm(ctx: TorchContext, node, args, kwargs):
    x, weight, bias, mean, var, _momentum, eps = args[:7]
    c = ctx.shape(x)[1]
    dt = ctx.np_dtype(x)
    weight = np.ones(c, dt) if weight is None else weight
    bias = np.zeros(c, dt) if bias is None else bias
    y = ctx.emit(nn.batch_norm, [x, weight, bias, mean, var], epsilon=float(eps))
    return (y, None, None)          # save_mean / save_invstd are empty in inference


@converts("aten.native_layer_norm")
def _layer_norm(ctx: TorchContext, node, args, kwargs):
    x, normalized_shape, weight, bias, eps = args[:5]
    dt = ctx.np_dtype(x)
    weight = np.ones(tuple(normalized_shape), dt) if weight is None else weight
    ins = [x, weight] + ([bias] if bias is not None else [])
    y = ctx.emit(nn.layer_norm, ins, axis=-len(normalized_shape), epsilon=float(eps))
    return (y, None, None)


@converts("aten.gelu")
def _gelu(ctx, node, args, kwargs):
    return ctx.emit(ew.gelu, [args[0]], approximate=_arg(args, kwargs, 1, "approximate", "none"))


@converts("aten.silu")
def _silu(ctx, node, args, kwargs):
    return ctx.emit(ew.mul, [args[0], ctx.emit(ew.sigmoid, [args[0]])])


@converts("aten.hardsigmoid")
def _hardsigmoid(ctx, node, args, kwargs):
    return ctx.emit(ew.hard_sigmoid, [args[0]], alpha=1 / 6, beta=0.5)


@converts("aten.leaky_relu")
def _leaky_relu(ctx, node, args, kwargs):
    return ctx.emit(ew.leaky_relu, [args[0]], alpha=float(_arg(args, kwargs, 1, "negative_slope", 0.01)))


@converts("aten.elu")
def _elu(ctx, node, args, kwargs):
    if _arg(args, kwargs, 2, "scale", 1) != 1 or _arg(args, kwargs, 3, "input_scale", 1) != 1:
        raise ctx.unsupported("elu with scale != 1")
    return ctx.emit(ew.elu, [args[0]], alpha=float(_arg(args, kwargs, 1, "alpha", 1.0)))


@converts("aten.softplus")
def _softplus(ctx, node, args, kwargs):
    if _arg(args, kwargs, 1, "beta", 1) != 1:
        raise ctx.unsupported("softplus with beta != 1")
    return ctx.emit(ew.softplus, [args[0]])


@converts("aten.prelu", "aten._prelu_kernel")
def _prelu(ctx, node, args, kwargs):
    x, slope = args[:2]
    rank = len(ctx.shape(x))
    if rank >= 2 and len(ctx.shape(slope)) == 1 and ctx.shape(slope)[0] > 1:
        slope = ctx.emit(shape.reshape, [slope], shape=(ctx.shape(slope)[0],) + (1,) * (rank - 2))
    return ctx.emit(ew.prelu, [x, slope])


@converts("aten._softmax", "aten.softmax")
def _softmax(ctx, node, args, kwargs):
    return ctx.emit(nn.softmax, [args[0]], axis=args[1])


@converts("aten._log_softmax", "aten.log_softmax")
def _log_softmax(ctx, node, args, kwargs):
    return ctx.emit(nn.log_softmax, [args[0]], axis=args[1])


def _pool_attrs(ctx, x, kernel, stride, padding, dilation, ceil_mode):
    nsp = len(ctx.shape(x)) - 2
    kernel = tuple(kernel) * (nsp if len(kernel) == 1 else 1)
    stride = tuple(stride or kernel) * (nsp if len(stride or kernel) == 1 else 1)
    padding = tuple(padding) * (nsp if len(padding) == 1 else 1)
    dilation = tuple(dilation) * (nsp if len(dilation) == 1 else 1)
    return dict(kernel=kernel, strides=stride, pads=padding * 2, dilations=dilation,
                ceil_mode=bool(ceil_mode))


@converts("aten.max_pool2d_with_indices", "aten.max_pool2d", "aten.max_pool1d", "aten.max_pool3d",
          "aten.max_pool3d_with_indices")
def _max_pool(ctx: TorchContext, node, args, kwargs):
    x = args[0]
    attrs = _pool_attrs(ctx, x, args[1], _arg(args, kwargs, 2, "stride", []),
                        _arg(args, kwargs, 3, "padding", [0]), _arg(args, kwargs, 4, "dilation", [1]),
                        _arg(args, kwargs, 5, "ceil_mode", False))
    y = ctx.emit(nn.max_pool, [x], **attrs)
    if "with_indices" in str(node.target):
        if any(u.target.__name__ == "getitem" and u.args[1] == 1 for u in node.users
               if hasattr(u.target, "__name__")):
            raise ctx.unsupported("max-pool indices are used")
        return (y, None)
    return y


@converts("aten.avg_pool2d", "aten.avg_pool1d", "aten.avg_pool3d")
def _avg_pool(ctx: TorchContext, node, args, kwargs):
    x = args[0]
    attrs = _pool_attrs(ctx, x, args[1], _arg(args, kwargs, 2, "stride", []),
                        _arg(args, kwargs, 3, "padding", [0]), [1], _arg(args, kwargs, 4, "ceil_mode", False))
    if _arg(args, kwargs, 6, "divisor_override") is not None:
        raise ctx.unsupported("avg_pool divisor_override")
    return ctx.emit(nn.avg_pool, [x], count_include_pad=bool(_arg(args, kwargs, 5, "count_include_pad", True)),
                    **attrs)


@converts("aten._adaptive_avg_pool2d", "aten.adaptive_avg_pool2d")
def _adaptive_avg_pool(ctx: TorchContext, node, args, kwargs):
    x, out = args[0], tuple(args[1])
    h, w = ctx.shape(x)[2:]
    if out == (1, 1):
        return ctx.emit(rd.reduce_mean, [x], axes=(2, 3), keepdims=True)
    if h % out[0] or w % out[1]:
        raise ctx.unsupported(f"adaptive average pooling {h}x{w} -> {out[0]}x{out[1]} (not a divisor)")
    k = (h // out[0], w // out[1])
    return ctx.emit(nn.avg_pool, [x], kernel=k, strides=k, pads=(0, 0, 0, 0), dilations=(1, 1))


def _repeat_heads(ctx: TorchContext, x, n: int):
    """Each head (axis -3) of x repeated n times in place (enable_gqa), written as exporters write
    repeat_interleave: reshape (..., h, 1, s, d) -> expand (..., h, n, s, d) -> reshape (..., h n, s, d)."""
    *lead, h, s, d = ctx.shape(x)
    x = ctx.emit(shape.reshape, [x], shape=(*lead, h, 1, s, d))
    x = ctx.emit(shape.expand, [x], shape=(*lead, h, n, s, d))
    return ctx.emit(shape.reshape, [x], shape=(*lead, h * n, s, d))


@converts("aten.scaled_dot_product_attention")
def _sdpa(ctx: TorchContext, node, args, kwargs):
    """softmax(q @ k^T * scale + mask) @ v, as the math reference computes it. A boolean mask becomes
    the additive where(mask, 0, -inf); is_causal the constant upper-triangular -inf mask (key j
    visible to query i iff j <= i); enable_gqa repeats each K / V head for its group of query heads."""
    q, k, v = args[:3]
    mask = _arg(args, kwargs, 3, "attn_mask")
    if _arg(args, kwargs, 4, "dropout_p", 0.0) != 0.0:
        raise ctx.unsupported("attention with dropout")
    causal = _arg(args, kwargs, 5, "is_causal", False)
    scale = _arg(args, kwargs, 6, "scale") or 1 / math.sqrt(ctx.shape(q)[-1])
    dt = ctx.np_dtype(q)
    hq, hk, hv = (ctx.shape(x)[-3] if len(ctx.shape(x)) >= 3 else 1 for x in (q, k, v))
    if _arg(args, kwargs, 7, "enable_gqa", False) and (hk != hq or hv != hq):
        k = _repeat_heads(ctx, k, hq // hk) if hk != hq else k
        v = _repeat_heads(ctx, v, hq // hv) if hv != hq else v
    rank = len(ctx.shape(k))
    kt = ctx.emit(shape.transpose, [k], perm=tuple(range(rank - 2)) + (rank - 1, rank - 2))
    s = ctx.emit(ew.mul, [ctx.emit(linalg.matmul, [q, kt]), np.asarray(scale, dt)])
    if causal:
        lq, lk = ctx.shape(q)[-2], ctx.shape(k)[-2]
        s = ctx.emit(ew.add, [s, np.triu(np.full((lq, lk), -np.inf, dt), 1)])
    if mask is not None:
        if ctx.np_dtype(mask) == np.bool_:
            mask = ctx.emit(ew.where, [mask, np.asarray(0, dt), np.asarray(-np.inf, dt)])
        s = ctx.emit(ew.add, [s, mask])
    return ctx.emit(linalg.matmul, [ctx.emit(nn.softmax, [s], axis=-1), v])


@converts("aten.native_dropout", "aten.dropout")
def _dropout(ctx, node, args, kwargs):
    return (args[0], None) if "native" in str(node.target) else args[0]
