"""dyadic: each rewrite on a small graph: the integer ops it becomes, exact integer results on
hand-made cases, activations folded into the requant clamp, meaning kept within a few
quantization steps of the float graph, and verify_integer_only passing."""
from __future__ import annotations

import math

import numpy as np
import pytest

from compiler import interp
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import linalg, nn, quant, reduce, shape
from compiler.ops.quant import requant_values
from compiler.types import DType, TensorType
from passes.base import PASSES
from passes.dyadic import clamp_range, dyadic_rewrite, requant_params, residual_shift
from passes.quantize import QuantConfig, QuantSpec, annotate, calibrate, spec_of, with_quant
from passes.range_analysis import check_ranges
from passes.verify_integer_only import verify_integer_only

F32 = DType.F32


def _ops(g):
    return [n.op.name for n in g.nodes]


def _int(g, batches, config=None):
    st = calibrate(g, batches)
    ig = dyadic_rewrite(annotate(g, st, config or QuantConfig()))
    assert verify_integer_only(ig) == []
    assert check_ranges(ig) == []
    return ig


def _close(g, ig, *x, steps=3.0):
    """max |float - int| within `steps` output quantization steps."""
    ref, got = interp.run(g, *x)[0], interp.run(ig, *x)[0]
    deq = next(n for n in ig.nodes if n.op is quant.dequantize)
    step = max(deq.attrs["scale"]) if deq.inputs[0].type.dtype is not DType.I32 else 0
    err = np.abs(ref - got).max()
    assert err <= steps * max(step, 1e-3) + 0.02 * np.abs(ref).max(), (err, step)
    return ref, got


def _spec(scale, zp=0, dt=DType.I8, name=None):
    lo, hi = {DType.I8: (-128, 127), DType.U8: (0, 255)}[dt]
    return QuantSpec((scale,), (zp,), None, dt, lo, hi, zp == 0, name)


def test_conv_relu_becomes_qconv_requant_with_relu_in_the_clamp(rng):
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 6, 6), F32))
    w = g.const(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = g.const(rng.standard_normal(4).astype(np.float32), "b")
    y = g.add1(linalg.conv, [x, w, b], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))
    y = g.add1(ew.relu, [y])
    g.outputs = [g.add1(shape.reshape, [y], shape=(2, 144))]
    xs = [rng.standard_normal((2, 3, 6, 6)).astype(np.float32) for _ in range(2)]
    for policy, dt in (("uint8", DType.U8), ("int8", DType.I8)):
        ig = _int(g, [[v] for v in xs], QuantConfig(activation=policy))
        assert _ops(ig) == ["q.quantize", "q.conv", "q.requant", "nn.reshape", "q.dequantize"]
        conv, rq = ig.nodes[1], ig.nodes[2]
        assert conv.inputs[1].type.dtype is DType.I8 and conv.inputs[2].type.dtype is DType.I32
        assert len(rq.attrs["multiplier"]) == 4 and rq.attrs["axis"] == 1      # per channel
        assert rq.attrs["dtype"] is dt and rq.attrs["qmin"] == rq.attrs["zero_point"]   # relu folded
        _close(g, ig, xs[0])


def test_conv_bias_folded_at_input_times_weight_scale(rng):
    g = Graph()
    x = g.add_input("x", TensorType((1, 1, 4, 4), F32))
    w = g.const(np.float32([[[[1.0]]], [[[0.5]]]]), "w")
    b = g.const(np.float32([0.25, -1.0]), "b")
    g.outputs = [g.add1(linalg.conv, [x, w, b], strides=(1, 1), pads=(0,) * 4, dilations=(1, 1))]
    ig = _int(g, [[rng.uniform(-1, 1, (1, 1, 4, 4)).astype(np.float32)]], QuantConfig(activation="int8"))
    conv = next(n for n in ig.nodes if n.op is quant.conv)
    s_in = spec_of(ig.nodes[0].outputs[0]).scale[0]
    s_w = spec_of(conv.inputs[1]).scale
    assert s_w == pytest.approx((1 / 127, 0.5 / 127))
    expect = np.rint(np.float64([0.25, -1.0]) / (s_in * np.float32(s_w).astype(np.float64)))
    np.testing.assert_allclose(conv.inputs[2].const, expect, atol=1)
    # a graph output straight from a contraction is dequantized from int32, per channel
    assert _ops(ig)[-1] == "q.dequantize" and ig.nodes[-1].inputs[0].type.dtype is DType.I32


