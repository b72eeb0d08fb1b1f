"""Element-wise indexing: gather_elements / scatter_elements along one axis, gather_nd /
scatter_nd over leading axes, one_hot and trilu (triangle masks).

Indices may be negative (counted from the end, as in ONNX). An index out of range is an
invalid run-time input: the references raise `InvalidInput` naming the op.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from compiler.diagnostics import InvalidInput
from compiler.ops._util import norm_axis, same_dtype
from compiler.ops.registry import Attr, TypeRuleError, define
from compiler.types import DType, TensorType

INDEX_TYPES = (DType.I32, DType.I64)
REDUCTIONS = ("none", "add", "mul", "max", "min")


def _need_index(t: TensorType, op: str) -> None:
    if t.dtype not in INDEX_TYPES:
        raise TypeRuleError(f"{op} indices must be int32/int64, got {t.dtype.value}")


def normalize_indices(idx: np.ndarray, size: int | np.ndarray, op: str) -> np.ndarray:
    """Negative indices count from the end; anything outside [-size, size) is refused."""
    idx = idx.astype(np.int64)
    if np.any((idx < -size) | (idx >= size)):
        raise InvalidInput(f"{op}: an index is out of range [-{size}, {size})")
    return np.where(idx < 0, idx + size, idx)


def _along_axis(idx: np.ndarray, axis: int, at: np.ndarray) -> tuple[np.ndarray, ...]:
    """Full coordinates of every element of `idx`, with `at` in place of the axis coordinate."""
    grid = list(np.indices(idx.shape, sparse=True))
    grid[axis] = at
    return tuple(grid)


# -- gather_elements / scatter_elements -------------------------------------------
def _gather_elements_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x, idx = ins
    _need_index(idx, "gather_elements")
    axis = norm_axis(attrs["axis"], x.rank)
    if idx.rank != x.rank or any(i > d for k, (i, d) in enumerate(zip(idx.shape, x.shape)) if k != axis):
        raise TypeRuleError(f"gather_elements indices {idx.shape} do not fit data {x.shape} "
                            f"off axis {axis}")
    return [TensorType(idx.shape, x.dtype)]


def _gather_elements_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x, idx = ins
    axis = norm_axis(a["axis"], x.ndim)
    at = normalize_indices(idx, x.shape[axis], "gather_elements")
    return [x[_along_axis(idx, axis, at)]]


gather_elements = define(
    "nn.gather_elements", "out[i..., j, k...] = x[i..., idx[i..., j, k...], k...] along `axis` "
    "(ONNX GatherElements, torch.gather); out has the shape of idx.",
    _gather_elements_infer, _gather_elements_ref, 2, axis=Attr("int", 0))


def _reduce_into(y: np.ndarray, where: tuple[np.ndarray, ...], upd: np.ndarray, how: str) -> None:
    """Apply updates in order; repeated targets accumulate (`none`: the last one wins)."""
    if how == "none":
        y[where] = upd
    else:
        {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}[how].at(y, where, upd)


def _scatter_elements_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x, idx, upd = ins
    _need_index(idx, "scatter_elements")
    same_dtype([x, upd])
    axis = norm_axis(attrs["axis"], x.rank)
    if idx.shape != upd.shape or idx.rank != x.rank or \
            any(i > d for k, (i, d) in enumerate(zip(idx.shape, x.shape)) if k != axis):
        raise TypeRuleError(f"scatter_elements: indices {idx.shape}, updates {upd.shape}, data {x.shape}")
    if attrs["reduction"] not in REDUCTIONS:
        raise TypeRuleError(f"scatter reduction {attrs['reduction']!r}; expected one of {REDUCTIONS}")
    return [x]


def _scatter_elements_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x, idx, upd = ins
    axis = norm_axis(a["axis"], x.ndim)
    at = normalize_indices(idx, x.shape[axis], "scatter_elements")
    y = x.copy()
    full = tuple(np.broadcast_to(g, idx.shape) for g in _along_axis(idx, axis, at))
    _reduce_into(y, full, upd, a["reduction"])
    return [y]


scatter_elements = define(
    "nn.scatter_elements", "A copy of x with x[i..., idx[i..., j, k...], k...] = upd[i..., j, k...] "
    "along `axis`; reduction none/add/mul/max/min combines with what is there (in order).",
    _scatter_elements_infer, _scatter_elements_ref, 3, axis=Attr("int", 0),
    reduction=Attr("str", "none"))


# -- gather_nd / scatter_nd ---------------------------------------------------------
def _nd_check(x: TensorType, idx: TensorType, batch: int, op: str) -> int:
    _need_index(idx, op)
    k = idx.shape[-1] if idx.rank else 0
    if idx.rank < 1 or not 1 <= k <= x.rank - batch or idx.shape[:batch] != x.shape[:batch]:
        raise TypeRuleError(f"{op}: indices {idx.shape} do not fit data {x.shape} "
                            f"(batch_dims {batch})")
    return k


def _gather_nd_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x, idx = ins
    b = attrs["batch_dims"]
    k = _nd_check(x, idx, b, "gather_nd")
    return [TensorType(idx.shape[:-1] + x.shape[b + k:], x.dtype)]


def _nd_coords(x_shape: tuple[int, ...], idx: np.ndarray, b: int, op: str) -> tuple[np.ndarray, ...]:
    """Coordinates (batch axes then the k indexed axes) of every index tuple, normalized."""
    k = idx.shape[-1]
    sizes = np.array(x_shape[b:b + k])
    at = normalize_indices(idx, sizes, op)
    batch = [np.arange(d).reshape((-1,) + (1,) * (idx.ndim - 2 - i))
             for i, d in enumerate(idx.shape[:b])]
    return tuple(batch) + tuple(at[..., j] for j in range(k))


def _gather_nd_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x, idx = ins
    return [np.ascontiguousarray(x[_nd_coords(x.shape, idx, a["batch_dims"], "gather_nd")])]


gather_nd = define(
    "nn.gather_nd", "ONNX GatherND: each last-axis tuple of idx (after batch_dims shared leading "
    "axes) picks an element or slice of x.", _gather_nd_infer, _gather_nd_ref, 2,
    batch_dims=Attr("int", 0))


def _scatter_nd_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x, idx, upd = ins
    same_dtype([x, upd])
    k = _nd_check(x, idx, 0, "scatter_nd")
    if upd.shape != idx.shape[:-1] + x.shape[k:]:
        raise TypeRuleError(f"scatter_nd updates {upd.shape} != {idx.shape[:-1] + x.shape[k:]}")
    if attrs["reduction"] not in REDUCTIONS:
        raise TypeRuleError(f"scatter reduction {attrs['reduction']!r}; expected one of {REDUCTIONS}")
    return [x]


def _scatter_nd_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x, idx, upd = ins
    y = x.copy()
    _reduce_into(y, _nd_coords(x.shape, idx, 0, "scatter_nd"), upd, a["reduction"])
    return [y]


scatter_nd = define(
    "nn.scatter_nd", "ONNX ScatterND: a copy of x where each last-axis tuple of idx names an "
    "element or slice replaced by (or combined with) the matching updates, in order.",
    _scatter_nd_infer, _scatter_nd_ref, 3, reduction=Attr("str", "none"))


# -- one_hot / trilu ----------------------------------------------------------------
def _one_hot_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    idx, values = ins
    if not idx.dtype.is_int and not idx.dtype.is_float:
        raise TypeRuleError(f"one_hot indices must be numeric, got {idx.dtype.value}")
    if values.shape != (2,):
        raise TypeRuleError(f"one_hot values must have shape (2,) (off, on), got {values.shape}")
    if attrs["depth"] < 1:
        raise TypeRuleError(f"one_hot depth {attrs['depth']} < 1")
    axis = norm_axis(attrs["axis"], idx.rank + 1)
    return [TensorType(idx.shape[:axis] + (attrs["depth"],) + idx.shape[axis:], values.dtype)]


def _one_hot_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    idx, values = ins
    depth = a["depth"]
    axis = norm_axis(a["axis"], idx.ndim + 1)
    i = np.trunc(idx).astype(np.int64) if idx.dtype.kind == "f" else idx.astype(np.int64)
    i = np.where(i < 0, i + depth, i)               # still outside [0, depth): an all-off row
    hot = np.expand_dims(i, axis) == np.arange(depth).reshape(
        [-1 if k == axis else 1 for k in range(idx.ndim + 1)])
    return [np.where(hot, values[1], values[0]).astype(values.dtype)]


one_hot = define("nn.one_hot", "values[1] where the position along the new `axis` equals the "
                 "index (negative: from the end), values[0] elsewhere; indices outside [-depth, "
                 "depth) give an all-off row.", _one_hot_infer, _one_hot_ref, 2,
                 depth=Attr("int"), axis=Attr("int", -1))


def _trilu_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    if ins[0].rank < 2:
        raise TypeRuleError("trilu needs rank >= 2")
    return [ins[0]]


def _trilu_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x = ins[0]
    fn = np.triu if a["upper"] else np.tril
    return [fn(x, a["k"]).astype(x.dtype)]


trilu = define("nn.trilu", "Keep the upper (j - i >= k) or lower (j - i <= k) triangle of the "
               "last two axes; zero elsewhere.", _trilu_infer, _trilu_ref, 1,
               upper=Attr("bool", True), k=Attr("int", 0))
