"""DFT, STFT, the Hann/Hamming/Blackman windows and MelWeightMatrix against onnx.reference (the
conformance cases' oracle): DFT becomes signal.dft, STFT a matmul with a constant matrix, the others
constants."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from compiler import interp
from compiler.ops import signal
from compiler.ops.signal import dft_matrix
from frontends.onnx import load_onnx
from tests.conftest import requires_tvm

F32 = np.float32


def _check(make_model, op, feeds, opset, inits=None, input_names=None, atol=1e-4, **attrs):
    """Import a one-node model, interpret it, compare with onnx.reference; returns the graph."""
    names = input_names or list(feeds) + list(inits or {})
    model = make_model([helper.make_node(op, names, ["y"], **attrs)], feeds, ["y"], opset, inits)
    want = ReferenceEvaluator(model).run(None, feeds)[0]
    g = load_onnx(model)
    got = interp.run(g, **feeds)[0]
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol)
    return g


@pytest.mark.parametrize("parts,inverse,onesided", [(1, 0, 0), (2, 0, 0), (1, 0, 1), (1, 1, 0), (2, 1, 0)])
@pytest.mark.parametrize("axis", [1, 2])
def test_dft(make_model, rng, parts, inverse, onesided, axis):
    x = rng.standard_normal((2, 6, 5, parts)).astype(F32)
    g = _check(make_model, "DFT", {"x": x}, 20, {"axis": np.array(axis)}, ["x", "", "axis"],
               inverse=inverse, onesided=onesided)
    assert signal.dft in [n.op for n in g.nodes]


@pytest.mark.parametrize("length", [4, 9])
def test_dft_length_truncates_or_zero_pads(make_model, rng, length):
    x = rng.standard_normal((2, 6, 2)).astype(F32)
    _check(make_model, "DFT", {"x": x}, 20, {"n": np.array(length), "axis": np.array(-2)}, ["x", "n", "axis"])


@pytest.mark.parametrize("length", [None, 7, 8])
def test_dft_irfft(make_model, rng, length):
    """inverse + onesided: the real signal from bins 0..length // 2 (odd and even lengths)."""
    x = rng.standard_normal((3, 5, 2)).astype(F32)
    inits = {"axis": np.array(1)} if length is None else {"n": np.array(length), "axis": np.array(1)}
    names = ["x", "", "axis"] if length is None else ["x", "n", "axis"]
    _check(make_model, "DFT", {"x": x}, 20, inits, names, inverse=1, onesided=1)


def test_dft_opset17_axis_attribute(make_model, rng):
    x = rng.standard_normal((2, 4, 6, 1)).astype(F32)
    _check(make_model, "DFT", {"x": x}, 17, axis=2, onesided=1)
    _check(make_model, "DFT", {"x": x}, 17)


def test_dft_rounds_as_numpys_single_precision_fft(make_model):
    """The reference is numpy's FFT on complex64, as onnx.reference: on an inverse DFT of a ramp it
    leaves the same round-off (1.9e-7 where the exact value is 0) bit for bit."""
    x = np.arange(100, dtype=F32).reshape(1, 10, 10, 1)
    x = np.concatenate([x, np.zeros_like(x)], axis=-1)
    model = make_model([helper.make_node("DFT", ["x"], ["y"], inverse=1, axis=1)], {"x": x}, ["y"], 19)
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(interp.run(load_onnx(model), x)[0], want)


def test_dft_matrix_round_trip():
    """The inverse matrix undoes the forward one; irfft undoes a onesided forward of a real signal."""
    x = np.random.default_rng(0).standard_normal((3, 16))
    spectrum = x @ dft_matrix(8, 2, 8, False, False)
    np.testing.assert_allclose(spectrum @ dft_matrix(8, 2, 8, True, False), x, atol=1e-12)
    real = x[:, ::2]
    half = real @ dft_matrix(8, 1, 8, False, True)
    np.testing.assert_allclose(half @ dft_matrix(5, 2, 8, True, True), real, atol=1e-12)


@pytest.mark.parametrize("window", ["none", "constant", "input"])
@pytest.mark.parametrize("onesided", [0, 1])
def test_stft(make_model, rng, window, onesided):
    x = rng.standard_normal((2, 40, 1)).astype(F32)
    w = np.hanning(10).astype(F32)
    feeds, inits = {"x": x}, {"step": np.array(6)}
    names = ["x", "step", "w" if window != "none" else "", "len"]
    inits["len"] = np.array(10)
    if window == "constant":
        inits["w"] = w
    elif window == "input":
        feeds["w"] = w
    _check(make_model, "STFT", feeds, 17, inits, names, onesided=onesided)


def test_stft_complex_signal(make_model, rng):
    x = rng.standard_normal((1, 24, 2)).astype(F32)
    _check(make_model, "STFT", {"x": x}, 17, {"step": np.array(4), "w": np.hamming(8).astype(F32)},
           ["x", "step", "w"], onesided=0)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
@pytest.mark.parametrize("dtype", [1, 11])
def test_windows_are_constants(make_model, op, periodic, dtype):
    model = make_model([helper.make_node(op, ["n"], ["y"], periodic=periodic, output_datatype=dtype)],
                       {}, ["y"], 17, {"n": np.array(10, np.int32)})
    want = ReferenceEvaluator(model).run(None, {})[0]
    g = load_onnx(model)
    assert g.nodes == [] and g.outputs[0].is_const
    got = interp.run(g)[0]
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mels,length,rate,low,high",
                         [(8, 16, 8192, 0.0, 4096.0), (10, 64, 16000, 20.0, 7600.0)])
def test_mel_weight_matrix(make_model, mels, length, rate, low, high):
    inits = {"m": np.array(mels, np.int32), "n": np.array(length, np.int32), "r": np.array(rate, np.int32),
             "lo": np.array(low, F32), "hi": np.array(high, F32)}
    model = make_model([helper.make_node("MelWeightMatrix", list(inits), ["y"])], {}, ["y"], 17, inits)
    want = ReferenceEvaluator(model).run(None, {})[0]
    got = interp.run(load_onnx(model))[0]
    assert got.shape == (length // 2 + 1, mels)
    np.testing.assert_array_equal(got, want)


@pytest.mark.slow
@requires_tvm
def test_dft_and_stft_compile_with_tvm(make_model, rng):
    """A DFT along an inner axis (transposed there and back) and an STFT with a run-time window."""
    import compiler
    x, s, w = rng.standard_normal((2, 6, 5, 2)).astype(F32), rng.standard_normal((2, 30, 1)).astype(F32), \
        np.hanning(8).astype(F32)
    nodes = [helper.make_node("DFT", ["x", "", "axis"], ["y"], inverse=1),
             helper.make_node("STFT", ["s", "step", "w"], ["z"])]
    inits = {"axis": np.array(1), "step": np.array(4)}
    model = make_model(nodes, {"x": x, "s": s, "w": w}, ["y", "z"], 20, inits)
    want = ReferenceEvaluator(model).run(None, {"x": x, "s": s, "w": w})
    for got, ref in zip(compiler.compile(model, target="llvm").run(x, s, w), want):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
