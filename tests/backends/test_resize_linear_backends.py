"""q.resize_linear through the TVM backend (a hypothesis property) and the MLIR backend, bit-exact against
compiler.interp (the op's numpy reference): every coordinate mode, integer and general scales, up and down,
int8/uint8 with any zero point, every frac_bits up to the int32 limit, extreme inputs included."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from compiler import interp
from compiler.backends import get_backend
from compiler.ir import Graph
from compiler.ops import quant as q
from compiler.target import Target
from compiler.types import DType, TensorType
from tests.conftest import has_module, requires_tvm

BACKENDS = [pytest.param("tvm", marks=requires_tvm),
            pytest.param("mlir", marks=pytest.mark.skipif(not has_module("iree"), reason="iree is not installed"))]

TARGET = Target("llvm", num_threads=1)
SETTINGS = settings(max_examples=6, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _check(g: Graph, x: np.ndarray, backend: str = "tvm") -> None:
    want = interp.run(g, x)
    got = get_backend(backend).build(g, TARGET).run([x])
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and a.dtype == b.dtype, (i, a.shape, b.shape, a.dtype, b.dtype)
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")


@requires_tvm
@SETTINGS
@given(st.data())
def test_resize_linear_tvm_bit_exact_property(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    dt = data.draw(st.sampled_from([DType.I8, DType.U8]))
    lo, hi = q.INT_RANGE[dt]
    shape = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3)),
             data.draw(st.integers(1, 7)), data.draw(st.integers(1, 7)))
    g = Graph()
    x = g.add_input("x", TensorType(shape, dt))
    outs = []
    for mode in data.draw(st.lists(st.sampled_from(q.RESIZE_COORD_MODES), min_size=1, max_size=2, unique=True)):
        sizes, scales = [], []
        for n in shape[2:]:
            if data.draw(st.booleans()):
                f = data.draw(st.sampled_from([2, 4]))
                sizes.append(n * f)
                scales.append(float(f))
            else:
                m = data.draw(st.integers(1, 15))
                sizes.append(m)
                scales.append(m / n)
        outs.append(g.add1(q.resize_linear, [x], sizes=tuple(sizes), scales=tuple(scales),
                           coordinate_transformation_mode=mode, zero_point=data.draw(st.integers(lo, hi)),
                           frac_bits=data.draw(st.integers(1, q.RESIZE_MAX_FRAC_BITS))))
    g.outputs = outs
    xs = rng.integers(lo, hi + 1, shape)
    if data.draw(st.booleans()):               # extremes: the largest int32 sums
        xs = np.where(rng.random(shape) < 0.5, lo, hi)
    _check(g, xs.astype(dt.numpy))


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_mode_2x_and_a_general_scale(backend, rng):
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 5, 6), DType.U8))
    g.outputs = [g.add1(q.resize_linear, [x], sizes=sizes, scales=scales, coordinate_transformation_mode=mode,
                        zero_point=131) for mode in q.RESIZE_COORD_MODES
                 for sizes, scales in (((10, 12), (2.0, 2.0)), ((8, 4), (1.6, 4 / 6)))]
    _check(g, rng.integers(0, 256, (1, 3, 5, 6)).astype(np.uint8), backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_largest_sum_at_the_int32_limit(backend):
    """F = 11 and |x - zp| = 255 everywhere: the 4-tap sum is 255 * 2^22 + 2^21, just inside int32."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 2, 3, 3), DType.U8))
    g.outputs = [g.add1(q.resize_linear, [x], sizes=(7, 5), scales=(7 / 3, 5 / 3),
                        coordinate_transformation_mode="align_corners", zero_point=zp, frac_bits=11)
                 for zp in (0, 255)]
    xs = np.zeros((1, 2, 3, 3), np.uint8)
    xs[0, 0] = 255
    _check(g, xs, backend)
    out = interp.run(g, xs)
    assert out[0][0, 0].min() == 255 and out[1][0, 1].max() == 0
