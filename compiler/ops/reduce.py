"""Reductions along axes, arg-reductions, cumulative sums and products, and top-k."""
from __future__ import annotations

from typing import Any

import numpy as np

from compiler.ops._util import as_dtype, norm_axis
from compiler.ops.registry import Attr, TypeRuleError, define
from compiler.types import DType, TensorType


def _reduce_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x = ins[0]
    axes = {norm_axis(a, x.rank) for a in attrs["axes"]}
    if len(axes) != len(attrs["axes"]):
        raise TypeRuleError(f"repeated reduction axes {attrs['axes']}")
    if attrs["keepdims"]:
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return [TensorType(shape, x.dtype)]


def _reduce(name: str, doc: str, fn):
    def ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
        x = ins[0]
        axes = tuple(norm_axis(ax, x.ndim) for ax in a["axes"])
        return [as_dtype(fn(x, axes, a["keepdims"]), x)]
    return define(f"nn.{name}", doc + " `axes` lists the reduced axes (all of them when reducing all).",
                  _reduce_infer, ref, 1, axes=Attr("ints"), keepdims=Attr("bool", True))


reduce_sum = _reduce("reduce_sum", "Sum.", lambda x, ax, k: np.sum(x, axis=ax, keepdims=k))
reduce_mean = _reduce("reduce_mean", "Mean.", lambda x, ax, k: np.mean(x, axis=ax, keepdims=k))
def lowest(dt: np.dtype, highest: bool = False):
    """The identity of max (min with highest=True): -inf, the type's minimum, or False."""
    if dt.kind == "f":
        return np.inf if highest else -np.inf
    if dt.kind == "b":
        return highest
    info = np.iinfo(dt)
    return info.max if highest else info.min


reduce_max = _reduce("reduce_max", "Maximum; over an empty set, -inf (the type's minimum, False).",
                     lambda x, ax, k: np.max(x, axis=ax, keepdims=k, initial=lowest(x.dtype)))
reduce_min = _reduce("reduce_min", "Minimum; over an empty set, +inf (the type's maximum, True).",
                     lambda x, ax, k: np.min(x, axis=ax, keepdims=k, initial=lowest(x.dtype, True)))
reduce_prod = _reduce("reduce_prod", "Product.", lambda x, ax, k: np.prod(x, axis=ax, keepdims=k))
reduce_l2 = _reduce("reduce_l2", "sqrt(sum(x^2)).",
                    lambda x, ax, k: np.sqrt(np.sum(x * x, axis=ax, keepdims=k)))


def _argmax_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    t = _reduce_infer(ins, {"axes": (attrs["axis"],), "keepdims": attrs["keepdims"]})[0]
    return [TensorType(t.shape, DType.I64)]


def _argmax_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x, axis = ins[0], norm_axis(a["axis"], ins[0].ndim)
    if a["select_last_index"]:
        idx = x.shape[axis] - 1 - np.argmax(np.flip(x, axis), axis=axis)
    else:
        idx = np.argmax(x, axis=axis)
    if a["keepdims"]:
        idx = np.expand_dims(idx, axis)
    return [idx.astype(np.int64)]


argmax = define("nn.argmax", "Index of the maximum along axis (first, or last if select_last_index).",
                _argmax_infer, _argmax_ref, 1, axis=Attr("int", 0), keepdims=Attr("bool", True),
                select_last_index=Attr("bool", False))


def _cumulative(name: str, doc: str, scan, identity: int):
    """A running `scan` (np.cumsum, np.cumprod) along axis, in the element type. exclusive shifts it by
    one (the first element is `identity`), reverse runs it from the end (as ONNX CumSum / CumProd)."""
    def ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
        x, axis = ins[0], norm_axis(a["axis"], ins[0].ndim)
        if a["reverse"]:
            x = np.flip(x, axis)
        y = scan(x, axis=axis, dtype=x.dtype)
        if a["exclusive"] and y.shape[axis]:
            first = np.full_like(np.take(y, [0], axis), identity)
            y = np.concatenate([first, np.delete(y, -1, axis)], axis)
        if a["reverse"]:
            y = np.flip(y, axis)
        return [np.ascontiguousarray(y)]
    return define(f"nn.{name}", doc + " exclusive/reverse as in ONNX.",
                  lambda ins, a: (norm_axis(a["axis"], ins[0].rank), [ins[0]])[1], ref, 1,
                  axis=Attr("int"), exclusive=Attr("bool", False), reverse=Attr("bool", False))


cumsum = _cumulative("cumsum", "Cumulative sum along axis (ONNX CumSum);", np.cumsum, 0)
cumprod = _cumulative("cumprod", "Cumulative product along axis (ONNX CumProd);", np.cumprod, 1)


def _topk_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x = ins[0]
    axis = norm_axis(attrs["axis"], x.rank)
    if not 0 <= attrs["k"] <= x.shape[axis]:
        raise TypeRuleError(f"topk k={attrs['k']} exceeds axis size {x.shape[axis]}")
    shape = x.shape[:axis] + (attrs["k"],) + x.shape[axis + 1:]
    return [TensorType(shape, x.dtype), TensorType(shape, DType.I64)]


def _topk_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x, axis, k = ins[0], norm_axis(a["axis"], ins[0].ndim), a["k"]
    key = -x if a["largest"] else x
    if np.issubdtype(x.dtype, np.unsignedinteger) and a["largest"]:
        key = -x.astype(np.int64)
    idx = np.take(np.argsort(key, axis=axis, kind="stable"), np.arange(k), axis=axis)
    return [np.take_along_axis(x, idx, axis), idx.astype(np.int64)]


topk = define("nn.topk", "The k largest (or smallest) along axis, sorted; ties keep the lower index. "
              "Outputs values and int64 indices.", _topk_infer, _topk_ref, 1,
              k=Attr("int"), axis=Attr("int", -1), largest=Attr("bool", True))
