"""quantize/dyadic on nn.resize: a 2-D linear resize of an NCHW activation becomes q.resize_linear on its input's
grid (integer-only, bounded by range analysis by its input's interval), and the resizes with no integer form
(cubic, roi, antialias, other axes) stay float with the reason in the integer-only error."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import interp
from compiler.diagnostics import Unsupported
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import linalg, quant, shape
from compiler.types import DType, TensorType
from passes.dyadic import dyadic_rewrite
from passes.quantize import QuantConfig, annotate, calibrate, resize_refusal, spec_of
from passes.quantize_pipeline import quantize_graph
from passes.range_analysis import check_ranges, value_ranges
from passes.verify_integer_only import verify_integer_only

F32 = DType.F32


def _conv_resize(rng, **resize):
    """x -> conv -> relu -> nn.resize(**resize) -> output."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 2, 5, 6), F32))
    w = g.const(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "w")
    y = g.add1(ew.relu, [g.add1(linalg.conv, [x, w], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))])
    attrs = dict(sizes=(1, 3, 10, 12), scales=(1.0, 1.0, 2.0, 2.0), mode="linear")
    attrs.update(resize)
    g.outputs = [g.add1(shape.resize, [y], name="up", **attrs)]
    return g


def _batches(rng, n=3):
    return [[rng.standard_normal((1, 2, 5, 6)).astype(np.float32)] for _ in range(n)]


@pytest.mark.parametrize("mode", ["half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel"])
@pytest.mark.parametrize("activation", ["int8", "uint8"])
def test_linear_resize_becomes_q_resize_linear_on_the_input_grid(mode, activation, rng):
    g = _conv_resize(rng, coordinate_transformation_mode=mode)
    batches = _batches(rng)
    ig = dyadic_rewrite(annotate(g, calibrate(g, batches), QuantConfig(activation=activation)))
    assert verify_integer_only(ig) == [] and check_ranges(ig) == []
    (r,) = [n for n in ig.nodes if n.op is quant.resize_linear]
    assert not any(n.op is shape.resize for n in ig.nodes)
    assert spec_of(r.inputs[0]).same_grid(spec_of(r.outputs[0]))
    assert r.attrs["zero_point"] == spec_of(r.inputs[0]).zero_point[0]
    assert (r.attrs["sizes"], r.attrs["scales"], r.attrs["coordinate_transformation_mode"]) == \
        ((10, 12), (2.0, 2.0), mode)
    # range analysis: the resize's interval is its input's
    ranges = value_ranges(ig)
    assert ranges[r.outputs[0].name] == ranges[r.inputs[0].name]
    # meaning: within a step or so of the float graph (the conv's own rounding plus <= 0.75 step)
    x = batches[0][0]
    step = spec_of(r.outputs[0]).scale[0]
    assert np.abs(interp.run(g, x)[0] - interp.run(ig, x)[0]).max() <= 2.5 * step


@pytest.mark.parametrize("resize, why", [
    (dict(mode="cubic"), "cubic resize has no integer form"),
    (dict(antialias=True, sizes=(1, 3, 3, 3), scales=(1.0, 1.0, 0.6, 0.5)), "antialiased"),
    (dict(coordinate_transformation_mode="tf_crop_and_resize", roi=(0, 0, 0.1, 0.1, 1, 1, 0.9, 0.9)), "roi"),
    (dict(sizes=(1, 6, 10, 12), scales=(1.0, 2.0, 2.0, 2.0)), "H and W of an NCHW tensor only"),
])
def test_resizes_without_an_integer_form_are_refused_with_the_reason(resize, why, rng):
    g = _conv_resize(rng, **resize)
    (node,) = [n for n in g.nodes if n.op is shape.resize]
    assert why in resize_refusal(node)
    with pytest.raises(Unsupported) as e:
        quantize_graph(g, _batches(rng, 2), QuantConfig(integer_only=True))
    assert "'up'" in str(e.value) or "up (nn.resize)" in str(e.value)
    assert why in str(e.value)


def test_nearest_resize_still_runs_as_is(rng):
    g = _conv_resize(rng, mode="nearest")
    (node,) = [n for n in g.nodes if n.op is shape.resize]
    assert resize_refusal(node) is None
    ig, _ = quantize_graph(g, _batches(rng, 2), QuantConfig(integer_only=True))
    assert [n.op for n in ig.nodes if n.op in (shape.resize, quant.resize_linear)] == [shape.resize]
