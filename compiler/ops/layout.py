"""Layout ops: activations in the channel-blocked layout NCHW{b}c, as ordinary typed values.

`layout.pack` turns (n, c, h, w) into (n, ceil(c/b), h, w, b) with element [n, c // b, y, x, c % b]
= logical [n, c, y, x]; channels past c (when b does not divide c) hold `fill`. `layout.unpack`
is its inverse and drops the padding channels. The layout pass inserts them; a pack of an unpack
with the same block cancels.

`layout.unpack_weight` turns a weight packed the way the CPU kernel reads it (compiler/layouts.py: a conv's
dense, depthwise, generic or vnni form; a matmul's panels or vnni_matmul form) back into OIHW or (k, n). The
weight-packing pass puts it, applied to the packed constant, in front of the conv or matmul inside a fused
kernel: the IR then holds the bytes the kernel reads, and the interpreter still computes on the plain weight.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from compiler.ops.registry import Attr, TypeRuleError, define
from compiler.types import DType, TensorType


def _pack_infer(ins: list[TensorType], a: dict[str, Any]) -> list[TensorType]:
    x, b = ins[0], a["block"]
    if x.rank != 4 or b <= 0:
        raise TypeRuleError(f"pack needs a rank-4 NCHW tensor and a block > 0, got {x} and block {b}")
    n, c, h, w = x.shape
    return [TensorType((n, -(-c // b), h, w, b), x.dtype)]


def _pack_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x, b = ins[0], a["block"]
    n, c, h, w = x.shape
    cp = -(-c // b) * b
    if cp != c:
        pad = np.full((n, cp - c, h, w), a["fill"], x.dtype)
        x = np.concatenate([x, pad], axis=1)
    return [np.ascontiguousarray(x.reshape(n, cp // b, b, h, w).transpose(0, 1, 3, 4, 2))]


def _unpack_infer(ins: list[TensorType], a: dict[str, Any]) -> list[TensorType]:
    x, c = ins[0], a["channels"]
    if x.rank != 5 or not 0 < c <= x.shape[1] * x.shape[4] or c <= (x.shape[1] - 1) * x.shape[4]:
        raise TypeRuleError(f"unpack needs an (n, c/b, h, w, b) tensor holding {c} channels, got {x}")
    n, _, h, w, _ = x.shape
    return [TensorType((n, c, h, w), x.dtype)]


def _unpack_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x = ins[0]
    n, cb, h, w, b = x.shape
    y = x.transpose(0, 1, 4, 2, 3).reshape(n, cb * b, h, w)[:, :a["channels"]]
    return [np.ascontiguousarray(y)]


pack = define("layout.pack", "NCHW -> NCHW{block}c; channels past c (padding) hold `fill`.",
              _pack_infer, _pack_ref, 1, block=Attr("int"), fill=Attr("int", 0))
unpack = define("layout.unpack", "NCHW{b}c -> NCHW with `channels` channels (padding dropped).",
                _unpack_infer, _unpack_ref, 1, channels=Attr("int"))


_WEIGHT_RANK = {"dense": 6, "depthwise": 4, "generic": 5, "vnni": 7, "vnni_amx": 6, "vnni_rows": 4, "panels": 3, "vnni_matmul": 4,
                "vnni_matmul_int4": 5}


def _unpack_weight_infer(ins: list[TensorType], a: dict[str, Any]) -> list[TensorType]:
    from compiler.layouts import unpacked_conv_weight_shape
    p, form = ins[0], a["form"]
    if form not in _WEIGHT_RANK or p.rank != _WEIGHT_RANK[form]:
        raise TypeRuleError(f"unpack_weight: form must be one of {sorted(_WEIGHT_RANK)} with a tensor of that "
                            f"form's rank, got {form!r} and {p}")
    ch = a.get("channels", ())
    if form == "vnni" and (len(ch) != 2 or not 0 < ch[0] <= p.shape[0] * 16
                           or not 0 < ch[1] <= p.shape[1] * p.shape[4] * 4):
        raise TypeRuleError(f"unpack_weight: a vnni weight needs channels (co, ci) it holds, got {ch} for {p}")
    if form == "vnni_rows" and (len(ch) != 2 or not 0 < ch[0] <= p.shape[0] * 16 or not 0 < ch[1] <= p.shape[1] * 4):
        raise TypeRuleError(f"unpack_weight: a vnni_rows weight needs channels (co, ci) it holds, got {ch} for {p}")
    if form == "vnni_amx" and (len(ch) != 3 or not 0 < ch[0] <= p.shape[0] * 16 or not 0 < ch[1] <= p.shape[1] * 16
                               or not 0 < ch[2] <= 4):
        raise TypeRuleError(f"unpack_weight: a vnni_amx weight needs channels (co, ci, kw) it holds, got {ch} for {p}")
    if form == "vnni_matmul" and (len(ch) != 2 or not 0 < ch[0] <= p.shape[1] * 4
                                  or not 0 < ch[1] <= p.shape[0] * 16):
        raise TypeRuleError(f"unpack_weight: a vnni_matmul weight needs the (k, n) it holds, got {ch} for {p}")
    if form == "vnni_matmul_int4" and (p.dtype is not DType.U8 or len(ch) != 2 or not 0 < ch[0] <= p.shape[1] * 8
                                       or not 0 < ch[1] <= p.shape[0] * 64):
        raise TypeRuleError(f"unpack_weight: a vnni_matmul_int4 weight is uint8 nibble pairs holding the (k, n) "
                            f"it names, got {ch} for {p}")
    if form == "panels":
        return [TensorType((p.shape[1], p.shape[0] * p.shape[2]), p.dtype)]
    if form == "vnni_matmul":
        return [TensorType(tuple(ch), p.dtype)]
    if form == "vnni_matmul_int4":
        return [TensorType(tuple(ch), DType.I4)]
    return [TensorType(unpacked_conv_weight_shape(p.shape, form, ch), p.dtype)]


def _unpack_weight_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    from compiler.layouts import MATMUL_FORMS, unpack_conv_weight, unpack_matmul_weight
    unpack = unpack_matmul_weight if a["form"] in MATMUL_FORMS else unpack_conv_weight
    w = unpack(ins[0], a["form"], a.get("channels", ()))
    return [w.astype(DType.I4.numpy) if a["form"] == "vnni_matmul_int4" else w]


unpack_weight = define("layout.unpack_weight",
                       "A weight packed for the CPU kernel -> OIHW / (k, n): a conv's fp32 dense / depthwise / "
                       "generic or int8 vnni form (with its (co, ci) `channels`) or vnni_amx form (with its (co, ci, kw)) or vnni_rows form (a 1x1 conv's, with its (co, ci)), a matmul's fp32 panels, int8 "
                       "vnni_matmul or int4 vnni_matmul_int4 (uint8 nibble pairs) form (with its (k, n) `channels`).",
                       _unpack_weight_infer, _unpack_weight_ref, 1, form=Attr("str"), channels=Attr("ints", ()))


def is_const_weight(v) -> bool:
    """v is a constant, or layout.unpack_weight of a constant (a weight passes/weights.py packed)."""
    p = v.producer
    return v.is_const or (p is not None and p.op is unpack_weight and p.inputs[0].is_const)
