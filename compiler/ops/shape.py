"""Data movement: reshape, transpose, concat, slice, gather, expand, tile, pad, resize."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from compiler.ops._util import broadcast_shapes, norm_axis, same_dtype
from compiler.ops.registry import Attr, TypeRuleError, define
from compiler.types import DType, TensorType


def _reshape_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    shape = attrs["shape"]
    if math.prod(shape) != ins[0].size or min(shape, default=1) < 0:
        raise TypeRuleError(f"cannot reshape {ins[0].shape} to {shape}")
    return [TensorType(shape, ins[0].dtype)]


reshape = define("nn.reshape", "Row-major reshape to the static `shape`.", _reshape_infer,
                 lambda ins, a: [ins[0].reshape(a["shape"])], 1, shape=Attr("ints"))


def _transpose_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    perm = attrs["perm"]
    if sorted(perm) != list(range(ins[0].rank)):
        raise TypeRuleError(f"perm {perm} is not a permutation of rank {ins[0].rank}")
    return [TensorType(tuple(ins[0].shape[p] for p in perm), ins[0].dtype)]


transpose = define("nn.transpose", "Permute axes: out.shape[i] = x.shape[perm[i]].", _transpose_infer,
                   lambda ins, a: [np.ascontiguousarray(np.transpose(ins[0], a["perm"]))], 1,
                   perm=Attr("ints"))


def _concat_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    dt = same_dtype(ins)
    rank = ins[0].rank
    axis = norm_axis(attrs["axis"], rank)
    for t in ins:
        if t.rank != rank or any(t.shape[i] != ins[0].shape[i] for i in range(rank) if i != axis):
            raise TypeRuleError(f"concat shapes {[t.shape for t in ins]} differ off axis {axis}")
    shape = list(ins[0].shape)
    shape[axis] = sum(t.shape[axis] for t in ins)
    return [TensorType(tuple(shape), dt)]


concat = define("nn.concat", "Join along axis.", _concat_infer,
                lambda ins, a: [np.concatenate(ins, axis=a["axis"])], (1, -1), axis=Attr("int"))


def slice_bounds(shape: tuple[int, ...], attrs: dict[str, Any]) -> list[tuple[int, int, int]]:
    """Per axis (start, stop, step) after clamping, as Python's slice.indices gives them."""
    bounds = [(0, d, 1) for d in shape]
    for st, en, ax, sp in zip(attrs["starts"], attrs["ends"], attrs["axes"], attrs["steps"]):
        ax = norm_axis(ax, len(shape))
        if sp == 0:
            raise TypeRuleError("slice step 0")
        bounds[ax] = slice(st, en, sp).indices(shape[ax])
    return bounds


def _as_slice(start: int, stop: int, step: int) -> slice:
    """slice.indices gives stop -1 for "through index 0" with a negative step; as a slice
    argument -1 would mean the last element, so it becomes None."""
    return slice(start, None if stop < 0 else stop, step)


def _slice_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    n = len(attrs["starts"])
    if not (len(attrs["ends"]) == len(attrs["axes"]) == len(attrs["steps"]) == n):
        raise TypeRuleError("slice starts/ends/axes/steps differ in length")
    shape = tuple(len(range(*b)) for b in slice_bounds(ins[0].shape, attrs))
    return [TensorType(shape, ins[0].dtype)]


slice_ = define("nn.slice", "Strided slice with Python/ONNX clamping: starts, ends, axes, steps.",
                _slice_infer,
                lambda ins, a: [ins[0][tuple(_as_slice(*b) for b in slice_bounds(ins[0].shape, a))].copy()],
                1, starts=Attr("ints"), ends=Attr("ints"), axes=Attr("ints"), steps=Attr("ints"))


def _gather_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x, idx = ins
    if idx.dtype not in (DType.I32, DType.I64):
        raise TypeRuleError(f"gather indices must be int32/int64, got {idx.dtype.value}")
    axis = norm_axis(attrs["axis"], x.rank)
    return [TensorType(x.shape[:axis] + idx.shape + x.shape[axis + 1:], x.dtype)]


def _gather_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x, idx = ins
    axis = norm_axis(a["axis"], x.ndim)
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return [np.take(x, idx, axis=axis)]


gather = define("nn.gather", "Take slices along axis at the (possibly negative) indices.",
                _gather_infer, _gather_ref, 2, axis=Attr("int", 0))


def _expand_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    if broadcast_shapes(ins[0].shape, attrs["shape"]) != attrs["shape"]:
        raise TypeRuleError(f"cannot broadcast {ins[0].shape} to {attrs['shape']}")
    return [TensorType(attrs["shape"], ins[0].dtype)]


expand = define("nn.expand", "Broadcast to the static `shape`.", _expand_infer,
                lambda ins, a: [np.broadcast_to(ins[0], a["shape"]).copy()], 1, shape=Attr("ints"))


def _tile_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    if len(attrs["repeats"]) != ins[0].rank:
        raise TypeRuleError("tile needs one repeat per axis")
    return [TensorType(tuple(d * r for d, r in zip(ins[0].shape, attrs["repeats"])), ins[0].dtype)]


