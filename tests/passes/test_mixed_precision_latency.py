"""mixed_precision latencies from the learned cost model: the default latency is the model's prediction for the
int8 kernel that runs each layer; 4-bit conv weights run in the 8-bit kernels on x86 (same latency), so a latency
budget below 1.0 is refused with a clear message on a net of convs; an int4 linear layer is the int8 prediction
times the int4 VNNI matmul's measured ratio; without a model the proportional placeholder is used and the
plan says so."""
from __future__ import annotations

import numpy as np
import pytest

from passes.mixed_precision import PROPORTIONAL_SOURCE, InfeasibleBudget, Layer, measure_costs, plan_mixed
from tests.conftest import has_module
from tests.passes.test_mixed_precision import _batches, _chain

needs_model = pytest.mark.skipif(not (has_module("tvm") and has_module("xgboost")),
                                 reason="the cost model needs apache-tvm and xgboost")


@pytest.fixture(autouse=True)
def _private_decision_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DYC_CACHE_DIR", str(tmp_path / "dyc-cache"))


@pytest.fixture
def shipped_model():
    import os

    from costmodel import policy
    from costmodel.model import XGBCostModel
    if not os.path.exists(policy.SHIPPED_MODEL):
        pytest.skip("no shipped cost model")
    with policy.use_model(XGBCostModel.load(policy.SHIPPED_MODEL)):
        yield


@needs_model
def test_default_latency_is_the_cost_model(rng, shipped_model):
    from costmodel import policy
    g = _chain(rng)
    plan = plan_mixed(g, _batches(rng), size_budget=0.8)
    assert plan.latency_source.startswith("cost model")
    assert "4-bit weights run in the 8-bit kernel" in plan.latency_source
    for la in plan.layers:
        assert la.latency[8] > 0 and la.latency[4] == la.latency[8]
    conv2 = next(la for la in plan.layers if la.name == "conv2")
    sec, note = policy.predict_layer_latency("conv", (8, 8, 8, 8), (16, 8, 3, 3), 8, strides=(1, 1),
                                             pads=(1, 1, 1, 1))
    assert conv2.latency[8] == pytest.approx(sec) and note == "int8 VNNI conv"
    assert "latency: cost model" in str(plan)


@needs_model
def test_latency_budget_below_int8_is_infeasible_on_x86(rng, shipped_model):
    with pytest.raises(InfeasibleBudget, match="no layer has a choice faster than its int8 kernel") as e:
        plan_mixed(_chain(rng), _batches(rng), latency_budget=0.8)
    assert "--size-budget" in str(e.value)
    plan = plan_mixed(_chain(rng), _batches(rng), latency_budget=1.0, size_budget=0.8)
    assert plan.meets_budget() and any(b == 4 for b in plan.bits.values())


@needs_model
def test_predict_layer_latency_kernels(shipped_model):
    from costmodel import policy
    small = policy.predict_layer_latency("conv", (1, 64, 28, 28), (64, 64, 3, 3), 8, pads=(1, 1, 1, 1))[0]
    big = policy.predict_layer_latency("conv", (1, 256, 28, 28), (256, 256, 3, 3), 8, pads=(1, 1, 1, 1))[0]
    assert 0 < small < big                                  # 16x the MACs: clearly slower
    sec, note = policy.predict_layer_latency("matmul", (4, 512), (512, 256), 8)
    assert sec > 0 and "VNNI matmul" in note
    for rows, ratio in ((1, 0.55), (4, 0.63), (64, 1.0)):          # int4 linear layers: the int4 VNNI matmul
        s8 = policy.predict_layer_latency("matmul", (rows, 4096), (4096, 4096), 8)[0]
        s4, note4 = policy.predict_layer_latency("matmul", (rows, 4096), (4096, 4096), 4)
        assert s4 == pytest.approx(ratio * s8) and "int4 linear layer" in note4
    for bad in ({"groups": 4}, {"dilations": (2, 2)}):
        with pytest.raises(policy.LatencyUnavailable):
            policy.predict_layer_latency("conv", (1, 64, 28, 28), (64, 16, 3, 3), 8, **bad)
    with pytest.raises(policy.LatencyUnavailable):
        policy.predict_layer_latency("conv", (1, 64, 28, 28), (64, 64, 3, 3), 2)


def test_fallback_without_a_model_says_so(rng):
    pytest.importorskip("tvm")
    from costmodel import policy
    with policy.use_model(None):
        plan = plan_mixed(_chain(rng), _batches(rng), size_budget=0.8, latency_budget=0.9)
    assert plan.latency_source.startswith(PROPORTIONAL_SOURCE) and "no cost model" in plan.latency_source
    assert all(la.latency[4] == pytest.approx(0.5 * la.latency[8]) for la in plan.layers)
    assert PROPORTIONAL_SOURCE in str(plan)


def test_layers_without_shapes_fall_back():
    la = Layer("l", params=100, macs=1000)
    src = measure_costs([la])
    assert src.startswith(PROPORTIONAL_SOURCE) and la.latency[4] == pytest.approx(0.5e-6)
    assert measure_costs([la], latency=lambda layer, b: float(b)) == "given" and la.latency == {4: 4.0, 8: 8.0}
    assert np.isfinite(la.cost("latency", 8))
