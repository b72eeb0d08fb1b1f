"""mixed_precision: the HAWQV3 ILP against brute force on hand-made problems (budgets, ties,
first/last kept 8-bit, infeasible budgets), the per-layer costs and sensitivities, and
quantize_mixed on small graphs (int4 weights where the plan says 4, integer-only)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from compiler import interp
from compiler.diagnostics import InvalidInput
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import linalg, quant
from compiler.types import DType, TensorType
from passes.mixed_precision import (
    InfeasibleBudget,
    Layer,
    budget_limit,
    fake_quant,
    measure_costs,
    plan_mixed,
    proportional_latency,
    solve_bits,
    total_cost,
)
from passes.quantize import QuantConfig
from passes.quantize_pipeline import quantize_mixed
from passes.verify_integer_only import verify_integer_only
from tests.conftest import requires_torch

F32 = DType.F32


def _layer(name, params, o4, o8=0.0, macs=0, fixed=None):
    return Layer(name, params, macs, omega={4: o4, 8: o8}, fixed=fixed)


def _brute(layers, budgets, ties=(), keep_first_last=True):
    """Every assignment; the feasible ones sorted by objective."""
    best = []
    for combo in itertools.product((4, 8), repeat=len(layers)):
        bits = {la.name: b for la, b in zip(layers, combo)}
        if keep_first_last and (combo[0] != 8 or combo[-1] != 8):
            continue
        if any(la.fixed is not None and bits[la.name] != la.fixed for la in layers):
            continue
        if any(len({bits[t] for t in group}) > 1 for group in ties):
            continue
        if any(total_cost(layers, bits, k) > lim for k, lim in budgets.items()):
            continue
        best.append((sum(la.omega[bits[la.name]] for la in layers), bits))
    return sorted(best, key=lambda t: t[0])


# five layers; sizes in bytes at 8 bits = params
FIVE = [_layer("first", 100, 9.0), _layer("a", 1000, 1.0), _layer("b", 2000, 5.0),
        _layer("c", 4000, 3.0), _layer("last", 100, 9.0)]


def test_hand_made_ilp_has_the_brute_force_optimum():
    # all-8: 7200 bytes. budget 5400: must save >= 1800 bytes (4-bit saves params/2):
    # {c} saves 2000 at cost 3; {a,b} saves 1500 (not enough); {b} saves 1000; {a,c} 2500 at 4
    budget = 5400.0
    ranked = _brute(FIVE, {"size": budget})
    assert ranked[0][0] < ranked[1][0]                   # exactly one optimum
    bits = solve_bits(FIVE, budget, "size")
    assert bits == ranked[0][1] == {"first": 8, "a": 8, "b": 8, "c": 4, "last": 8}
    assert total_cost(FIVE, bits, "size") <= budget


def test_tighter_budget_changes_the_optimum():
    bits = solve_bits(FIVE, 4600.0, "size")              # must save 2600: {b, c} (8) beats {a, b, c} (9)
    assert bits == {"first": 8, "a": 8, "b": 4, "c": 4, "last": 8}
    assert solve_bits(FIVE, 7200.0, "size") == dict.fromkeys(bits, 8)


@pytest.mark.parametrize("seed", range(12))
def test_random_problems_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    layers = [_layer(f"l{i}", int(rng.integers(10, 1000)), float(rng.uniform(0.1, 10)),
                     float(rng.uniform(0, 0.01)), macs=int(rng.integers(100, 10_000)))
              for i in range(7)]
    measure_costs(layers)
    ties = [("l2", "l4")] if seed % 2 else []
    budgets = {"size": budget_limit(layers, "size", float(rng.uniform(0.55, 0.95)))}
    if seed % 3 == 0:
        budgets["latency"] = budget_limit(layers, "latency", 0.8)
    ranked = _brute(layers, budgets, ties)
    if not ranked:
        with pytest.raises(InfeasibleBudget):
            solve_bits(layers, budgets, ties=ties)
        return
    bits = solve_bits(layers, budgets, ties=ties)
    obj = sum(la.omega[bits[la.name]] for la in layers)
    assert obj == pytest.approx(ranked[0][0], rel=1e-9, abs=1e-12)
    assert all(total_cost(layers, bits, k) <= lim for k, lim in budgets.items())


def test_first_and_last_layers_stay_8_bit():
    # the cheapest way to meet the budget would be to put first/last (huge, insensitive) at 4
    layers = [_layer("first", 10_000, 0.001), _layer("mid", 1000, 1.0), _layer("last", 10_000, 0.001)]
    bits = solve_bits(layers, 20_600, "size")
    assert bits == {"first": 8, "mid": 4, "last": 8}
    assert solve_bits(layers, 15_000, "size", keep_first_last=False)["first"] == 4
    with pytest.raises(InfeasibleBudget):
        solve_bits(layers, 15_000, "size")


def test_tie_groups_share_their_bit_width():
    # alone, "b" (cheap to quantize) would go to 4 and "c" stay 8; tied to "c", "b" goes up
    layers = [_layer("first", 10, 1.0), _layer("a", 1000, 4.0), _layer("b", 1000, 0.5),
              _layer("c", 1000, 10.0), _layer("last", 10, 1.0)]
    assert solve_bits(layers, 2600, "size") == {"first": 8, "a": 8, "b": 4, "c": 8, "last": 8}
    tied = solve_bits(layers, 2600, "size", ties=[("b", "c")])
    assert tied["b"] == tied["c"] == 8 and tied["a"] == 4
    assert tied == _brute(layers, {"size": 2600}, [("b", "c")])[0][1]
    with pytest.raises(InvalidInput, match="unknown layer"):
        solve_bits(layers, 2600, "size", ties=[("b", "nope")])


def test_tie_to_the_first_layer_keeps_the_group_8_bit():
    layers = [_layer("first", 10, 1.0), _layer("a", 1000, 0.1), _layer("last", 10, 1.0)]
    assert solve_bits(layers, 2000, "size", ties=[("first", "a")])["a"] == 8
    with pytest.raises(InfeasibleBudget):
        solve_bits(layers, 600, "size", ties=[("first", "a")])


def test_infeasible_budget_names_the_smallest_reachable_cost():
    with pytest.raises(InfeasibleBudget, match="smallest reachable size 3700") as e:
        solve_bits(FIVE, 3000.0, "size")
    assert isinstance(e.value, InvalidInput) and "raise the budget" in str(e.value)
    with pytest.raises(InfeasibleBudget):
        solve_bits([_layer("first", 10, 1.0, fixed=4), _layer("x", 10, 1.0)], 100, "size")


def test_costs_per_bit_width():
    la = Layer("l", params=1000, macs=5000)
    assert (la.cost("size", 8), la.cost("size", 4)) == (1000, 500)
    assert (la.cost("bops", 8), la.cost("bops", 4)) == (5000 * 64, 5000 * 32)
    measure_costs([la])
    assert la.cost("latency", 4) == proportional_latency(la, 4) == pytest.approx(0.5 * la.cost("latency", 8))
    measure_costs([la], latency=lambda layer, b: {4: 3e-6, 8: 4e-6}[b])
    assert la.latency == {4: 3e-6, 8: 4e-6}
    with pytest.raises(InvalidInput):
        Layer("m", 10).cost("latency", 4)


def test_fake_quant_4_bit_grid(rng):
    w = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    q = fake_quant(w, 0, 4)
    for c in range(3):
        step = np.abs(w[c]).max() / 7
        levels = np.round(q[c] / step)
        assert np.abs(levels).max() == 7 and np.allclose(levels * step, q[c], atol=1e-6)
    assert np.sum((fake_quant(w, 0, 8) - w) ** 2) < np.sum((q - w) ** 2) / 100


# -- quantize_mixed on small graphs ---------------------------------------------------------
def _conv(g, x, cin, cout, rng, name, k=3, scale=1.0, stride=1):
    w = g.const((rng.standard_normal((cout, cin, k, k)) * scale / np.sqrt(cin * k * k)).astype(np.float32), name + "_w")
    b = g.const(rng.standard_normal(cout).astype(np.float32) * 0.1, name + "_b")
    p = k // 2
    return g.add1(linalg.conv, [x, w, b], strides=(stride, stride), pads=(p, p, p, p),
                  dilations=(1, 1), name=name)


def _chain(rng, n=8, down_scale=1.0):
    """conv1 -> conv2 -> {conv3, down (1x1, same input)} -> add -> conv4: one tie group."""
    g = Graph()
    x = g.add_input("x", TensorType((n, 2, 8, 8), F32))
    h = g.add1(ew.relu, [_conv(g, x, 2, 8, rng, "conv1")])
    h = g.add1(ew.relu, [_conv(g, h, 8, 16, rng, "conv2")])
    a = _conv(g, h, 16, 16, rng, "conv3")
    d = _conv(g, h, 16, 16, rng, "down", k=1, scale=down_scale)
    h = g.add1(ew.relu, [g.add1(ew.add, [a, d])])
    g.outputs = [_conv(g, h, 16, 4, rng, "conv4")]
    return g


def _batches(rng, n=8, k=2):
    return [[rng.standard_normal((n, 2, 8, 8)).astype(np.float32)] for _ in range(k)]


def test_quantize_mixed_follows_the_plan(rng):
    g = _chain(rng)
    batches = _batches(rng)
    ig, plan = quantize_mixed(g, batches, size_budget=0.75, config=QuantConfig(integer_only=True))
    assert [la.name for la in plan.layers] == ["conv1", "conv2", "conv3", "down", "conv4"]
    assert ("conv3", "down") in plan.ties and plan.bits["conv3"] == plan.bits["down"]
    assert plan.bits["conv1"] == plan.bits["conv4"] == 8
    assert plan.meets_budget() and plan.weight_bytes <= 0.75 * plan.total("size", 8)
    assert any(b == 4 for b in plan.bits.values())
    assert plan.method == "perturbation" and all(la.sensitivity > 0 for la in plan.layers)
    assert verify_integer_only(ig) == []
    w4 = {n.inputs[1].type.dtype for n in ig.nodes if n.op is quant.conv}
    assert w4 == {DType.I4, DType.I8}
    for n in ig.nodes:
        if n.op is quant.conv and n.inputs[1].type.dtype is DType.I4:
            w = n.inputs[1].const      # ml_dtypes int4, one value per byte
            assert w.dtype == DType.I4.numpy and np.abs(w.astype(np.int8)).max() <= 7
    ref, got = interp.run(g, batches[0][0])[0], interp.run(ig, batches[0][0])[0]
    assert np.abs(ref - got).max() < 0.25 * np.abs(ref).max()
    text = str(plan)
    assert "budget" in text and "met" in text and "conv3 = down" in text


def test_perturbation_sensitivity_definition(rng):
    """Omega_i(4) is the measured output MSE with only layer i at 4 bits; Omega_i(8) scales it by
    ||Q_8(W) - W||^2 / ||Q_4(W) - W||^2."""
    g = _chain(rng)
    batches = _batches(rng)
    plan = plan_mixed(g, batches, size_budget=0.9)
    la = next(la for la in plan.layers if la.name == "conv3")
    probe = g.clone()
    n = next(n for n in probe.nodes if n.name == "conv3")
    w = n.inputs[1]
    w.const = fake_quant(w.const, 0, 4)
    errs = [np.mean((interp.run(g, b[0])[0].astype(np.float64) - interp.run(probe, b[0])[0]) ** 2)
            for b in batches]
    assert la.omega[4] == pytest.approx(np.mean(errs), rel=1e-6)
    assert la.omega[8] / la.omega[4] == pytest.approx(la.delta[8] / la.delta[4])
    assert la.sensitivity == pytest.approx(la.omega[4] / la.delta[4])


def test_an_insensitive_layer_goes_to_4_bits_first(rng):
    """'down' barely contributes to the output (weights x 1e-3): the ILP spends the budget on it."""
    g = _chain(rng, down_scale=1e-3)
    all8 = 144 + 1152 + 2304 + 256 + 576          # weight bytes at 8 bits
    plan = plan_mixed(g, _batches(rng), size_budget=(all8 - 128) / all8, ties=[])
    s = {la.name: la.omega[4] for la in plan.layers[1:-1]}
    assert min(s, key=s.get) == "down"
    assert plan.bits == {"conv1": 8, "conv2": 8, "conv3": 8, "down": 4, "conv4": 8}


def test_latency_budget_uses_the_callable(rng):
    g = _chain(rng)
    # pretend 4-bit is free for conv2 only: the latency budget can only be met by it
    lat = {"conv2": {4: 0.0, 8: 5.0}}

    def latency(layer, bits):
        return lat.get(layer.name, {4: 1.0, 8: 1.0})[bits]
    plan = plan_mixed(g, _batches(rng), latency_budget=4.001 / 9, latency=latency)
    assert plan.bits == {"conv1": 8, "conv2": 4, "conv3": 8, "down": 8, "conv4": 8}
    assert plan.total("latency") == 4.0


def test_mixed_needs_a_budget(rng):
    with pytest.raises(InvalidInput, match="needs a budget"):
        quantize_mixed(_chain(rng), _batches(rng))
    with pytest.raises(InfeasibleBudget):
        quantize_mixed(_chain(rng), _batches(rng), size_budget=0.3)


def test_compile_api_mixed(rng):
    import compiler
    from compiler.api import quantize_model
    g = _chain(rng)
    batches = _batches(rng)
    qg, report = quantize_model(g, "mixed", batches, True, size_budget=0.75)
    assert report.plan.meets_budget() and verify_integer_only(qg) == []
    assert "mixed precision plan" in str(report)
    with pytest.raises(InvalidInput, match="quantize='mixed'"):
        quantize_model(g, "int8", batches, False, size_budget=0.75)
    with pytest.raises(InvalidInput, match="quantize='mixed'"):
        compiler.compile(g, size_budget=0.75)


@requires_torch
def test_hutchinson_trace_of_a_known_hessian():
    """loss = 0.5 mean_n ||W x_n||^2: the Hessian w.r.t. W is I_out (x) (X^T X / N), so
    Tr(H) / params = sum_n ||x_n||^2 / (N * in_features)."""
    import torch

    from passes.sensitivity import hutchinson_sensitivity, match_torch_weights
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 3, bias=False))
    x = torch.randn(32, 6)
    tr = hutchinson_sensitivity(model, lambda b: 0.5 * (model(b) ** 2).sum(1).mean(), [x], probes=200)
    want = float((x ** 2).sum()) / (32 * 6)
    assert list(tr) == ["0.weight"]
    assert tr["0.weight"] == pytest.approx(want, rel=0.15)

    g = Graph()
    xin = g.add_input("x", TensorType((4, 6), F32))
    wc = g.const(model[0].weight.detach().numpy().T.copy(), "w")
    g.outputs = [g.add1(linalg.matmul, [xin, wc], name="fc")]
    from passes.mixed_precision import weight_layers
    assert match_torch_weights(model, weight_layers(g), ["fc"], tr) == {"fc": tr["0.weight"]}
