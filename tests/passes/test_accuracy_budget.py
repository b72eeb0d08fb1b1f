"""passes/accuracy_budget.py: --accuracy-budget as a fraction, top-1 points ("0.5pt", with labels) or cosine
("cos0.99"); the errors; and the search over the perturbation bound on the random MLP of
test_mixed_realizations: the kept plan meets the measured budget, and has the fewest multiplies of those that do."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.diagnostics import InvalidInput
from passes.accuracy_budget import AccuracyTarget, SearchedPlan, parse_accuracy_budget
from passes.mixed_precision import InfeasibleBudget, proportional_latency
from passes.quantize import QuantConfig
from passes.quantize_pipeline import quantize_mixed
from tests.passes.test_mixed_realizations import _batches, _mlp

LABELS = np.array([3, 1, 4])


@pytest.mark.parametrize("text,want", [
    ("0.01", 0.01), (0.02, 0.02), ("1e-3", 1e-3),
    ("0.5pt", AccuracyTarget("points", 0.5)), (" 1 pts ", AccuracyTarget("points", 1.0)),
    ("0pt", AccuracyTarget("points", 0.0)), (".25points", AccuracyTarget("points", 0.25)),
    ("cos0.99", AccuracyTarget("cosine", 0.99)), ("cos=0.999", AccuracyTarget("cosine", 0.999)),
    ("COS 1", AccuracyTarget("cosine", 1.0)),
])
def test_parse_accuracy_budget(text, want):
    got = parse_accuracy_budget(text, LABELS)
    assert got == want and type(got) is type(want)
    if isinstance(got, AccuracyTarget) and got.kind == "points":
        assert got.labels.dtype == np.int64 and got.labels.tolist() == [3, 1, 4]
    if isinstance(got, AccuracyTarget) and got.kind == "cosine":
        assert got.labels is None             # a cosine needs no labels: none carried
    assert parse_accuracy_budget(None) is None


def test_parse_accuracy_budget_labels_per_batch_and_met():
    t = parse_accuracy_budget("0.5pt", [np.array([[1, 2]]), np.array([0, 9])])
    assert t.labels.tolist() == [1, 2, 0, 9] and str(t) == "0.5pt"
    assert t.met(0.5) and not t.met(0.51)
    c = parse_accuracy_budget("cos0.99")
    assert str(c) == "cos0.99" and c.met(0.995) and not c.met(0.98)


def test_a_metric_budget_carries_the_users_metric_lower_is_better():
    """metricM: the user's loss at most M on every batch (its largest value over the batches)."""
    def err(ref, got):
        return float(np.abs(ref[0] - got[0]).max())

    for text in ("metric0.05", "metric<=0.05", "METRIC = .05", "metric5e-2"):
        t = parse_accuracy_budget(text, metric=err)
        assert t == AccuracyTarget("metric", 0.05) and t.metric is err and str(t) == "metric0.05"
    assert t.met(0.05) and not t.met(0.051) and t.unit == "err"
    ref = [[np.zeros(3)], [np.zeros(3)]]
    assert t.metric_loss(ref, [[np.array([0.0, 0.01, 0.0])], [np.array([0.0, -0.2, 0.1])]]) == pytest.approx(0.2)
    with pytest.raises(InvalidInput, match="--accuracy-budget 'metric0.05' bounds your accuracy metric"):
        parse_accuracy_budget("metric0.05", flag="--accuracy-budget")


@pytest.mark.parametrize("text,match", [
    ("0.5ptx", "is not an accuracy budget"), ("cos", "is not an accuracy budget"), ("pt", "not an accuracy"),
    ("-0.01", "must be positive"), ("0", "must be positive"), ("nan", "must be positive"),
    ("cos1.5", r"in \(0, 1\]"), ("cos0", r"in \(0, 1\]"), ("150pt", "below 100"), ([0.5], "not an accuracy"),
])
def test_parse_accuracy_budget_refuses_malformed_values_naming_the_flag(text, match):
    with pytest.raises(InvalidInput, match=match) as e:
        parse_accuracy_budget(text, LABELS, flag="--accuracy-budget")
    assert "--accuracy-budget" in str(e.value) and "0.5pt" in e.value.hint


def test_points_need_integer_labels():
    with pytest.raises(InvalidInput, match="'0.5pt' counts top-1 points .* needs labels") as e:
        parse_accuracy_budget("0.5pt", None, flag="--accuracy-budget")
    assert "--accuracy-budget" in str(e.value) and "labels" in e.value.hint
    for bad in (np.array([0.5, 1.0]), np.array([-1, 2]), np.array([]), np.array(["a"])):
        with pytest.raises(InvalidInput, match="class indices"):
            parse_accuracy_budget("0.5pt", bad)


def test_labels_for_reads_the_calibration_npz(tmp_path):
    from compiler.calibration import labels_for
    with_labels, without = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(with_labels, x=np.zeros((4, 2), np.float32), labels=np.array([0, 1, 2, 3]))
    np.savez(without, x=np.zeros((4, 2), np.float32))
    assert labels_for(with_labels).tolist() == [0, 1, 2, 3]
    assert labels_for(without) is None and labels_for([np.zeros(2)]) is None
    assert labels_for(with_labels, [7]) == [7]                 # labels= wins over the file's


