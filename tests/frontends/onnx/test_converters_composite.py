"""Converters that compose IR ops, against onnxruntime: LayerNormalization with its Mean and
InvStdDev outputs, GroupNormalization, Hardmax, Softsign, ThresholdedRelu, Celu, Shrink, Mish."""
from __future__ import annotations

import numpy as np
import pytest

F32 = np.float32


@pytest.mark.parametrize("axis", [-1, 1])
def test_layer_norm_mean_and_inv_std_dev(check_node, rng, axis):
    x = rng.standard_normal((2, 3, 4)).astype(F32)
    shape = x.shape[axis % 3:]
    check_node("LayerNormalization", {"x": x}, 17,
               {"s": rng.standard_normal(shape).astype(F32), "b": rng.standard_normal(shape).astype(F32)},
               n_outputs=3, axis=axis, epsilon=1e-3)


def test_group_norm_per_channel_scale(check, rng):
    """Against onnxruntime; the output is typed by hand (shape inference does not expand it)."""
    from onnx import helper, numpy_helper
    x = rng.standard_normal((2, 6, 3, 3)).astype(F32)
    inits = [numpy_helper.from_array(rng.standard_normal(6).astype(F32), n) for n in ("s", "b")]
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=3, epsilon=1e-4)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, x.shape)],
                              [helper.make_tensor_value_info("y", 1, x.shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    check(model, {"x": x}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opset,axis", [(13, -1), (13, 1), (11, 1)])
def test_hardmax_first_maximum(check_node, rng, opset, axis):
    x = rng.integers(0, 3, (2, 3, 4)).astype(F32)          # ties: the first maximum wins
    check_node("Hardmax", {"x": x}, opset, axis=axis)


@pytest.mark.parametrize("op_type,attrs", [
    ("Softsign", {}), ("ThresholdedRelu", {"alpha": 0.5}), ("Celu", {"alpha": 1.5}),
    ("Shrink", {"lambd": 0.7, "bias": 0.2}), ("Mish", {})], ids=lambda v: str(v))
def test_composed_activations(check_node, rng, op_type, attrs):
    opset = 18 if op_type == "Mish" else 13
    check_node(op_type, {"x": rng.uniform(-3, 3, (3, 5)).astype(F32)}, opset, **attrs)
