"""The integer contractions' references (compiler/ops/quant.py) sum in float64 where that is exact and take a
per-tap path for depthwise convs: the integers must be those of the plain int64 sum, wraparound included."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.ops import quant as q
from compiler.ops.linalg import conv_reference


def _int64_conv(x, w, b, zp, strides, pads, dilations, groups):
    """The definition, summed in int64 (no BLAS, no per-tap path)."""
    y = conv_reference(x.astype(np.int64) - zp, w.astype(np.int64), None if b is None else b.astype(np.int64),
                       strides, pads, dilations, groups)
    return y.astype(np.int32)


CASES = [  # channels, groups, kernel, strides, pads, dilations, input dtype
    (16, 16, 3, (1, 1), (1, 1, 1, 1), (1, 1), np.int16),       # depthwise
    (24, 24, 5, (2, 2), (2, 1, 1, 2), (1, 1), np.uint8),       # depthwise, stride 2, uneven pads
    (8, 8, 3, (1, 2), (0, 2, 1, 0), (2, 1), np.int8),          # depthwise, dilated
    (12, 1, 3, (2, 2), (1, 1, 1, 1), (1, 1), np.int16),        # dense
    (12, 3, 1, (1, 1), (0, 0, 0, 0), (1, 1), np.int8),         # grouped 1x1
]


@pytest.mark.parametrize("wide_bias", [True, False])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"c{c[0]}_g{c[1]}_k{c[2]}_s{c[3][0]}{c[3][1]}_{c[6].__name__}")
def test_qconv_reference_equals_the_int64_sum(case, wide_bias):
    c, groups, k, strides, pads, dilations, dtype = case
    rng = np.random.default_rng(c * k)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, (2, c, 11, 9)).astype(dtype)
    w = rng.integers(-127, 128, (c, c // groups, k, k)).astype(np.int8)
    # near the int32 ends (the sum wraps), or small
    b = rng.integers(-2**31, 2**31 - 1, c).astype(np.int32) if wide_bias else rng.integers(-99, 99, c).astype(np.int32)
    zp = 3 if dtype == np.uint8 else 0
    attrs = {"strides": strides, "pads": pads, "dilations": dilations, "groups": groups, "x_zero_point": zp}
    got = q._qconv_ref([x, w, b], attrs)[0]
    want = _int64_conv(x, w, b, zp, strides, pads, dilations, groups)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def test_qmatmul_reference_equals_the_int64_sum():
    rng = np.random.default_rng(0)
    a = rng.integers(-32768, 32768, (3, 5, 700)).astype(np.int16)
    b = rng.integers(-32768, 32768, (700, 6)).astype(np.int16)
    got = q._qmatmul_ref([a, b], {"a_zero_point": 0, "b_zero_point": 0})[0]
    want = np.matmul(a.astype(np.int64), b.astype(np.int64)).astype(np.int32)     # wraps: |sum| reaches 2^39
    np.testing.assert_array_equal(got, want)


def test_the_sum_is_float64_only_below_2_to_the_53():
    x = np.array([32767], np.int64)
    w = np.array([127], np.int64)
    assert q.exact_sum_dtype(x, w, 1000, np.array([2**31])) is np.float64
    assert q.exact_sum_dtype(x, w, 2**53 // (32767 * 127) + 1) is np.int64
    assert q.exact_sum_dtype(np.zeros(0, np.int64), w, 10) is np.float64