@pytest.mark.parametrize("lo,hi", [(0.0, 6.0), (-1.0, 1.0)])
def test_clip_folds_into_qmin_qmax(rng, lo, hi):
    g = Graph()
    x = g.add_input("x", TensorType((8, 5), F32))
    w = g.const(rng.standard_normal((5, 3)).astype(np.float32) * 4, "w")
    y = g.add1(ew.add, [g.add1(linalg.matmul, [x, w]), g.const(np.float32([0.5, -0.5, 0]), "b")])
    y = g.add1(ew.clip, [y], min=lo, max=hi)
    g.outputs = [g.add1(ew.neg, [g.add1(ew.neg, [y])])]     # float tail, never integer
    xs = rng.standard_normal((8, 5)).astype(np.float32) * 2
    st = calibrate(g, [[xs]])
    ig = dyadic_rewrite(annotate(g, st, QuantConfig(activation="int8")))
    assert _ops(ig)[:4] == ["q.quantize", "q.matmul", "nn.add", "q.requant"]
    rq = ig.nodes[3]
    s = spec_of(rq.outputs[0])
    assert rq.attrs["axis"] == 1 and len(rq.attrs["multiplier"]) == 3
    assert (rq.attrs["qmin"], rq.attrs["qmax"]) == clamp_range(s, lo, hi)
    assert rq.attrs["qmin"] == max(-128, round(lo / s.scale[0]))
    assert [n.op for n in verify_integer_only(ig)] == [quant.dequantize, ew.neg, ew.neg]
    ref, got = interp.run(g, xs)[0], interp.run(ig, xs)[0]
    assert got.min() >= lo - 1e-6 and got.max() <= hi + 1e-6
    assert np.abs(ref - got).max() <= 3 * s.scale[0] + 0.03 * np.abs(ref).max()


def test_matmul_of_activations_uses_both_zero_points(rng):
    g = Graph()
    a = g.add_input("a", TensorType((2, 4, 8), F32))
    b = g.add_input("b", TensorType((2, 8, 3), F32))
    g.outputs = [g.add1(ew.relu, [g.add1(linalg.matmul, [a, b])])]
    batches = [[rng.uniform(-0.5, 2, (2, 4, 8)).astype(np.float32), rng.uniform(-1, 3, (2, 8, 3)).astype(np.float32)]]
    ig = _int(g, batches, QuantConfig(activation="auto"))
    assert _ops(ig) == ["q.quantize", "q.quantize", "q.matmul", "q.requant", "q.dequantize"]
    mm = ig.nodes[2]
    assert mm.attrs["a_zero_point"] != 0 and mm.attrs["b_zero_point"] != 0     # asymmetric uint8
    assert ig.nodes[3].attrs["qmin"] == ig.nodes[3].attrs["zero_point"]
    _close(g, ig, *batches[0])


def _add_graph(scales, out_scale, relu=False, dt=DType.I8, zps=(0, 0), out_zp=0):
    g = Graph()
    a = g.add_input("a", with_quant(TensorType((1, 6), F32), _spec(scales[0], zps[0], dt, "a")))
    b = g.add_input("b", with_quant(TensorType((1, 6), F32), _spec(scales[1], zps[1], dt, "b")))
    y = g.add1(ew.add, [a, b], name="sum")
    y.type = with_quant(y.type, _spec(out_scale, out_zp, dt, "sum"))
    if relu:
        y = g.add1(ew.relu, [y], name="r")
        y.type = with_quant(y.type, _spec(out_scale, out_zp, dt, "r"))
    g.outputs = [y]
    return g


