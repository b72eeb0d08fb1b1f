"""signal.dft: a discrete Fourier transform over the second-last axis (ONNX DFT once the frontend has
moved the signal axis there). The last axis holds the parts: 1 (real) or 2 (real, imaginary).

The reference is numpy's FFT (pocketfft) in the operand's own precision, complex64 for float32, as
onnx.reference computes DFT: the same round-off, not only the same transform. The lowerings compute the
same transform as one matmul with the constant matrix `dft_matrix` (exact twiddles), which agrees with
the reference within float round-off.
"""
from __future__ import annotations

from typing import Any

import numpy as np

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
