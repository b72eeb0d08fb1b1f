"""Elementwise converters against onnxruntime: one single-node model per op and opset variant."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.ops import elementwise as ew

F32 = np.float32


def _x(rng, *shape, lo=-3.0, hi=3.0):
    return rng.uniform(lo, hi, shape).astype(F32)


UNARY = [("Relu", 13, {}), ("Sigmoid", 13, {}), ("Tanh", 13, {}), ("Exp", 13, {}),
         ("Neg", 13, {}), ("Abs", 13, {}), ("Erf", 13, {}), ("Floor", 13, {}), ("Ceil", 13, {}),
         ("Softplus", 9, {}), ("HardSwish", 14, {}), ("LeakyRelu", 9, {}),
         ("LeakyRelu", 16, {"alpha": 0.3}), ("Elu", 9, {"alpha": 0.7}), ("HardSigmoid", 9, {}),
         ("HardSigmoid", 9, {"alpha": 0.25, "beta": 0.4}), ("Selu", 9, {}),
         ("Gelu", 20, {}), ("Gelu", 20, {"approximate": "tanh"}), ("Identity", 16, {}),
         ("Dropout", 9, {}), ("Dropout", 13, {})]


@pytest.mark.parametrize("op_type,opset,attrs", UNARY, ids=lambda v: str(v))
def test_unary_matches_onnxruntime(check_node, rng, op_type, opset, attrs):
    check_node(op_type, {"x": _x(rng, 2, 3, 4)}, opset, **attrs)


@pytest.mark.parametrize("op_type", ["Sqrt", "Log", "Reciprocal"])
def test_unary_positive_domain(check_node, rng, op_type):
    check_node(op_type, {"x": _x(rng, 3, 5, lo=0.1, hi=4.0)}, 13)


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div"])
def test_binary_broadcasts(check_node, rng, op_type):
    check_node(op_type, {"a": _x(rng, 2, 3, 4)}, 14, {"b": _x(rng, 3, 1, lo=0.5)})


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div"])
def test_binary_int32_is_exact(check_node, rng, op_type):
    a = rng.integers(-50, 50, (4, 5)).astype(np.int32)
    b = rng.integers(1, 9, (5,)).astype(np.int32) * rng.choice([-1, 1], 5).astype(np.int32)
    check_node(op_type, {"a": a, "b": b}, 13)


@pytest.mark.parametrize("op_type", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
def test_comparisons(check_node, rng, op_type):
    a = rng.integers(0, 4, (3, 4)).astype(F32)
    b = rng.integers(0, 4, (4,)).astype(F32)
    check_node(op_type, {"a": a, "b": b}, 13)


@pytest.mark.parametrize("op_type", ["And", "Or"])
def test_logic(check_node, rng, op_type):
    check_node(op_type, {"a": rng.random((3, 4)) > 0.5, "b": rng.random((1, 4)) > 0.5}, 9)


def test_not(check_node, rng):
    check_node("Not", {"a": rng.random((3, 4)) > 0.5}, 9)


def test_where(check_node, rng):
    feeds = {"c": rng.random((2, 1, 4)) > 0.5, "x": _x(rng, 3, 4), "y": _x(rng, 2, 3, 1)}
    check_node("Where", feeds, 16)


def test_pow_float_exponent(check_node, rng):
    check_node("Pow", {"x": _x(rng, 3, 4, lo=0.5)}, 13, {"y": _x(rng, 4, lo=-2, hi=2)})


def test_pow_int_exponent_is_cast_to_base(check_node, rng):
    g = check_node("Pow", {"x": _x(rng, 3, 4)}, 15, {"y": np.array([2, 3, 1, 0], np.int64)})
    assert [n.op for n in g.nodes] == [ew.pow_]   # the int64 exponent cast was folded


@pytest.mark.parametrize("opset,kwargs",
                         [(9, {}), (10, {"min": -0.5, "max": 1.5}), (9, {"max": 0.2})])
def test_clip_attributes(check_node, rng, opset, kwargs):
    check_node("Clip", {"x": _x(rng, 2, 5)}, opset, **kwargs)


@pytest.mark.parametrize("bounds", [(-0.5, 1.0), (None, 1.0), (-1.0, None), (None, None)])
def test_clip_inputs(check_node, rng, bounds):
    inits = {n: np.array(v, F32) for n, v in zip(("lo", "hi"), bounds) if v is not None}
    names = ["x"] + [n if v is not None else "" for n, v in zip(("lo", "hi"), bounds)]
    while names[-1] == "":
        names.pop()
    check_node("Clip", {"x": _x(rng, 2, 5)}, 13, inits, input_names=names)


def test_clip_int_inputs(check_node, rng):
    x = rng.integers(-20, 20, (3, 4)).astype(np.int32)
    check_node("Clip", {"x": x}, 13, {"lo": np.array(-5, np.int32), "hi": np.array(7, np.int32)})


@pytest.mark.parametrize("slope_shape", [(3, 1, 1), (1,), (4,)])
def test_prelu_slope_broadcast(check_node, rng, slope_shape):
    check_node("PRelu", {"x": _x(rng, 2, 3, 5, 4)}, 9, {"slope": _x(rng, *slope_shape, lo=0, hi=1)})


def test_prelu_per_channel_1d_slope_is_reshaped(check_node, rng):
    g = check_node("PRelu", {"x": _x(rng, 2, 3, 4, 5)}, 16, {"slope": _x(rng, 3, 1, 1, lo=0, hi=1)})
    assert g.nodes[-1].inputs[1].type.shape == (3, 1, 1)


@pytest.mark.parametrize("op_type", ["Sum", "Min", "Max", "Mean"])
@pytest.mark.parametrize("n", [1, 3])
def test_nary(check_node, rng, op_type, n):
    feeds = {f"x{i}": _x(rng, *((2, 3, 4), (3, 1), (4,))[i]) for i in range(n)}
    check_node(op_type, feeds, 13)


@pytest.mark.parametrize("to,src", [(1, np.int32), (7, np.float32), (6, np.float32),
                                    (9, np.float32), (2, np.int64), (10, np.float32),
                                    (1, np.bool_)])
def test_cast(check_node, rng, to, src):
    x = rng.uniform(-200, 200, (3, 4)).astype(src)
    if src == np.bool_:
        x = rng.random((3, 4)) > 0.5
    if to == 2:
        x = np.abs(x) % 200
    check_node("Cast", {"x": x}, 13, to=to)


def test_cast_like(check_node, rng):
    check_node("CastLike", {"x": _x(rng, 3, 4, lo=-20, hi=20)}, 15, {"like": np.zeros(1, np.int32)})


def test_float64_constant_folded_away(make_model, check, rng):
    from onnx import helper
    nodes = [helper.make_node("Cast", ["w64"], ["w"], to=1),
             helper.make_node("Mul", ["x", "w"], ["y"])]
    inits = {"w64": np.arange(3, dtype=np.float64)}
    model = make_model(nodes, {"x": _x(rng, 2, 3)}, ["y"], 13, inits)
    g = check(model, {"x": _x(rng, 2, 3)})
    assert [n.op for n in g.nodes] == [ew.mul]


def test_sign(check_node, rng):
    x = rng.integers(-2, 3, (3, 4)).astype(F32)
    check_node("Sign", {"x": x}, 13)


def test_mod_folds_constant_operands(make_model, check, rng):
    from onnx import helper

    nodes = [helper.make_node("Mod", ["a", "b"], ["m"]), helper.make_node("Add", ["x", "m"], ["y"])]
    inits = {"a": np.array([7, -7, 5], np.int64), "b": np.array([3, 3, -2], np.int64)}
    x = np.arange(3, dtype=np.int64)
    g = check(make_model(nodes, {"x": x}, ["y"], 13, inits), {"x": x})
    assert [n.op for n in g.nodes] == [ew.add]


INT_TYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


@pytest.mark.parametrize("fmod", [0, 1])
@pytest.mark.parametrize("dtype", INT_TYPES, ids=lambda t: t.__name__)
def test_mod_integers(check_node, rng, dtype, fmod):
    """Every sign combination (signed types), the type's extremes, broadcasting."""
    info = np.iinfo(dtype)
    sign = rng.choice([-1, 1], 10) if info.min else np.ones(10, int)
    a = [int(v) for v in rng.integers(max(info.min, -100), 100, 10)] + [info.min, info.max, 0, 9, 1, 7]
    b = [int(v) for v in rng.integers(1, 9, 10) * sign] + [7, 3, 5, 2, info.max, -3 if info.min else 3]
    a, b = np.array(a, dtype).reshape(2, 8), np.array(b, dtype).reshape(2, 8)
    g = check_node("Mod", {"a": a, "b": b}, 13, fmod=fmod)
    assert g.nodes[0].attrs["fmod"] is bool(fmod)
    check_node("Mod", {"a": a}, 13, {"b": b[1]}, fmod=fmod)


@pytest.mark.parametrize("fmod,opset", [(1, 13), (0, 28)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=lambda t: t.__name__)
def test_mod_floats(check_node, rng, dtype, fmod, opset):
    """fmod=1 takes the dividend's sign, fmod=0 (floats since Mod-28) the divisor's; inf and nan."""
    a = np.array([-4.3, 7.2, 5.0, 4.3, -7.2, 8.0, -3.0, 3.0, 2.5, -0.0, np.inf, 1.0], dtype)
    b = np.array([2.1, -3.4, 8.0, -2.1, 3.4, -5.0, np.inf, -np.inf, 2.5, 2.0, 2.0, np.nan], dtype)
    check_node("Mod", {"a": a, "b": b}, opset, fmod=fmod, rtol=1e-3 if dtype == np.float16 else 1e-5)