def test_residual_add_exact_integers():
    g = _add_graph((0.5, 0.25), 1.0)
    ig = dyadic_rewrite(g)
    assert _ops(ig) == ["q.quantize", "q.requant", "q.quantize", "q.requant", "nn.add", "q.requant",
                        "q.dequantize"]
    assert verify_integer_only(ig) == [] and check_ranges(ig) == []
    a = np.float32([[1.0, -3.0, 10.0, 63.5, -64.0, 0.75]])
    b = np.float32([[0.25, 1.0, -2.0, 31.75, -32.0, 0.5]])
    qa, qb = np.rint(a / 0.5), np.rint(b / 0.25)
    expect = np.clip(np.floor(qa * 0.5 + qb * 0.25 + 0.5), -128, 127)   # the rounding rule: half up
    np.testing.assert_array_equal(interp.run(ig, a, b)[0], expect)
    common = spec_of(ig.nodes[4].outputs[0]).scale[0]
    assert common == 0.25 / 2 ** 16          # min(s_a, s_b) / 2^k, k = 16 fits int32 here
    # the finer operand is rescaled exactly: m / 2^c == 2^k
    m, c = ig.nodes[3].attrs["multiplier"][0], ig.nodes[3].attrs["shift"][0]
    assert m / 2 ** c == 2 ** 16


def test_residual_add_relu_and_zero_points_folded():
    g = _add_graph((0.02, 0.05), 0.04, relu=True, dt=DType.U8, zps=(10, 128), out_zp=0)
    ig = dyadic_rewrite(g)
    rq_in = [n for n in ig.nodes if n.op is quant.requant][:2]
    assert [n.attrs["in_zero_point"] for n in rq_in] == [10, 128]
    last = [n for n in ig.nodes if n.op is quant.requant][-1]
    assert last.attrs["qmin"] == 0 and nn.max_pool not in [n.op for n in ig.nodes]
    rng = np.random.default_rng(1)
    a = rng.uniform(-0.2, 4.8, (1, 6)).astype(np.float32)
    b = rng.uniform(-6, 6, (1, 6)).astype(np.float32)
    qa = np.clip(np.rint(a / np.float32(0.02)) + 10, 0, 255)
    qb = np.clip(np.rint(b / np.float32(0.05)) + 128, 0, 255)
    exact = ((qa - 10) * 0.02 + (qb - 128) * 0.05) / 0.04
    got = interp.run(ig, a, b)[0] / 0.04
    np.testing.assert_allclose(got, np.clip(np.floor(exact + 0.5), 0, 255), atol=1)


def test_residual_shift_proves_int32():
    for scales, ranges in [((0.5, 0.25), (128, 128)), ((1.0, 1e-4), (255, 255)), ((3.0, 3.0), (128, 255))]:
        k = residual_shift(list(scales), list(ranges))
        s_c = min(scales) / 2 ** k
        bound = sum(r * s / s_c + 1 for r, s in zip(ranges, scales)) + 1
        assert bound <= 2**31 - 1 and k <= 16
        if k < 16:      # k is the largest that fits
            assert sum(r * s / (s_c / 2) + 1 for r, s in zip(ranges, scales)) + 1 > 2**31 - 1


def test_add_with_constant_operand(rng):
    g = Graph()
    x = g.add_input("x", TensorType((3, 4), F32))
    g.outputs = [g.add1(ew.sub, [x, g.const(np.float32([0.5, -1, 2, 0]), "c")])]
    xs = rng.standard_normal((3, 4)).astype(np.float32)
    ig = _int(g, [[xs]], QuantConfig(activation="int8"))
    assert _ops(ig) == ["q.quantize", "q.requant", "nn.sub", "q.requant", "q.dequantize"]
    _close(g, ig, xs)


def test_concat_requantizes_each_input_to_the_output_grid(rng):
    g = Graph()
    a = g.add_input("a", TensorType((2, 3), F32))
    b = g.add_input("b", TensorType((2, 5), F32))
    g.outputs = [g.add1(shape.concat, [a, g.add1(ew.relu, [b])], axis=1)]
    batch = [rng.standard_normal((2, 3)).astype(np.float32) * 0.1, rng.standard_normal((2, 5)).astype(np.float32) * 4]
    ig = _int(g, [batch])
    cat = next(n for n in ig.nodes if n.op is shape.concat)
    out = spec_of(cat.outputs[0])
    for v in cat.inputs:
        assert spec_of(v).same_grid(out) and v.producer.op is quant.requant
    _close(g, ig, *batch)


