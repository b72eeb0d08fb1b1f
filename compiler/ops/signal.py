"""signal.dft: a discrete Fourier transform over the second-last axis (ONNX DFT once the frontend has
moved the signal axis there). The last axis holds the parts: 1 (real) or 2 (real, imaginary).

The reference is numpy's FFT (pocketfft), as onnx.reference computes DFT and as ONNX's conformance
cases were made: the same round-off, not only the same transform. numpy >= 2 transforms a complex
operand inversely (ifft, irfft) in its own precision, float32 for float32 data, but runs every other
transform (fft, rfft, and ifft of a real operand) in float64, rounding once at the end (`dft_precision`).

The lowerings follow it: where pocketfft's complex FFT has a plan here (`fft_planned`; the plans are
compiler.ops.pocketfft's), `dft_by_fft` performs its float operations in numpy's precision and agrees with
the reference bit for bit. ONNX's inverse cases need that: their expected outputs hold float32 round-off
(1.9e-7) where the true value is 0, past their atol of 1e-7. Elsewhere (inverse onesided transforms, which
are pocketfft's real FFT, and lengths without a plan) they compute the transform as one matmul with the
constant matrix `dft_matrix` (exact twiddles) in numpy's precision, which agrees with the reference within
float round-off.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from compiler.ops import pocketfft
from compiler.ops._util import need_float
from compiler.ops.registry import Attr, TypeRuleError, define
from compiler.types import TensorType


def dft_bins(length: int, inverse: bool, onesided: bool) -> tuple[int, int]:
    """(output samples along the signal axis, output parts) of a length-`length` transform."""
    if inverse and onesided:
        return length, 1
    return (length // 2 + 1 if onesided else length), 2


def _dft_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    (t,) = ins
    need_float(t, "signal.dft")
    if t.rank < 2 or t.shape[-1] not in (1, 2):
        raise TypeRuleError(f"signal.dft takes (..., samples, 1 or 2 parts), got {list(t.shape)}")
    if attrs["length"] < 1:
        raise TypeRuleError(f"signal.dft length {attrs['length']}")
    bins, parts = dft_bins(attrs["length"], attrs["inverse"], attrs["onesided"])
    return [TensorType(t.shape[:-2] + (bins, parts), t.dtype)]


def _dft_ref(ins: list[np.ndarray], attrs: dict[str, Any]) -> list[np.ndarray]:
    (x,) = ins
    length, inverse, onesided = attrs["length"], attrs["inverse"], attrs["onesided"]
    real = np.float64 if x.dtype == np.float64 else np.float32
    if x.shape[-1] == 1:
        z = x[..., 0].astype(real)
    else:
        z = np.empty(x.shape[:-1], np.complex128 if real is np.float64 else np.complex64)
        z.real, z.imag = x[..., 0], x[..., 1]
    if inverse and onesided:
        return [np.fft.irfft(z, n=length, axis=-1)[..., None].astype(x.dtype)]
    if inverse:
        y = np.fft.ifft(z, n=length, axis=-1)
    elif onesided and x.shape[-1] == 1:
        y = np.fft.rfft(z, n=length, axis=-1)
    else:
        y = np.fft.fft(z, n=length, axis=-1)[..., :dft_bins(length, False, onesided)[0]]
    return [np.stack([y.real, y.imag], axis=-1).astype(x.dtype)]


dft = define("signal.dft", "Discrete Fourier transform of `length` samples along axis -2 (samples past "
             "`length` dropped, missing ones zero); the last axis holds 1 (real) or 2 (real, imaginary) "
             "parts. Forward e^(-i theta); `inverse` e^(+i theta) / length; `onesided` keeps bins "
             "0..length//2 of a forward transform, and an inverse onesided one (irfft) returns the real "
             "signal. Reference: numpy's FFT in the operand's precision (as onnx.reference).",
             _dft_infer, _dft_ref, length=Attr("int"), inverse=Attr("bool", False),
             onesided=Attr("bool", False))


def dft_precision(dtype: np.dtype | type, parts: int, inverse: bool) -> tuple[np.dtype, np.dtype]:
    """(the precision numpy computes signal.dft of a `dtype` operand with `parts` parts in, the one it
    rounds the result to). The result is the reference's complex type: float64 for float64 operands,
    float32 for the others (float16 and bfloat16 are transformed as float32). numpy >= 2 runs a
    transform in that precision only when it is inverse and the operand complex (its float32 loop needs a
    complex operand and a float32 scale factor); forward transforms (scale factor the Python int 1) and
    inverse ones of a real operand run in float64."""
    result = np.dtype(np.float64 if np.dtype(dtype) == np.float64 else np.float32)
    return (result if inverse and parts == 2 else np.dtype(np.float64)), result


def fft_planned(length: int, inverse: bool, onesided: bool) -> bool:
    """Whether `dft_by_fft` computes this transform: not an inverse onesided one (numpy's irfft, its
    real FFT), and a length whose pocketfft plan compiler.ops.pocketfft writes out."""
    return not (inverse and onesided) and pocketfft.fft_factors(length) is not None


def dft_by_fft(ops: pocketfft.FFTOps, x: Any, shape: tuple[int, ...], dtype: np.dtype | type, length: int,
               inverse: bool, onesided: bool) -> Any:
    """signal.dft of x (shape `shape`, element type `dtype`) with the backend's tensor operations `ops`,
    as numpy computes it (fft_planned(...) must hold): the samples cropped or zero-padded to `length`, a
    real operand given a zero imaginary part, pocketfft's complex FFT in dft_precision(...)[0] with
    numpy's scale factor (1 / length in the result precision), a onesided forward transform cut to its
    first length // 2 + 1 bins (numpy's rfft, a real FFT in float64: equal up to float64 round-off
    before the rounding). The result is in dft_precision(...)[1]; the caller casts it to the output
    type."""
    assert fft_planned(length, inverse, onesided), "signal.dft has no FFT plan here; use dft_matrix"
    n_in, c_in = shape[-2], shape[-1]
    compute, result = dft_precision(dtype, c_in, inverse)
    x = ops.cast(x, compute)
    if n_in > length:
        x = ops.slice(x, -2, 0, length)
    elif n_in < length:
        x = ops.pad(x, -2, length - n_in)
    if c_in == 1:
        x = ops.pad(x, -1, 1)
    scale = float(np.reciprocal(np.asarray(length, result))) if inverse else None
    y = pocketfft.complex_fft(ops, x, shape[:-2], length, inverse, compute, scale)
    bins = dft_bins(length, inverse, onesided)[0]
    if bins < length:
        y = ops.slice(y, -2, 0, bins)
    return ops.cast(y, result)


def _unit_circle(k: np.ndarray, n: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of 2 pi k n / length over the grid k x n, the angle reduced mod length first and
    rounding noise at the axes snapped to 0 (so the imaginary part of a real signal's DC and Nyquist
    bins is exactly 0)."""
    angle = 2 * np.pi * (np.outer(k, n) % length) / length
    cos, sin = np.cos(angle), np.sin(angle)
    return np.where(np.abs(cos) < 1e-12, 0, cos), np.where(np.abs(sin) < 1e-12, 0, sin)


