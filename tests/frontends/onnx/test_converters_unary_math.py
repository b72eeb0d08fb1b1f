"""Trigonometric, rounding, NaN/Inf tests and bitwise converters against onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest

F32 = np.float32


@pytest.mark.parametrize("op_type,lo,hi", [
    ("Sin", -4, 4), ("Cos", -4, 4), ("Tan", -1.4, 1.4), ("Asin", -1, 1), ("Acos", -1, 1),
    ("Atan", -5, 5), ("Sinh", -3, 3), ("Cosh", -3, 3), ("Asinh", -5, 5), ("Acosh", 1, 5),
    ("Atanh", -0.9, 0.9)])
def test_trig_and_hyperbolic(check_node, rng, op_type, lo, hi):
    check_node(op_type, {"x": rng.uniform(lo, hi, (3, 4)).astype(F32)}, 13, rtol=1e-5, atol=1e-6)


def test_round_ties_to_even(check_node):
    check_node("Round", {"x": np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.4, -0.6], F32)}, 11)


SPECIALS = np.array([1.0, np.nan, np.inf, -np.inf, 0.0, -3.0], F32)


def test_isnan(check_node):
    check_node("IsNaN", {"x": SPECIALS}, 13)


@pytest.mark.parametrize("pos,neg", [(1, 1), (1, 0), (0, 1)])
def test_isinf(check_node, pos, neg):
    check_node("IsInf", {"x": SPECIALS}, 10, detect_positive=pos, detect_negative=neg)


@pytest.mark.parametrize("op_type", ["BitwiseAnd", "BitwiseOr", "BitwiseXor"])
@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.int64])
def test_bitwise_binary(check_node, rng, op_type, dtype):
    a = rng.integers(0, 100, (3, 4)).astype(dtype)
    b = rng.integers(0, 100, (4,)).astype(dtype)
    check_node(op_type, {"a": a, "b": b}, 18)


def test_bitwise_not(check_node, rng):
    check_node("BitwiseNot", {"a": rng.integers(-50, 50, (3, 4)).astype(np.int32)}, 18)


def test_xor_on_bools(check_node, rng):
    check_node("Xor", {"a": rng.random((3, 4)) > 0.5, "b": rng.random((4,)) > 0.5}, 7)


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint32, np.uint64])
def test_bit_shift_unsigned(check_node, rng, direction, dtype):
    x = rng.integers(0, 200, (2, 5)).astype(dtype)
    s = np.array([0, 1, 3, 7, 2], dtype)
    check_node("BitShift", {"x": x, "s": s}, 11, direction=direction)


def test_bit_shift_reference_follows_bitshift_28_for_signed():
    """BitShift-28: arithmetic right shift; a shift outside [0, bits) leaves the sign fill."""
    from compiler.ops import bitwise
    x = np.array([-8, 8, -8, 8, -8], np.int8)
    s = np.array([1, 1, 9, 9, -1], np.int8)
    right = bitwise.bit_shift.reference([x, s], {"direction": "right"})[0]
    left = bitwise.bit_shift.reference([x, s], {"direction": "left"})[0]
    np.testing.assert_array_equal(right, [-4, 4, -1, 0, -1])
    np.testing.assert_array_equal(left, [-16, 16, 0, 0, 0])
