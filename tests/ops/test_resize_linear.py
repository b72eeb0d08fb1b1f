"""q.resize_linear's reference against the float bilinear resize (nn.resize, mode linear) of the dequantized
input: within 1/2 step plus the weight rounding D / 2^F for every coordinate mode and scale, exactly 1/2 step
where the weights are exact, a constant image kept exactly; and its type rule."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.ops import quant as q
from compiler.ops import shape as sh
from compiler.ops.registry import TypeRuleError
from compiler.types import DType, TensorType

# (H, W) -> (Ho, Wo) with the scales: 2x, 4x, non-integer up, non-integer down
CASES = [((5, 7), (10, 14), (2.0, 2.0)), ((3, 4), (12, 16), (4.0, 4.0)),
         ((6, 5), (9, 8), (1.5, 1.6)), ((9, 7), (5, 4), (5 / 9, 4 / 7))]
GRIDS = [(DType.U8, 128), (DType.U8, 0), (DType.I8, 0), (DType.I8, -20)]


def _attrs(sizes, scales, mode, zp, frac_bits=q.RESIZE_FRAC_BITS):
    return q.resize_linear.complete_attrs(dict(sizes=sizes, scales=scales, coordinate_transformation_mode=mode,
                                               zero_point=zp, frac_bits=frac_bits))


def _float_bilinear(d: np.ndarray, sizes, scales, mode) -> np.ndarray:
    """nn.resize's own linear reference on the centred (dequantized, in steps) values, float64."""
    a = sh.resize.complete_attrs(dict(sizes=(*d.shape[:2], *sizes), scales=(1.0, 1.0, *scales), mode="linear",
                                      coordinate_transformation_mode=mode))
    return sh.resize.reference([d.astype(np.float64)], a)[0]


def _spread(d: np.ndarray, a) -> np.ndarray:
    """D per output pixel: max - min of its 4 taps."""
    (iy, _), (ix, _) = q.resize_linear_tables(d.shape[2:], a)
    taps = [d[:, :, iy[:, p], :][:, :, :, ix[:, k]] for p in range(2) for k in range(2)]
    return np.max(taps, axis=0) - np.min(taps, axis=0)


def _run(x: np.ndarray, a) -> np.ndarray:
    t = q.resize_linear.infer([TensorType(x.shape, DType.from_numpy(x.dtype))], a)[0]
    y = q.resize_linear.reference([x], a)[0]
    assert (y.shape, y.dtype) == (t.shape, t.dtype.numpy)
    return y


@pytest.mark.parametrize("mode", q.RESIZE_COORD_MODES)
def test_error_vs_float_bilinear_within_half_step_plus_weight_rounding(mode, rng):
    f = q.RESIZE_FRAC_BITS
    worst = 0.0
    for (hw, sizes, scales) in CASES:
        for dt, zp in GRIDS:
            lo, hi = q.INT_RANGE[dt]
            checker = np.where(np.indices((2, 3, *hw)).sum(0) % 2 == 1, hi, lo)      # the largest spreads
            for x in (rng.integers(lo, hi + 1, (2, 3, *hw)).astype(dt.numpy), checker.astype(dt.numpy)):
                a = _attrs(sizes, scales, mode, zp)
                d = x.astype(np.int64) - zp
                err = np.abs((_run(x, a).astype(np.int64) - zp) - _float_bilinear(d, sizes, scales, mode))
                assert np.all(err <= 0.5 + _spread(d, a) / 2**f + 1e-9), (hw, sizes, dt, zp, err.max())
                worst = max(worst, float(err.max()))
    assert worst <= 0.5 + 255 / 2**f          # the docstring's bound: 0.749 steps at F = 10
    assert worst > 0.25                        # the comparison is not vacuous (rounding to steps shows)


@pytest.mark.parametrize("mode", ["half_pixel", "pytorch_half_pixel", "asymmetric"])
@pytest.mark.parametrize("factor", [2, 4])
def test_integer_factors_have_exact_weights_so_half_a_step(mode, factor, rng):
    x = rng.integers(0, 256, (1, 4, 6, 5)).astype(np.uint8)
    sizes, scales = (6 * factor, 5 * factor), (float(factor), float(factor))
    a = _attrs(sizes, scales, mode, 77, frac_bits=3)       # 1/8 resolves every weight of 2x and 4x
    err = np.abs((_run(x, a).astype(np.int64) - 77) - _float_bilinear(x.astype(np.int64) - 77, sizes, scales, mode))
    assert err.max() <= 0.5


def test_weights_sum_to_one_and_a_constant_image_stays_exact():
    for mode in q.RESIZE_COORD_MODES:
        idx, w = q.resize_linear_taps(11, 7, 11 / 7, mode, 8)
        assert np.all(w.sum(axis=1) == 256) and w.min() >= 0 and idx.min() >= 0 and idx.max() <= 6
    x = np.full((1, 2, 5, 6), -77, np.int8)
    assert np.all(_run(x, _attrs((13, 3), (2.6, 0.5), "align_corners", 100)) == -77)


def test_ties_round_half_up_and_the_clamp():
    # align_corners 2 -> 3 pixels: the middle output is the mean of the two, a tie whenever they differ by 1
    x = np.array([[[[0, 1]]]], np.int8)
    y = _run(x, _attrs((1, 3), (1.0, 1.5), "align_corners", 0, frac_bits=4))[0, 0, 0]
    assert y.tolist() == [0, 1, 1]                 # 0.5 rounds up; 0 and 1 kept
    x = np.array([[[[-1, -2]]]], np.int8)
    y = _run(x, _attrs((1, 3), (1.0, 1.5), "align_corners", 0, frac_bits=4))[0, 0, 0]
    assert y.tolist() == [-1, -1, -2]              # -1.5 rounds up to -1
    x = np.array([[[[0, 255]]]], np.uint8)
    assert _run(x, _attrs((1, 3), (1.0, 1.5), "align_corners", 255, frac_bits=11))[0, 0, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize("attrs, dt, shape, msg", [
    (dict(frac_bits=12), DType.U8, (1, 1, 2, 2), "frac_bits"),
    (dict(frac_bits=0), DType.U8, (1, 1, 2, 2), "frac_bits"),
    ({}, DType.I16, (1, 1, 2, 2), "resize_linear input"),
    ({}, DType.U8, (1, 2, 2), "NCHW"),
    (dict(coordinate_transformation_mode="tf_crop_and_resize"), DType.U8, (1, 1, 2, 2), "coordinate"),
    (dict(zero_point=300), DType.U8, (1, 1, 2, 2), "zero point"),
    (dict(sizes=(4, 4, 4)), DType.U8, (1, 1, 2, 2), "2 positive sizes"),
])
def test_type_rule_rejects(attrs, dt, shape, msg):
    a = q.resize_linear.complete_attrs({**dict(sizes=(4, 4), scales=(2.0, 2.0)), **attrs})
    with pytest.raises(TypeRuleError, match=msg):
        q.resize_linear.infer([TensorType(shape, dt)], a)