def dft_matrix(n_in: int, c_in: int, length: int, inverse: bool, onesided: bool) -> np.ndarray:
    """signal.dft as a matrix: the real float64 (n_in * c_in, bins * c_out) matrix that maps the
    flattened (samples, parts) of the operand to those of the result. Inverse onesided (irfft) reads
    bins 0..length//2, each but DC and Nyquist counted twice."""
    used = min(n_in, length // 2 + 1 if inverse and onesided else length)
    if inverse and onesided:
        k, t = np.arange(used), np.arange(length)
        cos, sin = _unit_circle(k, t, length)
        twice = np.where((k == 0) | (2 * k == length), 1.0, 2.0)[:, None] / length
        mat = np.zeros((n_in, c_in, length, 1))
        mat[:used, 0, :, 0] = twice * cos
        if c_in == 2:
            mat[:used, 1, :, 0] = -twice * sin
        return mat.reshape(n_in * c_in, length)
    bins = dft_bins(length, inverse, onesided)[0]
    cos, sin = _unit_circle(np.arange(used), np.arange(bins), length)
    sign, scale = (1.0, 1.0 / length) if inverse else (-1.0, 1.0)
    mat = np.zeros((n_in, c_in, bins, 2))
    mat[:used, 0, :, 0], mat[:used, 0, :, 1] = cos * scale, sign * sin * scale
    if c_in == 2:
        mat[:used, 1, :, 0], mat[:used, 1, :, 1] = -sign * sin * scale, cos * scale
    return mat.reshape(n_in * c_in, bins * 2)
