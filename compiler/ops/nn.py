"""Normalizations, softmax and windowed pooling (float)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from compiler.ops._util import need_float, norm_axis, same_dtype
from compiler.ops.registry import Attr, TypeRuleError, define
from compiler.types import DType, TensorType


def _channel_params_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x = ins[0]
    need_float(x, "normalization")
    same_dtype(ins)
    if x.rank < 2:
        raise TypeRuleError("normalization needs rank >= 2")
    for p in ins[1:]:
        if p.shape != (x.shape[1],):
            raise TypeRuleError(f"per-channel parameter shape {p.shape} != ({x.shape[1]},)")
    return [x]


def _bn_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x, scale, bias, mean, var = ins
    shp = (1, -1) + (1,) * (x.ndim - 2)
    inv = scale / np.sqrt(var + a["epsilon"])
    return [((x - mean.reshape(shp)) * inv.reshape(shp) + bias.reshape(shp)).astype(x.dtype)]


batch_norm = define("nn.batch_norm", "Inference batch norm: (x - mean) / sqrt(var + eps) * scale + bias "
                    "over axis 1. Inputs x, scale, bias, mean, var.",
                    _channel_params_infer, _bn_ref, 5, epsilon=Attr("float", 1e-5))


def _in_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x, scale, bias = ins
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    shp = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - mean) / np.sqrt(var + a["epsilon"]) * scale.reshape(shp) + bias.reshape(shp)
    return [y.astype(x.dtype)]


instance_norm = define("nn.instance_norm", "Normalize each (n, c) over the spatial axes, then scale "
                       "and shift per channel.", _channel_params_infer, _in_ref, 3,
                       epsilon=Attr("float", 1e-5))


def _ln_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x = ins[0]
    need_float(x, "layer_norm")
    same_dtype(ins)
    axis = norm_axis(attrs["axis"], x.rank)
    for p in ins[1:]:
        if np.broadcast_shapes(p.shape, x.shape[axis:]) != x.shape[axis:]:
            raise TypeRuleError(f"layer_norm parameter shape {p.shape} does not fit {x.shape[axis:]}")
    return [x]


def _ln_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x = ins[0]
    axes = tuple(range(norm_axis(a["axis"], x.ndim), x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + a["epsilon"]) * ins[1]
    if len(ins) > 2:
        y = y + ins[2]
    return [y.astype(x.dtype)]


layer_norm = define("nn.layer_norm", "Normalize over axes [axis, rank), then * scale (+ bias).",
                    _ln_infer, _ln_ref, (2, 3), axis=Attr("int", -1), epsilon=Attr("float", 1e-5))


def _lrn_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x = ins[0]
    size = a["size"]
    lo, hi = (size - 1) // 2, math.ceil((size - 1) / 2)
    sq = np.pad(x * x, [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2))
    s = sliding_window_view(sq, size, axis=1).sum(-1)
    return [(x / (a["bias"] + a["alpha"] / size * s) ** a["beta"]).astype(x.dtype)]


lrn = define("nn.lrn", "Local response normalization across channels (ONNX LRN).",
             lambda ins, a: (need_float(ins[0], "lrn"), [ins[0]])[1], _lrn_ref, 1,
             size=Attr("int"), alpha=Attr("float", 1e-4), beta=Attr("float", 0.75),
             bias=Attr("float", 1.0))


def _softmax_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    need_float(ins[0], "softmax")
    norm_axis(attrs["axis"], ins[0].rank)
    return [ins[0]]


def _softmax_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    """The sum accumulates in float32, except on bfloat16: that runs as numpy does on ml_dtypes arrays
    (onnx.reference's Attention and Softmax), every step rounded to bfloat16, each term of the sum too."""
    x = ins[0]
    e = np.exp(x - x.max(axis=a["axis"], keepdims=True))
    acc = e.dtype if e.dtype == DType.BF16.numpy else np.promote_types(e.dtype, np.float32)
    total = e.sum(axis=a["axis"], keepdims=True, dtype=acc).astype(e.dtype)
    return [(e / total).astype(x.dtype)]


def _log_softmax_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x = ins[0]
    s = x - x.max(axis=a["axis"], keepdims=True)
    return [(s - np.log(np.exp(s).sum(axis=a["axis"], keepdims=True))).astype(x.dtype)]


softmax = define("nn.softmax", "exp(x) / sum(exp(x)) along one axis.", _softmax_infer, _softmax_ref,
                 1, native_bf16=True, axis=Attr("int", -1))
log_softmax = define("nn.log_softmax", "log(softmax(x)) along one axis.", _softmax_infer,
                     _log_softmax_ref, 1, axis=Attr("int", -1))


# -- pooling ------------------------------------------------------------------
def pool_out_size(size: int, k: int, stride: int, lo: int, hi: int, dil: int, ceil_mode: bool) -> int:
    ext = (k - 1) * dil + 1
    num = size + lo + hi - ext
    out = (-(-num // stride) if ceil_mode else num // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + lo:   # last window must start inside the input
        out -= 1
    return out


def _pool_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x = ins[0]
    if attrs.get("count_include_pad") is not None or x.dtype is DType.BOOL:
        need_float(x, "average pooling")   # max pooling also takes integers (quantized graphs)
    k, s, p, d = attrs["kernel"], attrs["strides"], attrs["pads"], attrs["dilations"]
    nsp = x.rank - 2
    if not (len(k) == len(s) == len(d) == nsp and len(p) == 2 * nsp):
        raise TypeRuleError(f"pool attributes do not match {nsp} spatial axes")
    out = tuple(pool_out_size(x.shape[2 + i], k[i], s[i], p[i], p[i + nsp], d[i], attrs["ceil_mode"])
                for i in range(nsp))
    if min(out) < 1:
        raise TypeRuleError(f"pool output would be empty: {out}")
    return [TensorType(x.shape[:2] + out, x.dtype)]


def _windows(x: np.ndarray, a: dict[str, Any], fill: float, out_shape) -> np.ndarray:
    """(N, C, *out, *k) windows of x padded with `fill`, extra ceil-mode padding included."""
    nsp = x.ndim - 2
    k, s, p, d = a["kernel"], a["strides"], a["pads"], a["dilations"]
    hi = [max(p[i + nsp], (out_shape[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 - x.shape[2 + i] - p[i])
          for i in range(nsp)]
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p[i], hi[i]) for i in range(nsp)], constant_values=fill)
    ext = [(k[i] - 1) * d[i] + 1 for i in range(nsp)]
    win = sliding_window_view(xp, ext, axis=tuple(range(2, 2 + nsp)))
    win = win[(slice(None), slice(None)) + tuple(slice(None, None, st) for st in s)
              + tuple(slice(None, None, dd) for dd in d)]
    return win[(slice(None), slice(None)) + tuple(slice(0, o) for o in out_shape)]


def _max_pool_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x = ins[0]
    out = _pool_infer([TensorType.of(x)], a)[0].shape[2:]
    low = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
    win = _windows(x, a, low, out)
    return [win.max(axis=tuple(range(-(x.ndim - 2), 0))).astype(x.dtype)]


def _avg_pool_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x = ins[0]
    nsp = x.ndim - 2
    out = _pool_infer([TensorType.of(x)], a)[0].shape[2:]
    axes = tuple(range(-nsp, 0))
    total = _windows(x, a, 0.0, out).sum(axis=axes)
    return [(total / pool_counts(x.shape[2:], a, out).astype(x.dtype)).astype(x.dtype)]


def pool_counts(spatial: tuple[int, ...], a: dict[str, Any], out: tuple[int, ...]) -> np.ndarray:
    """avg_pool's divisor per output position, shape (1, 1, *out): the window's elements inside the
    input, plus explicit padding with count_include_pad (the ceil-mode overhang never counts)."""
    nsp = len(spatial)
    ones = np.ones((1, 1) + tuple(spatial), np.float64)
    if a["count_include_pad"]:
        p = a["pads"]
        ones = np.pad(ones, [(0, 0), (0, 0)] + [(p[i], p[i + nsp]) for i in range(nsp)], constant_values=1)
        a = dict(a, pads=(0,) * (2 * nsp))
    return _windows(ones, a, 0.0, out).sum(axis=tuple(range(-nsp, 0)))


_POOL_ATTRS = dict(kernel=Attr("ints"), strides=Attr("ints"), pads=Attr("ints"),
                   dilations=Attr("ints"), ceil_mode=Attr("bool", False))
max_pool = define("nn.max_pool", "Max over windows; padding never wins.", _pool_infer, _max_pool_ref,
                  1, **_POOL_ATTRS)
avg_pool = define("nn.avg_pool", "Mean over windows; count_include_pad counts explicit padding.",
                  _pool_infer, _avg_pool_ref, 1, count_include_pad=Attr("bool", False), **_POOL_ATTRS)
