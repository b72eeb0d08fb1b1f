"""Converters for ONNX signal ops. DFT is our signal.dft over the second-last axis (the signal axis is
moved there). STFT gathers its frames and multiplies them by the constant twiddle matrix
(compiler.ops.signal.dft_matrix), the window folded into its rows when constant. The windows
(Hann, Hamming, Blackman) and MelWeightMatrix depend only on constant inputs: they are constants."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from compiler.ops import elementwise as ew
from compiler.ops import linalg, shape, signal
from frontends.onnx.context import ConvertContext, Operand


def _scalar(ctx: ConvertContext, i: int, what: str) -> np.ndarray | None:
    """Constant input i as a 0-d array of its own dtype (None when absent)."""
    v = ctx.const_input(i, what)
    return None if v is None else v.reshape(-1)[0]


def _dft_last(ctx: ConvertContext, x: Operand, mat: np.ndarray, c_out: int) -> Operand:
    """x (..., n, c) times the DFT matrix: (..., n * c) @ mat, reshaped to (..., bins, c_out)."""
    dims = ctx.shape(x)
    flat = ctx.emit(shape.reshape, [x], shape=dims[:-2] + (dims[-2] * dims[-1],))
    y = ctx.emit(linalg.matmul, [flat, ctx.const(mat, like=x)])
    return ctx.emit(shape.reshape, [y], shape=dims[:-2] + (mat.shape[1] // c_out, c_out))


def _parts(ctx: ConvertContext, x: Operand) -> int:
    c = ctx.shape(x)[-1]
    if c not in (1, 2):
        raise ctx.invalid(f"the last axis holds the real (1) or real and imaginary (2) parts, got {c}")
    return c


def _convert_dft(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """DFT-17 (axis attribute, default 1) and DFT-20 (axis input, default -2): the signal axis is moved
    next to the parts axis, transformed (signal.dft), and moved back."""
    x = ctx.input(0)
    rank = ctx.rank(x)
    _parts(ctx, x)
    axis = ctx.attr("axis", 1) if ctx.opset < 20 else _scalar(ctx, 2, "DFT axis")
    axis = (-2 if axis is None else int(axis)) % rank
    if axis == rank - 1:
        raise ctx.invalid("axis is the last axis, which holds the real and imaginary parts")
    inverse, onesided = bool(ctx.attr("inverse", 0)), bool(ctx.attr("onesided", 0))
    n = ctx.shape(x)[axis]
    length = _scalar(ctx, 1, "DFT dft_length")
    length = int(length) if length is not None else 2 * (n - 1) if inverse and onesided else n
    if length < 1:
        raise ctx.invalid(f"dft_length {length}")
    perm = [d for d in range(rank - 1) if d != axis] + [axis, rank - 1]
    moved = x if axis == rank - 2 else ctx.emit(shape.transpose, [x], perm=perm)
    y = ctx.emit(signal.dft, [moved], length=length, inverse=inverse, onesided=onesided)
    if axis == rank - 2:
        return y
    return ctx.emit(shape.transpose, [y], perm=[perm.index(d) for d in range(rank)])


def _convert_stft(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """Frames of frame_length samples every frame_step (a gather with constant indices), times the
    window, each transformed: (batch, frames, bins, 2)."""
    x = ctx.input(0)
    dims, c_in = ctx.shape(x), _parts(ctx, x)
    step = int(_scalar(ctx, 1, "STFT frame_step"))
    window = ctx.optional_input(2)
    frame = _scalar(ctx, 3, "STFT frame_length")
    frame = int(frame) if frame is not None else ctx.shape(window)[0] if window is not None else dims[1]
    if window is not None and ctx.shape(window) != (frame,):
        raise ctx.invalid(f"window of shape {list(ctx.shape(window))} for frames of {frame}")
    if step < 1 or not 1 <= frame <= dims[1]:
        raise ctx.invalid(f"frame_step {step} and frame_length {frame} for a signal of {dims[1]}")
    starts = np.arange(1 + (dims[1] - frame) // step) * step
    frames = ctx.emit(shape.gather, [x, starts[:, None] + np.arange(frame)[None, :]], axis=1)
    mat = signal.dft_matrix(frame, c_in, frame, False, bool(ctx.attr("onesided", 1)))
    if isinstance(window, np.ndarray):                  # a constant window scales the matrix rows
        mat = mat * np.repeat(window.astype(np.float64), c_in)[:, None]
    elif window is not None:
        frames = ctx.emit(ew.mul, [frames, ctx.emit(shape.reshape, [window], shape=(frame, 1))])
    return _dft_last(ctx, frames, mat, 2)


def _cosine_window(coefficients: tuple[float, ...]) -> Callable:
    """A window sum_j a_j cos(2 pi j n / N) of `size` samples, N = size (periodic) or size - 1."""
    def convert(ctx: ConvertContext, node: onnx.NodeProto) -> np.ndarray:
        size = int(_scalar(ctx, 0, f"{node.op_type} size"))
        period = size if ctx.attr("periodic", 1) else size - 1
        n = np.arange(size) / max(period, 1)
        w = sum(a * np.cos(2 * np.pi * j * n) for j, a in enumerate(coefficients))
        return np.asarray(w).astype(onnx.helper.tensor_dtype_to_np_dtype(ctx.attr("output_datatype", 1)))
    return convert


def _convert_mel_weight_matrix(ctx: ConvertContext, node: onnx.NodeProto) -> np.ndarray:
    """Triangular filters on the mel scale, as onnx's reference computes them (in the inputs' own
    dtypes, so the integer bin edges come out the same): (dft_length // 2 + 1, num_mel_bins)."""
    mels, length, rate, low, high = (_scalar(ctx, i, f"MelWeightMatrix {w}") for i, w in enumerate(
        ("num_mel_bins", "dft_length", "sample_rate", "lower_edge_hertz", "upper_edge_hertz")))
    mels, n_bins = int(mels), int(length) // 2 + 1
    low_mel, high_mel = (2595 * np.log1p(f / 700) / np.log(10) for f in (low, high))
    step = (high_mel - low_mel) / (mels + 2)
    hertz = 700 * np.expm1((np.arange(mels + 2) * step + low_mel) / 2595 * np.log(10))
    edges = ((length + 1) * hertz // rate).astype(int)
    out = np.zeros((n_bins, mels))
    for i, (lo, mid, hi) in enumerate(zip(edges, edges[1:], edges[2:])):
        if mid == lo:
            out[mid, i] = 1
        else:
            out[lo:mid + 1, i] = (np.arange(lo, mid + 1) - lo) / (mid - lo)
        if hi > mid:
            out[mid:hi, i] = (hi - np.arange(mid, hi)) / (hi - mid)
    return out.astype(onnx.helper.tensor_dtype_to_np_dtype(ctx.attr("output_datatype", 1)))


CONVERTERS: dict[str, Callable] = {
    "DFT": _convert_dft, "STFT": _convert_stft,
    "HannWindow": _cosine_window((0.5, -0.5)),
    "HammingWindow": _cosine_window((25 / 46, -21 / 46)),
    "BlackmanWindow": _cosine_window((0.42, -0.5, 0.08)),
    "MelWeightMatrix": _convert_mel_weight_matrix,
}