def test_max_pool_integer_and_average_pools_as_sums(rng):
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 4, 4), F32))
    r = g.add1(ew.relu, [x])
    p = g.add1(nn.max_pool, [r], kernel=(2, 2), strides=(2, 2), pads=(0,) * 4, dilations=(1, 1))
    a = g.add1(nn.avg_pool, [r], kernel=(2, 2), strides=(2, 2), pads=(0,) * 4, dilations=(1, 1))
    m = g.add1(reduce.reduce_mean, [r], axes=(2, 3), keepdims=True)
    g.outputs = [p, a, m]
    xs = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    ig = _int(g, [[xs]])
    ops = _ops(ig)
    assert "nn.max_pool" in ops and "nn.avg_pool" not in ops and "nn.reduce_mean" not in ops
    assert ops.count("q.conv") == 1 and "nn.reduce_sum" in ops      # ones kernel / int32 sum
    pool = next(n for n in ig.nodes if n.op is nn.max_pool)
    assert pool.inputs[0].type.dtype is DType.U8
    sum_conv = next(n for n in ig.nodes if n.op is quant.conv)
    assert sum_conv.attrs["groups"] == 3 and (sum_conv.inputs[1].const == 1).all()
    for ref, got in zip(interp.run(g, xs), interp.run(ig, xs)):
        assert np.abs(ref - got).max() <= 2 * np.abs(ref).max() / 255 + 1e-6


def test_average_pool_over_padding_divides_each_position_by_its_own_count(rng):
    """count_include_pad off (Inception's 3x3 stride-1 pools): the border windows hold fewer elements;
    each window sum is multiplied by rint(2^16 / count) before one requant, integer only."""
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 5, 5), F32))
    attrs = dict(kernel=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))
    g.outputs = [g.add1(nn.avg_pool, [g.add1(ew.relu, [x])], **attrs),
                 g.add1(nn.avg_pool, [x], count_include_pad=True, **attrs)]
    xs = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    ig = _int(g, [[xs]])
    ops = _ops(ig)
    assert "nn.avg_pool" not in ops and ops.count("q.conv") == 2 and ops.count("nn.mul") == 1
    factor = next(n for n in ig.nodes if n.op is ew.mul).inputs[1].const
    assert factor[0, 0, 0, 0] == round(2**16 / 4) and factor[0, 0, 2, 2] == round(2**16 / 9)
    for ref, got in zip(interp.run(g, xs), interp.run(ig, xs)):
        assert np.abs(ref - got).max() <= 2 * np.abs(ref).max() / 127 + 1e-6


def test_global_mean_folds_zero_point_and_count():
    g = Graph()
    x = g.add_input("x", with_quant(TensorType((1, 2, 2, 2), F32), _spec(0.1, 100, DType.U8, "x")))
    y = g.add1(reduce.reduce_mean, [x], axes=(2, 3), keepdims=False)
    y.type = with_quant(y.type, _spec(0.05, 0, DType.I8, "m"))
    g.outputs = [y]
    ig = dyadic_rewrite(g)
    assert _ops(ig) == ["q.quantize", "nn.cast", "nn.reduce_sum", "q.requant", "q.dequantize"]
    rq = ig.nodes[3]
    assert rq.attrs["in_zero_point"] == 4 * 100
    assert (rq.attrs["multiplier"], rq.attrs["shift"]) == requant_params([0.1 / 4], 0.05)
    xs = np.float32([[[[1.0, 2.0], [3.0, -4.0]], [[0.5, 0.5], [0.5, 0.6]]]])
    q = np.rint(xs / np.float32(0.1)) + 100
    exp = requant_values((q.sum((2, 3))).astype(np.int64), rq.attrs["multiplier"], rq.attrs["shift"],
                         400, 0, -128, 127)
    np.testing.assert_allclose(interp.run(ig, xs)[0], exp * np.float32(0.05))
    np.testing.assert_allclose(interp.run(ig, xs)[0], xs.mean((2, 3)), atol=0.05)


def test_standalone_relu_is_a_clamping_requant(rng):
    g = Graph()
    x = g.add_input("x", TensorType((4, 4), F32))
    y = g.add1(ew.relu, [g.add1(shape.transpose, [x], perm=(1, 0))])
    g.outputs = [y]
    xs = rng.standard_normal((4, 4)).astype(np.float32)
    ig = _int(g, [[xs]])
    assert _ops(ig) == ["q.quantize", "nn.transpose", "q.requant", "q.dequantize"]
    assert ig.nodes[2].attrs["dtype"] is DType.U8 and ig.nodes[2].attrs["qmin"] == 0
    _close(g, ig, xs)