tile = define("nn.tile", "Repeat the tensor `repeats[i]` times along axis i.", _tile_infer,
              lambda ins, a: [np.tile(ins[0], a["repeats"])], 1, repeats=Attr("ints"))


def _pad_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x, p = ins[0], attrs["pads"]
    if len(p) != 2 * x.rank:
        raise TypeRuleError("pad needs begins and ends for every axis")
    if attrs["mode"] not in ("constant", "reflect", "edge", "wrap"):
        raise TypeRuleError(f"pad mode {attrs['mode']!r}")
    shape = tuple(d + p[i] + p[i + x.rank] for i, d in enumerate(x.shape))
    if min(shape, default=1) < 0:
        raise TypeRuleError(f"pads {p} crop {x.shape} below zero")
    return [TensorType(shape, x.dtype)]


def _pad_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x, p, r = ins[0], a["pads"], ins[0].ndim
    crop = tuple(slice(max(-p[i], 0), x.shape[i] - max(-p[i + r], 0)) for i in range(r))
    x = x[crop]
    width = [(max(p[i], 0), max(p[i + r], 0)) for i in range(r)]
    if a["mode"] == "constant":
        return [np.pad(x, width, constant_values=np.array(a["value"]).astype(x.dtype))]
    return [np.pad(x, width, mode=a["mode"])]


pad = define("nn.pad", "Pad (negative pads crop) with a constant, or reflect/edge/wrap.",
             _pad_infer, _pad_ref, 1, pads=Attr("ints"), mode=Attr("str", "constant"),
             value=Attr("float", 0.0))


# -- resize -------------------------------------------------------------------
def _resize_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x, sizes, scales = ins[0], attrs["sizes"], attrs["scales"]
    if len(sizes) != x.rank or len(scales) != x.rank:
        raise TypeRuleError("resize needs sizes and scales for every axis")
    if attrs["mode"] not in ("nearest", "linear"):
        raise TypeRuleError(f"resize mode {attrs['mode']!r}")
    return [TensorType(sizes, x.dtype)]


def source_coords(out_size: int, in_size: int, scale: float, mode: str) -> np.ndarray:
    """Where output index i samples the input (ONNX coordinate_transformation_mode)."""
    # float32 arithmetic, as onnxruntime does: ties (x.5) land where its kernels put them
    i = np.arange(out_size, dtype=np.float32)
    scale = np.float32(scale)
    if mode == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (i + np.float32(0.5)) / scale - np.float32(0.5) if out_size > 1 else np.zeros(out_size)
    if mode == "align_corners":
        # The resized length is in_size * scale, not the floored output size (the ONNX spec
        # and its reference; they differ when in_size * scale is not an integer).
        length = np.float32(in_size) * scale
        return i * np.float32(in_size - 1) / (length - np.float32(1)) if length != 1 else np.zeros(out_size)
    if mode == "asymmetric":
        return i / scale
    if mode == "tf_half_pixel_for_nearest":
        return (i + 0.5) / scale
    raise TypeRuleError(f"coordinate_transformation_mode {mode!r}")


def nearest_index(c: np.ndarray, mode: str, in_size: int) -> np.ndarray:
    if mode == "round_prefer_floor":
        idx = np.where(c - np.floor(c) == 0.5, np.floor(c), np.round(c))
    elif mode == "round_prefer_ceil":
        idx = np.where(c - np.floor(c) == 0.5, np.ceil(c), np.round(c))
    elif mode == "floor":
        idx = np.floor(c)
    elif mode == "ceil":
        idx = np.ceil(c)
    else:
        raise TypeRuleError(f"nearest_mode {mode!r}")
    return np.clip(idx, 0, in_size - 1).astype(np.int64)


def _resize_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x = ins[0]
    y = x.astype(np.float64)
    for ax, (n_out, sc) in enumerate(zip(a["sizes"], a["scales"])):
        n_in = y.shape[ax]
        if n_out == n_in and sc == 1.0:
            continue
        c = source_coords(n_out, n_in, sc, a["coordinate_transformation_mode"])
        if a["mode"] == "nearest":
            y = np.take(y, nearest_index(c, a["nearest_mode"], n_in), axis=ax)
            continue
        c = np.clip(c, 0, n_in - 1)
        lo = np.floor(c).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        w = (c - lo).reshape([-1 if i == ax else 1 for i in range(y.ndim)])
        y = np.take(y, lo, axis=ax) * (1 - w) + np.take(y, hi, axis=ax) * w
    return [y.astype(x.dtype)]


resize = define("nn.resize", "Nearest or (multi)linear resize to `sizes`; `scales` drive the "
                "coordinate transform as in ONNX Resize.", _resize_infer, _resize_ref, 1,
                sizes=Attr("ints"), scales=Attr("floats"), mode=Attr("str", "nearest"),
                coordinate_transformation_mode=Attr("str", "half_pixel"),
                nearest_mode=Attr("str", "round_prefer_floor"))
