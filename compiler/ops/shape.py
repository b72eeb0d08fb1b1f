"""Data movement: reshape, transpose, concat, slice, gather, expand, tile, pad, resize."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

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
RESIZE_MODES = ("nearest", "linear", "cubic")


def _resize_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x, sizes, scales = ins[0], attrs["sizes"], attrs["scales"]
    if len(sizes) != x.rank or len(scales) != x.rank:
        raise TypeRuleError("resize needs sizes and scales for every axis")
    if attrs["mode"] not in RESIZE_MODES:
        raise TypeRuleError(f"resize mode {attrs['mode']!r}")
    if attrs["antialias"] and attrs["mode"] == "nearest":
        raise TypeRuleError("resize antialias applies to linear and cubic modes only")
    if len(attrs["roi"]) not in (0, 2 * x.rank):
        raise TypeRuleError(f"resize roi needs {2 * x.rank} values (starts, then ends), got {len(attrs['roi'])}")
    return [TensorType(sizes, x.dtype)]


def source_coords(out_size: int, in_size: int, scale: float, mode: str,
                  roi: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Where output index i samples the input (ONNX coordinate_transformation_mode); `roi` is the
    axis' (start, end) crop, as fractions of the input, for tf_crop_and_resize."""
    # float32 arithmetic, as onnxruntime does: ties (x.5) land where its kernels put them
    i = np.arange(out_size, dtype=np.float32)
    scale = np.float32(scale)
    # The resized length is in_size * scale, not the floored output size (the ONNX spec and its
    # reference; they differ when in_size * scale is not an integer).
    length = np.float32(in_size) * scale
    if mode == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (i + np.float32(0.5)) / scale - np.float32(0.5) if out_size > 1 else np.zeros(out_size)
    if mode == "align_corners":
        return i * np.float32(in_size - 1) / (length - np.float32(1)) if length != 1 else np.zeros(out_size)
    if mode == "asymmetric":
        return i / scale
    if mode == "tf_half_pixel_for_nearest":
        return (i + 0.5) / scale
    if mode == "half_pixel_symmetric":     # half_pixel, centred on the output's true extent
        offset = np.float32(in_size / 2) * (np.float32(1) - np.float32(out_size) / length)
        return offset + (i + np.float32(0.5)) / scale - np.float32(0.5)
    if mode == "tf_crop_and_resize":
        start, end, span = np.float32(roi[0]), np.float32(roi[1]), np.float32(in_size - 1)
        if length == 1:
            return np.full(out_size, (end - start) * span / np.float32(2) + start * span, np.float32)
        return i * (end - start) * span / (length - np.float32(1)) + start * span
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


