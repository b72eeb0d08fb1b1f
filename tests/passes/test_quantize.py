"""quantize: observers on known distributions, calibration over the interpreter, annotation
choices (uint8 after relu, int8 symmetric elsewhere, per-channel weight scales)."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.diagnostics import InvalidInput, Unsupported
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import linalg
from compiler.types import DType, TensorType
from passes.quantize import (
    QuantConfig,
    QuantSpec,
    ValueStats,
    activation_spec,
    annotate,
    calibrate,
    calibration_batches,
    minmax_range,
    mse_range,
    observe,
    percentile_range,
    quantize_array,
    spec_of,
    weight_spec,
)
from passes.quantize_pipeline import quantize_graph
from passes.verify_integer_only import verify_integer_only

F32 = DType.F32


def _conv_relu_graph(rng, n=4):
    g = Graph()
    x = g.add_input("x", TensorType((n, 2, 6, 6), F32))
    w = g.const(rng.standard_normal((3, 2, 3, 3)).astype(np.float32) * np.float32([[[[1]]], [[[0.1]]], [[[3]]]]), "w")
    b = g.const(rng.standard_normal(3).astype(np.float32), "b")
    y = g.add1(linalg.conv, [x, w, b], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), name="conv")
    r = g.add1(ew.relu, [y], name="r")
    g.outputs = [g.add1(ew.add, [r, y], name="out")]
    return g


def test_minmax_is_exact(rng):
    x = rng.standard_normal(1000)
    assert minmax_range(x) == (x.min(), x.max())
    s = observe(x, "minmax")
    assert (s.lo, s.hi, s.amax) == (x.min(), x.max(), max(-x.min(), x.max()))


def test_percentile_clips_outliers(rng):
    x = np.concatenate([rng.standard_normal(100_000), [1000.0, -500.0]])
    lo, hi, amax = percentile_range(x, 99.9)
    assert -5 < lo < -2 and 2 < hi < 5 and 2 < amax < 5
    assert observe(x, "minmax").amax == 1000.0


def test_mse_range_inside_data_and_clips_heavy_tails(rng):
    x = rng.laplace(size=200_000)
    lo, hi = mse_range(x, 8, symmetric=False)
    assert x.min() <= lo < 0 < hi <= x.max()
    _, t = mse_range(x, 8, symmetric=True)
    assert 0 < t < np.abs(x).max()
    u = rng.uniform(0, 4, 100_000)            # uniform: nothing worth clipping
    assert mse_range(u, 8)[1] == pytest.approx(u.max(), rel=0.02)


def test_calibrate_records_exact_ranges_over_batches(rng):
    g = _conv_relu_graph(rng)
    b1, b2 = (rng.standard_normal((4, 2, 6, 6)).astype(np.float32) for _ in range(2))
    st = calibrate(g, [[b1], {"x": b2}])
    assert st.num_batches == 2
    assert st["x"].min == min(b1.min(), b2.min()) and st["x"].max == max(b1.max(), b2.max())
    assert st["r"].min == 0.0 and st["conv"].min < 0
    p = calibrate(g, [[b1], [b2]], observer="percentile", percentile=99.0)
    assert p["x"].amax < st["x"].amax
    with pytest.raises(InvalidInput):
        calibrate(g, [])
    with pytest.raises(Unsupported):
        calibrate(g, [[b1]], observer="kl")


def test_activation_policy_choices():
    relu_like = ValueStats(0.0, 6.0, 0.0, 6.0, 6.0)
    signed = ValueStats(-1.0, 3.0, -1.0, 3.0, 3.0)
    u = activation_spec(relu_like, QuantConfig(activation="uint8"))
    assert (u.dtype, u.zero_point, u.qmin, u.qmax) == (DType.U8, (0,), 0, 255)
    assert u.scale[0] == pytest.approx(6 / 255)
    i = activation_spec(relu_like, QuantConfig(activation="int8"))
    assert (i.dtype, i.zero_point, i.symmetric) == (DType.I8, (0,), True)
    assert i.scale[0] == pytest.approx(6 / 127)
    assert activation_spec(signed, QuantConfig(activation="uint8")).dtype is DType.I8
    a = activation_spec(signed, QuantConfig(activation="auto"))      # skewed: asymmetric is finer
    assert a.dtype is DType.U8 and a.zero_point == (64,) and a.scale[0] == pytest.approx(4 / 255)
    assert activation_spec(ValueStats(0, 0, 0, 0, 0), QuantConfig()).scale == (1.0,)


def test_weight_spec_per_channel_and_quantize_array(rng):
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    w[1] *= 0.01
    s = weight_spec(w, 0, 8)
    assert s.axis == 0 and s.zero_point == (0, 0, 0) and (s.qmin, s.qmax) == (-127, 127)
    np.testing.assert_allclose(s.scale, np.abs(w).reshape(3, -1).max(1) / 127, rtol=1e-6)
    q = quantize_array(w, s)
    assert q.dtype == np.int8 and np.abs(q).reshape(3, -1).max(1).tolist() == [127, 127, 127]
    np.testing.assert_allclose(q * np.asarray(s.scale)[:, None, None, None], w, atol=max(s.scale) / 2 + 1e-7)
    s4 = weight_spec(w, 0, 4)
    assert s4.dtype is DType.I4 and (s4.qmin, s4.qmax) == (-7, 7)
    assert len(weight_spec(w, None).scale) == 1


def test_annotate_marks_values_and_keeps_input_graph(rng):
    g = _conv_relu_graph(rng)
    st = calibrate(g, [[rng.standard_normal((4, 2, 6, 6)).astype(np.float32)]])
    ag = annotate(g, st, QuantConfig(activation="uint8"))
    vals = {v.name: v for n in ag.nodes for v in list(n.inputs) + n.outputs}
    assert spec_of(vals["r"]).dtype is DType.U8          # after relu: unsigned
    assert spec_of(vals["conv"]).dtype is DType.I8       # signed pre-activation
    assert spec_of(ag.inputs[0]).dtype is DType.I8
    w = spec_of(vals["w"])
    assert w.axis == 0 and len(w.scale) == 3 and w.scale[1] < w.scale[0] < w.scale[2]
    assert isinstance(vals["r"].type.quant, QuantSpec) and vals["r"].type.quant.source == "r"
    assert all(v.type.quant is None for n in g.nodes for v in n.outputs)        # pure
    ag8 = annotate(g, st, QuantConfig(activation="int8"))
    assert spec_of(next(v for n in ag8.nodes for v in n.outputs if v.name == "r")).dtype is DType.I8


def test_calibration_batches_split_to_the_graph_batch(rng):
    g = _conv_relu_graph(rng, n=4)
    data = rng.standard_normal((10, 2, 6, 6)).astype(np.float32)
    bs = calibration_batches(g, {"x": data})
    assert len(bs) == 2 and bs[1][0].shape == (4, 2, 6, 6)
    assert len(calibration_batches(g, [data[:3]])) == 1


def test_quantize_graph_end_to_end_small(rng):
    g = _conv_relu_graph(rng)
    batches = [[rng.standard_normal((4, 2, 6, 6)).astype(np.float32)] for _ in range(3)]
    ig, _ = quantize_graph(g, batches, QuantConfig(integer_only=True))
    assert verify_integer_only(ig) == []
    x = batches[0][0]
    from compiler import interp
    ref, got = interp.run(g, x)[0], interp.run(ig, x)[0]
    assert np.abs(ref - got).max() < 0.05 * np.abs(ref).max()


def test_config_rejects_unknown_choices():
    with pytest.raises(Unsupported):
        QuantConfig(activation="int16")
    with pytest.raises(Unsupported):
        QuantConfig(weight_bits=3)


def test_four_bit_weights(rng):
    g = _conv_relu_graph(rng)
    batches = [[rng.standard_normal((4, 2, 6, 6)).astype(np.float32)]]
    ig, _ = quantize_graph(g, batches, QuantConfig(weight_bits=4, integer_only=True))
    w = next(n for n in ig.nodes if n.op.name == "q.conv").inputs[1]
    assert w.type.dtype is DType.I4 and np.abs(w.const).max() == 7
    from compiler import interp
    ref, got = interp.run(g, batches[0][0])[0], interp.run(ig, batches[0][0])[0]
    assert np.abs(ref - got).max() < 0.3 * np.abs(ref).max()