def test_float_op_in_the_middle_is_bracketed_by_dequantize_and_quantize(rng):
    g = Graph()
    x = g.add_input("x", TensorType((2, 4), F32))
    w = g.const(rng.standard_normal((4, 4)).astype(np.float32), "w")
    s = g.add1(nn.softmax, [g.add1(linalg.matmul, [x, w])], name="sm")
    g.outputs = [g.add1(linalg.matmul, [s, w])]
    xs = rng.standard_normal((2, 4)).astype(np.float32)
    ig = dyadic_rewrite(annotate(g, calibrate(g, [[xs]])))
    assert _ops(ig) == ["q.quantize", "q.matmul", "q.requant", "q.dequantize", "nn.softmax",
                        "q.quantize", "q.matmul", "q.dequantize"]
    assert {n.op.name for n in verify_integer_only(ig)} == {"q.dequantize", "nn.softmax", "q.quantize"}
    ref, got = interp.run(g, xs)[0], interp.run(ig, xs)[0]
    assert np.abs(ref - got).max() < 0.05 * np.abs(ref).max() + 0.01


def test_unannotated_graph_is_left_alone_and_pass_is_registered(rng):
    g = Graph()
    x = g.add_input("x", TensorType((2, 2), F32))
    g.outputs = [g.add1(ew.relu, [x])]
    out = PASSES["dyadic"].fn(g)
    assert out is not g and _ops(out) == ["nn.relu"]


def test_requant_params_collapse_and_clamp_range():
    assert requant_params([0.5, 0.5], 1.0) == ((1 << 30,), (31,))
    assert len(requant_params([0.5, 0.25], 1.0)[0]) == 2
    s = _spec(0.1, 0, DType.I8)
    assert clamp_range(s) == (-128, 127)
    assert clamp_range(s, 0.0, 6.0) == (0, 60)
    assert clamp_range(s, 0.0, math.inf) == (0, 127)


# -- products, scales, nearest resize (mobile nets and detectors) --------------------------------
def _island_free(g, batches, config=None):
    """dyadic -> table_islands: the integer graph a compile makes."""
    from passes.table_islands import table_islands
    st = calibrate(g, batches)
    ig = table_islands(dyadic_rewrite(annotate(g, st, config or QuantConfig())))
    assert verify_integer_only(ig) == []
    assert check_ranges(ig) == []
    return ig


def test_squeeze_excite_gate_is_an_int32_product(rng):
    g = Graph()
    x = g.add_input("x", TensorType((2, 8, 4, 4), F32))
    w1 = g.const(rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3, "w1")
    pooled = g.add1(reduce.reduce_mean, [x], axes=(2, 3), keepdims=True)
    conv = g.add1(linalg.conv, [pooled, w1], strides=(1, 1), pads=(0,) * 4, dilations=(1, 1))
    gate = g.add1(ew.hard_sigmoid, [conv], alpha=1 / 6, beta=0.5)
    g.outputs = [g.add1(ew.mul, [x, gate])]
    xs = rng.standard_normal((2, 8, 4, 4)).astype(np.float32)
    ig = _island_free(g, [[xs]])
    mul = next(n for n in ig.nodes if n.op is ew.mul)
    assert all(v.type.dtype is DType.I32 for v in mul.inputs)
    assert mul.inputs[1].type.shape == (2, 8, 1, 1)               # the gate broadcasts in int32
    assert "q.table" in _ops(ig)                                    # hardsigmoid: one lookup
    _close(g, ig, xs)


def test_silu_is_one_lookup_not_a_product(rng):
    g = Graph()
    x = g.add_input("x", TensorType((2, 16), F32))
    y = g.add1(ew.relu, [x])
    h = g.add1(ew.add, [x, y])                                      # an integer value to start from
    silu = g.add1(ew.mul, [h, g.add1(ew.sigmoid, [h])])
    g.outputs = [g.add1(ew.relu, [silu])]                          # an integer reader: silu gets a grid
    xs = rng.standard_normal((2, 16)).astype(np.float32)
    ig = _island_free(g, [[xs]])
    assert "nn.mul" not in _ops(ig) and _ops(ig).count("q.table") == 1
    _close(g, ig, xs)