def cubic_weights(r: Any, a: float) -> list[Any]:
    """Keys' cubic convolution weights of the pixels at -1, 0, 1, 2 from the one a point lies `r`
    (in [0, 1]) past; the ONNX Resize / GridSample formulas, for numpy arrays and TVM expressions."""
    s = 1 - r
    return [((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
            ((a + 2) * r - (a + 3)) * r * r + 1,
            ((a + 2) * s - (a + 3)) * s * s + 1,
            ((a * (s + 1) - 5 * a) * (s + 1) + 8 * a) * (s + 1) - 4 * a]


class ResizeTaps(NamedTuple):
    """One axis of a resize: out[i] = sum_k w[i, k] * x[idx[i, k]] (w None: nearest, x[idx[i, 0]]
    as is), and where `outside` (tf_crop_and_resize past the input) the extrapolation value."""
    idx: np.ndarray
    w: np.ndarray | None
    outside: np.ndarray | None


def _axis_roi(a: dict[str, Any], ax: int) -> tuple[float, float]:
    roi, rank = a["roi"], len(a["sizes"])
    if a["coordinate_transformation_mode"] != "tf_crop_and_resize" or not roi:
        return (0.0, 1.0)
    return (roi[ax], roi[ax + rank])


def resize_moves(a: dict[str, Any], ax: int, in_size: int) -> bool:
    """False where the resize is the identity along axis `ax`."""
    return a["sizes"][ax] != in_size or a["scales"][ax] != 1.0 or _axis_roi(a, ax) != (0.0, 1.0)


def _antialias_weights(ratio: np.ndarray, scale: float, a: dict[str, Any]) -> np.ndarray:
    """The linear (triangle) or cubic filter stretched by 1 / scale when downscaling, normalized;
    columns are the pixels ceil(c) - K/2 .. ceil(c) + K/2 - 1 (onnx.reference's op_resize)."""
    s = min(scale, 1.0)
    start = int(np.floor(-(2 if a["mode"] == "cubic" else 1) / s) + 1)
    t = np.abs((np.arange(start, 2 - start)[None, :] - ratio[:, None]) * s)
    if a["mode"] == "linear":
        w = np.clip(1 - t, 0, 1)
    else:
        A, t2 = a["cubic_coeff_a"], t * t
        w = np.where(t <= 1, (A + 2) * t * t2 - (A + 3) * t2 + 1,
                     np.where(t < 2, A * t * t2 - 5 * A * t2 + 8 * A * t - 4 * A, 0.0))
    return w / w.sum(axis=1, keepdims=True)


def _filter_taps(c: np.ndarray, scale: float, in_size: int, a: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Cubic or antialiased taps: a window of K pixels around each coordinate, edge pixels repeated
    (or, with exclude_outside, dropped and the weights renormalized)."""
    c = c.astype(np.float64)
    top = np.ceil(c)
    ratio = np.where(c == top, 1.0, c - np.floor(c))     # in (0, 1]: the window leans left
    if a["antialias"]:
        w = _antialias_weights(ratio, scale, a)
    else:
        w = np.stack(cubic_weights(ratio, a["cubic_coeff_a"]), axis=1)
    k = w.shape[1]
    idx = top.astype(np.int64)[:, None] - k // 2 + np.arange(k)[None, :]
    if a["exclude_outside"]:
        w = np.where((idx < 0) | (idx >= in_size), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    return np.clip(idx, 0, in_size - 1), w


def resize_taps(a: dict[str, Any], ax: int, in_size: int) -> ResizeTaps:
    """Axis `ax` of resize `a` as taps (shared by the reference and the backends)."""
    n_out, scale, coord = a["sizes"][ax], a["scales"][ax], a["coordinate_transformation_mode"]
    c = source_coords(n_out, in_size, scale, coord, _axis_roi(a, ax))
    outside = (c < 0) | (c > in_size - 1) if coord == "tf_crop_and_resize" else None
    outside = outside if outside is not None and outside.any() else None
    if a["mode"] == "nearest":
        return ResizeTaps(nearest_index(c, a["nearest_mode"], in_size)[:, None], None, outside)
    if a["mode"] == "linear" and not a["antialias"]:
        c = np.clip(c, 0, in_size - 1)
        lo = np.floor(c).astype(np.int64)
        w = c - lo
        return ResizeTaps(np.stack([lo, np.minimum(lo + 1, in_size - 1)], axis=1),
                          np.stack([1 - w, w], axis=1), outside)
    return ResizeTaps(*_filter_taps(c, scale, in_size, a), outside)


def _resize_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    """Separable: each moved axis in turn, in float64."""
    x = ins[0]
    y = x.astype(np.float64)
    for ax in range(x.ndim):
        if not resize_moves(a, ax, y.shape[ax]):
            continue
        t = resize_taps(a, ax, y.shape[ax])
        along = [-1 if i == ax else 1 for i in range(y.ndim)]
        if t.w is None:
            y = np.take(y, t.idx[:, 0], axis=ax)
        else:
            acc = np.take(y, t.idx[:, 0], axis=ax) * t.w[:, 0].reshape(along)
            for k in range(1, t.idx.shape[1]):
                acc = acc + np.take(y, t.idx[:, k], axis=ax) * t.w[:, k].reshape(along)
            y = acc
        if t.outside is not None:
            y = np.where(t.outside.reshape(along), a["extrapolation_value"], y)
    return [y.astype(x.dtype)]


resize = define("nn.resize", "Nearest, (multi)linear or cubic resize to `sizes`, as ONNX Resize: `scales` "
                "drive the coordinate transform, `roi` (starts then ends) the tf_crop_and_resize crop, "
                "`antialias` widens linear/cubic filters when downscaling.", _resize_infer, _resize_ref, 1,
                sizes=Attr("ints"), scales=Attr("floats"), mode=Attr("str", "nearest"),
                coordinate_transformation_mode=Attr("str", "half_pixel"),
                nearest_mode=Attr("str", "round_prefer_floor"), cubic_coeff_a=Attr("float", -0.75),
                exclude_outside=Attr("bool", False), antialias=Attr("bool", False),
                extrapolation_value=Attr("float", 0.0), roi=Attr("floats", ()))