def _mixed(rng, budget):
    g, batches = _mlp(rng), _batches(rng)
    return quantize_mixed(g, batches, accuracy_budget=budget, realizations=("lut4", "lut2"),
                          config=QuantConfig(integer_only=True), latency=proportional_latency)


def test_search_keeps_the_fewest_multiplies_plan_within_a_cosine_budget():
    """A loose cosine: the fewest-multiplies plan (both middle layers LUT) at once. A budget between that plan's
    measured cosine and 1: the plan over it is refused, F is bisected, and the kept plan is the measured one
    within the budget with the fewest multiplies; its measured cosine is the integer graph's."""
    from compiler import interp
    _, loose = _mixed(np.random.default_rng(0), "cos0.5")
    assert isinstance(loose, SearchedPlan) and len(loose.search.trials) == 1
    assert loose.bits == {"fc0": 8, "fc1": "lut4", "fc2": "lut4", "fc3": 8}
    c_hi = loose.search.measured
    assert 0.5 < c_hi < 0.9999
    tight = 1 - 0.75 * (1 - c_hi)          # one LUT layer meets it, two do not
    rng = np.random.default_rng(0)
    g, batches = _mlp(rng), _batches(rng)
    ig, plan = quantize_mixed(g, batches, accuracy_budget=AccuracyTarget("cosine", tight),
                              realizations=("lut4", "lut2"), config=QuantConfig(integer_only=True),
                              latency=proportional_latency)
    trials = plan.search.trials
    assert len(trials) >= 3 and not trials[0].met and trials[1].met
    assert trials[1].bits == dict.fromkeys(("fc0", "fc1", "fc2", "fc3"), 8)      # the least-perturbing plan
    within = [t for t in trials if t.met]
    assert plan.search.measured >= tight and plan.total("multiplies") == min(t.multiplies for t in within)
    assert plan.total("multiplies") < plan.total("multiplies", 8)               # some layer saved multiplies
    assert plan.bits != loose.bits and plan.search.solves <= 8
    ref = np.concatenate([interp.run(g, *b)[0].ravel() for b in batches]).astype(np.float64)
    got = np.concatenate([interp.run(ig, *b)[0].ravel() for b in batches]).astype(np.float64)
    assert np.isclose(ref @ got / np.linalg.norm(ref) / np.linalg.norm(got), plan.search.measured, atol=1e-9)
    assert f"accuracy budget cos{tight:g}" in str(plan) and "within" in str(plan) and "over" in str(plan)


def test_search_refuses_a_budget_int8_misses_and_labels_that_do_not_fit(rng):
    with pytest.raises(InfeasibleBudget, match="accuracy budget cos1 cannot be met: the least-perturbing plan"):
        _mixed(rng, "cos1")
    with pytest.raises(InvalidInput, match="3 labels for 32 calibration samples"):
        _mixed(rng, parse_accuracy_budget("1pt", LABELS))
    g, batches = _mlp(rng), _batches(rng)
    with pytest.raises(InvalidInput, match="Hessian"):
        quantize_mixed(g, batches, accuracy_budget=parse_accuracy_budget("cos0.9"), sensitivity={"fc0": 1.0})


def test_search_points_on_labels_the_float_model_gets_right(rng):
    """Labels = the FP32 top-1: FP32 scores 100%, and the kept plan loses at most the budget on them."""
    from compiler import interp
    g, batches = _mlp(rng), _batches(rng)
    labels = [interp.run(g, *b)[0].argmax(-1) for b in batches]
    ig, plan = quantize_mixed(g, batches, accuracy_budget=parse_accuracy_budget("7pt", labels),
                              realizations=("lut4", "lut2"), config=QuantConfig(integer_only=True),
                              latency=proportional_latency)
    s = plan.search
    assert s.fp32_accuracy == 100.0 and s.samples == 32 and s.measured <= 7.0
    got = np.concatenate([interp.run(ig, *b)[0].argmax(-1) for b in batches])
    assert np.isclose(100 - np.mean(got == np.concatenate(labels)) * 100, s.measured)
    assert "top-1 points lost on 32 labelled calibration samples (FP32 100.00%" in str(plan)


def test_api_takes_labels_and_names_the_argument(rng):
    from compiler.api import quantize_model
    g, batches = _mlp(rng), _batches(rng)
    with pytest.raises(InvalidInput, match="accuracy_budget '0.5pt' counts top-1 points"):
        quantize_model(g, "mixed", batches, False, accuracy_budget="0.5pt")
    with pytest.raises(InvalidInput, match="accuracy_budget 'cos9': a cosine budget is in"):
        quantize_model(g, "mixed", batches, False, accuracy_budget="cos9")
    with pytest.raises(InvalidInput, match="3 labels for 32 calibration samples"):
        quantize_model(g, "mixed", batches, False, accuracy_budget="0.5pt", labels=LABELS)
