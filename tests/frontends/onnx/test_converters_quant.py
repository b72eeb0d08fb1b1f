"""Quantized ONNX ops against onnxruntime (QuantizeLinear, DequantizeLinear, QLinearConv,
QLinearMatMul, MatMulInteger, ConvInteger, DynamicQuantizeLinear), and the QDQ fold
(passes/qdq.py) that turns a pre-quantized model's own grids into the integer rewrite's."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from compiler import interp
from compiler.diagnostics import InvalidInput
from compiler.ops import quant
from frontends.onnx import load_onnx
from passes.qdq import fold_qdq
from passes.quantize import spec_of

F32, U8, I8 = np.float32, np.uint8, np.int8


def _ort(model, feeds):
    from tests.frontends.onnx.conftest import run_ort
    return run_ort(model, feeds)


@pytest.mark.parametrize("zp", [np.uint8(3), np.int8(-2)])
def test_quantize_linear_per_tensor(check_node, rng, zp):
    x = (rng.standard_normal((2, 3, 4)) * 4).astype(F32)
    check_node("QuantizeLinear", {"x": x}, 13, {"s": np.float32(0.05), "z": zp})


def test_quantize_linear_per_axis(check_node, rng):
    x = (rng.standard_normal((2, 3, 4)) * 4).astype(F32)
    check_node("QuantizeLinear", {"x": x}, 13, {"s": np.array([0.1, 0.02, 0.05], F32),
                                                "z": np.array([0, 4, 250], U8)}, axis=1)


def test_dequantize_linear_per_axis_constant(check, make_model, rng):
    """A constant int8 weight per output channel: a q.dequantize node survives import."""
    w = rng.integers(-127, 128, (4, 3), dtype=I8)
    node = helper.make_node("DequantizeLinear", ["w", "s"], ["wf"], axis=0)
    mm = helper.make_node("MatMul", ["x", "wf"], ["y"])
    x = rng.standard_normal((2, 4)).astype(F32)
    g = check(make_model([node, helper.make_node("Transpose", ["x"], ["xt"]), mm], {"x": x}, ["y"], 13,
                         {"w": w, "s": np.array([0.1, 0.2, 0.3, 0.4], F32)}), {"x": x})
    assert any(n.op is quant.dequantize for n in g.nodes)


def test_dequantize_linear_runtime(check_node, rng):
    x = rng.integers(0, 256, (2, 5), dtype=U8)
    check_node("DequantizeLinear", {"x": x}, 19, {"s": np.float32(0.5), "z": np.uint8(128)})


def test_qlinear_conv_within_one_step(make_model, rng):
    """Imported as Q(conv(DQ(x), DQ(w), DQ(b))): float rounding may move a tie by one step."""
    x = rng.integers(0, 256, (1, 2, 5, 5), dtype=U8)
    inits = {"xs": np.float32(0.02), "xz": np.uint8(120), "w": rng.integers(-127, 128, (3, 2, 3, 3), dtype=I8),
             "ws": np.array([0.01, 0.02, 0.015], F32), "wz": np.zeros(3, I8), "ys": np.float32(0.05),
             "yz": np.uint8(100), "b": rng.integers(-500, 500, 3, dtype=np.int32)}
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                            pads=[1, 1, 1, 1])
    model = make_model([node], {"x": x}, ["y"], 13, inits)
    got = interp.run(load_onnx(model), x)[0]
    want = _ort(model, {"x": x})[0]
    assert got.dtype == U8 and np.abs(got.astype(int) - want).max() <= 1


def test_qlinear_matmul_within_one_step(make_model, rng):
    a = rng.integers(0, 256, (3, 4), dtype=U8)
    inits = {"as": np.float32(0.03), "az": np.uint8(128), "b": rng.integers(0, 256, (4, 2), dtype=U8),
             "bs": np.float32(0.02), "bz": np.uint8(125), "ys": np.float32(0.04), "yz": np.uint8(110)}
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    model = make_model([node], {"a": a}, ["y"], 13, inits)
    got = interp.run(load_onnx(model), a)[0]
    assert np.abs(got.astype(int) - _ort(model, {"a": a})[0]).max() <= 1


def test_matmul_integer_exact(check_node, rng):
    a = rng.integers(0, 256, (3, 4), dtype=U8)
    check_node("MatMulInteger", {"a": a}, 13, {"b": rng.integers(-128, 128, (4, 5), dtype=I8),
                                               "az": np.uint8(12), "bz": np.int8(0)})


def test_conv_integer_per_channel_weight_zero_point(make_model, rng):
    """Against onnx.reference (onnxruntime takes one weight zero point only)."""
    from onnx.reference import ReferenceEvaluator
    x = rng.integers(0, 256, (1, 2, 4, 4), dtype=U8)
    inits = {"w": rng.integers(40, 160, (3, 2, 2, 2), dtype=U8), "xz": np.uint8(7), "wz": np.array([40, 100, 60], U8)}
    model = make_model([helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], pads=[1, 0, 1, 0])],
                       {"x": x}, ["y"], 13, inits)
    np.testing.assert_array_equal(interp.run(load_onnx(model), x)[0], ReferenceEvaluator(model).run(None, {"x": x})[0])


def test_dynamic_quantize_linear(check_node, rng):
    check_node("DynamicQuantizeLinear", {"x": rng.standard_normal((3, 4)).astype(F32)}, 13, n_outputs=3)


# -- the QDQ fold --------------------------------------------------------------------------
def _qdq_conv_model(make_model, rng):
    """x -> Q/DQ (uint8) -> Conv(DQ(w int8 per channel), DQ(b int32)) -> Relu -> Q/DQ -> y: the
    onnxruntime QDQ layout of one conv layer."""
    xs, ws = np.float32(0.03), np.array([0.004, 0.006, 0.005, 0.003], F32)
    inits = {"xs": xs, "xz": np.uint8(128), "w": rng.integers(-127, 128, (4, 3, 3, 3), dtype=I8), "ws": ws,
             "wz": np.zeros(4, I8), "b": rng.integers(-300, 300, 4, dtype=np.int32), "bs": xs * ws,
             "bz": np.zeros(4, np.int32), "ys": np.float32(0.02), "yz": np.uint8(0)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bd"], axis=0),
             helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    x = rng.standard_normal((1, 3, 6, 6)).astype(F32)
    return make_model(nodes, {"x": x}, ["y"], 13, inits), x


def test_fold_qdq_reads_the_model_grids(make_model, rng):
    model, _ = _qdq_conv_model(make_model, rng)
    g = fold_qdq(load_onnx(model))
    assert not any(n.op in (quant.quantize, quant.dequantize) for n in g.nodes)
    sx = spec_of(g.inputs[0])
    assert sx.scale == (np.float32(0.03),) and sx.zero_point == (128,)
    conv = next(n for n in g.nodes if n.op.name == "nn.conv")
    sw = spec_of(conv.inputs[1])
    assert sw.axis == 0 and sw.scale == tuple(float(s) for s in np.array([0.004, 0.006, 0.005, 0.003], F32))
    assert g.outputs[0].name == "y" and spec_of(g.outputs[0]).zero_point == (0,)


def test_quantize_model_qdq_integer_only_matches_onnxruntime(make_model, rng):
    """The fast QDQ check: quantize="model" (no calibration), integer-only, in the interpreter."""
    from compiler.api import optimize, quantize_model
    model, x = _qdq_conv_model(make_model, rng)
    g = optimize(optimize(load_onnx(model), passes=["fold_qdq"]))
    qg, _ = quantize_model(g, "model", None, integer_only=True)
    assert {n.op.name for n in qg.nodes} >= {"q.conv", "q.requant"}
    got, want = interp.run(qg, x)[0].ravel(), _ort(model, {"x": x})[0].ravel()
    assert float(got @ want / np.linalg.norm(got) / np.linalg.norm(want)) >= 0.999
    assert np.abs(got - want).max() <= 0.02 + 1e-6        # at most one output step apart


def test_quantize_model_refuses_a_float_model(make_model, rng):
    from compiler.api import optimize, quantize_model
    x = rng.standard_normal((2, 3)).astype(F32)
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": x}, ["y"], 13)
    with pytest.raises(InvalidInput, match="quantize='model'"):
        quantize_model(optimize(load_onnx(model), passes=["fold_qdq"]), "model", None, integer_only=True)


# -- low-bit and float8 / float4 grids, blocked grids, run-time scales (against onnx.reference) ------
def _reference_model(node, feeds: dict, inits: dict, opset: int = 25):
    """A one-node model whose inputs are `feeds` and whose initializers are `inits` (any ml_dtypes type)."""
    import onnx
    from onnx import numpy_helper
    vis = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()]
    g = helper.make_graph([node], "q", vis, [onnx.ValueInfoProto(name=node.output[0])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 11
    return onnx.shape_inference.infer_shapes(m, strict_mode=True)


def _match_reference(model, feeds: dict) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator
    got = interp.run(load_onnx(model), **feeds)[0]
    want = np.asarray(ReferenceEvaluator(model).run(None, feeds)[0])
    assert got.dtype == want.dtype and got.shape == want.shape
    bits = f"uint{8 * got.dtype.itemsize}"
    np.testing.assert_array_equal(got.view(bits), want.view(bits))
    return got


LOW_BIT = ["uint16", "int4", "uint4", "int2", "uint2"]


@pytest.mark.parametrize("name", LOW_BIT)
def test_quantize_linear_low_bit_per_axis(rng, name):
    import ml_dtypes
    dt = np.dtype(getattr(ml_dtypes, name, None) or name)
    info = ml_dtypes.iinfo(dt)
    x = (rng.standard_normal((3, 4)) * (info.max - info.min) / 3).astype(F32)
    zp = np.array([info.min, (info.min + info.max) // 2, info.max], np.int64).astype(dt)
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=0)
    _match_reference(_reference_model(node, {"x": x}, {"s": np.array([0.5, 1.0, 2.0], F32), "z": zp}), {"x": x})


@pytest.mark.parametrize("name", LOW_BIT)
def test_dequantize_linear_low_bit(rng, name):
    import ml_dtypes
    dt = np.dtype(getattr(ml_dtypes, name, None) or name)
    info = ml_dtypes.iinfo(dt)
    x = rng.integers(info.min, info.max + 1, (3, 4)).astype(dt)
    node = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], axis=0)
    inits = {"s": np.array([0.5, 0.25, 2.0], F32), "z": np.array([info.min, 0, info.max], np.int64).astype(dt)}
    _match_reference(_reference_model(node, {"x": x}, inits), {"x": x})


@pytest.mark.filterwarnings("ignore:overflow encountered")
@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float4_e2m1fn"])
def test_quantize_dequantize_narrow_floats(name, saturate):
    import ml_dtypes
    dt = np.dtype(getattr(ml_dtypes, name))
    x = np.array([0.0, 0.3, -1.7, 100.0, 1e5, -1e9, np.inf, np.nan], F32)
    q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], saturate=saturate)
    y = _match_reference(_reference_model(q, {"x": x}, {"s": np.float32(0.5), "z": np.zeros(1, dt)}), {"x": x})
    dq = helper.make_node("DequantizeLinear", ["x", "s"], ["y"])
    _match_reference(_reference_model(dq, {"x": y}, {"s": np.float16(2.0)}), {"x": y})     # float16 result


def test_blocked_quantize_and_dequantize(rng):
    x = (rng.standard_normal((3, 5)) * 20).astype(F32)
    s = np.array([[0.5, 1.0, 0.1], [2.0, 0.3, 0.7], [1.0, 1.0, 4.0]], F32)
    z = rng.integers(0, 256, (3, 3), dtype=np.uint8)
    q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=1, block_size=2)
    y = _match_reference(_reference_model(q, {"x": x}, {"s": s, "z": z}), {"x": x})
    dq = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], axis=1, block_size=2)
    _match_reference(_reference_model(dq, {"x": y}, {"s": s, "z": z}), {"x": y})
    bad = helper.make_node("QuantizeLinear", ["x", "s"], ["y"], axis=1, block_size=1)
    with pytest.raises(Exception, match="block_size 1 does not fit"):
        load_onnx(_reference_model(bad, {"x": x}, {"s": s}))


def test_quantize_linear_runtime_scale_and_output_dtype(rng):
    """A scale known only at run time, and output_dtype without a zero point: float ops, not q.quantize."""
    x = (rng.standard_normal((2, 6)) * 3).astype(F32)
    node = helper.make_node("QuantizeLinear", ["x", "s"], ["y"], output_dtype=3)      # int8
    model = _reference_model(node, {"x": x, "s": np.array([0.05], F32)}, {})
    g = load_onnx(model)
    assert not any(n.op is quant.quantize for n in g.nodes)
    _match_reference(model, {"x": x, "s": np.array([0.05], F32)})


def test_int8_quantize_still_one_q_op(rng):
    """The integer passes' input is unchanged: int8 / uint8 / int16 per tensor stays q.quantize."""
    x = rng.standard_normal((2, 3)).astype(F32)
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    g = load_onnx(_reference_model(node, {"x": x}, {"s": np.float32(0.02), "z": np.int8(3)}, 13))
    assert [n.op for n in g.nodes] == [quant.quantize]