@pytest.mark.parametrize("op,c", [(ew.mul, np.float32(0.25)), (ew.div, np.float32(2.0)),
                                  (ew.mul, np.linspace(-2, 3, 8, dtype=np.float32).reshape(8, 1)),
                                  (ew.mul, np.float32(-0.5))])
def test_scaling_by_a_constant(rng, op, c):
    g = Graph()
    x = g.add_input("x", TensorType((2, 8, 5), F32))
    g.outputs = [g.add1(op, [x, g.const(c, "c")])]
    xs = rng.standard_normal((2, 8, 5)).astype(np.float32)
    ig = _island_free(g, [[xs]], QuantConfig(activation="int8"))
    if np.size(c) == 1 and float(c) > 0:
        assert _ops(ig) == ["q.quantize", "q.requant", "q.dequantize"]     # one requant by s * c
    else:
        mul = next(n for n in ig.nodes if n.op is ew.mul)
        assert mul.inputs[1].is_const and mul.inputs[1].type.dtype is DType.I32
    _close(g, ig, xs)


def test_scale_feeding_softmax_stays_for_ivit(rng):
    g = Graph()
    x = g.add_input("x", TensorType((2, 8), F32))
    s = g.add1(ew.div, [g.add1(ew.relu, [x]), g.const(np.float32(8.0), "d")])
    g.outputs = [g.add1(nn.softmax, [s], axis=-1)]
    xs = rng.standard_normal((2, 8)).astype(np.float32)
    ig = dyadic_rewrite(annotate(g, calibrate(g, [[xs]])))
    assert "nn.div" in _ops(ig)                                     # float, ivit folds 1/8 into its requant


def test_nearest_resize_runs_on_the_integers(rng):
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 4, 4), F32))
    up = g.add1(shape.resize, [g.add1(ew.relu, [x])], sizes=(1, 3, 8, 8), scales=(1.0, 1.0, 2.0, 2.0),
                mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    lin = g.add1(shape.resize, [x], sizes=(1, 3, 8, 8), scales=(1.0, 1.0, 2.0, 2.0), mode="linear")
    cub = g.add1(shape.resize, [x], sizes=(1, 3, 8, 8), scales=(1.0, 1.0, 2.0, 2.0), mode="cubic")
    g.outputs = [up, lin, cub]
    xs = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    ig = dyadic_rewrite(annotate(g, calibrate(g, [[xs]])))
    nearest, cubic = [n for n in ig.nodes if n.op is shape.resize]
    assert nearest.inputs[0].type.dtype is DType.U8                 # a gather of the integers
    (linear,) = [n for n in ig.nodes if n.op is quant.resize_linear]   # bilinear: integer taps and one shift
    assert linear.inputs[0].type.dtype.is_int
    assert cubic.inputs[0].type.dtype is F32                         # cubic interpolation stays float


def test_output_concat_of_far_apart_grids_is_int32(rng):
    """A detector's output: boxes in pixels beside probabilities. One int8 grid for both would round
    every probability to 0; the concat runs in int32 on the finest grid."""
    g = Graph()
    boxes = g.add_input("boxes", TensorType((1, 4, 50), F32))
    logits = g.add_input("logits", TensorType((1, 3, 50), F32))
    b = g.add1(ew.relu, [boxes])
    p = g.add1(ew.sigmoid, [g.add1(ew.relu, [logits])])
    g.outputs = [g.add1(shape.concat, [b, p], axis=1)]
    batch = [rng.uniform(0, 640, (1, 4, 50)).astype(np.float32), rng.standard_normal((1, 3, 50)).astype(np.float32)]
    ig = _island_free(g, [batch])
    cat = next(n for n in ig.nodes if n.op is shape.concat)
    assert cat.outputs[0].type.dtype is DType.I32
    ref, got = interp.run(g, *batch)[0], interp.run(ig, *batch)[0]
    assert np.abs(ref[:, 4:] - got[:, 4:]).max() < 0.01                # probabilities keep their 8-bit grid
    assert np.abs(ref[:, :4] - got[:, :4]).max() < 640 / 255
