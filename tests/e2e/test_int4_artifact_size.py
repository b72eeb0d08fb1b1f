"""An all-4-bit model's saved artifact (.dyc, group scales, code and manifest included) is at least 1.7x smaller
than the INT8 one: int4 VNNI weights two per byte, LUT 4-bit weights as bit-planes plus a scale and zero point
per group of 128 rows."""
from __future__ import annotations

import numpy as np
import pytest

import compiler
from examples.int4_linear import artifact_bytes, mlp, stored_weight_bytes

WIDTH = 1024


@pytest.mark.slow
def test_all_4bit_artifacts_are_at_least_1_7x_smaller_than_int8():
    rng = np.random.default_rng(0)
    g = mlp(rng, WIDTH)
    calib = [[rng.normal(0, 1, (1, WIDTH)).astype(np.float32)] for _ in range(4)]
    builds = {name: compiler.compile(g, "llvm -num-threads=1", quantize="int8", calibration=calib, **opts)
              for name, opts in (("int8", {}), ("int4", {"weight_bits": 4}), ("lut4", {"lut": 4}))}
    size = {name: artifact_bytes(cm) for name, cm in builds.items()}
    weights = {name: stored_weight_bytes(cm.graph) for name, cm in builds.items()}
    assert weights["int8"] == 3 * WIDTH * WIDTH                       # every layer's weight counted
    assert weights["int4"] == weights["int8"] // 2
    assert weights["int8"] / 2 < weights["lut4"] < weights["int8"] / 1.9      # planes + group scales / zeros
    for name in ("int4", "lut4"):
        assert size["int8"] / size[name] >= 1.7, (name, size)
