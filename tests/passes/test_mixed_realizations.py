"""mixed_precision over realizations: the ILP chooses per layer among int8, LUT 4/2-bit and shift/add weights
under size, latency and accuracy budgets (hand-made layer lists), the per-choice perturbation is the measured
one, and a plan is compiled as planned: q.lut_matmul (packed) / power-of-two codes for exactly the planned
layers, fewer stored weight bytes than all-INT8, bit-exact with the interpreter (digits MLP, slow)."""
from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from compiler import interp
from compiler.diagnostics import InvalidInput
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import linalg, lut, quant
from compiler.types import DType, TensorType
from passes.lut import lut_weight, packed_bytes
from passes.mixed_precision import (
    REALIZATIONS,
    InfeasibleBudget,
    Layer,
    plan_mixed,
    proportional_latency,
    realized_weight,
    solve_bits,
    total_cost,
    weight_layers,
)
from passes.sensitivity import output_perturbations
from passes.quantize import QuantConfig, quantize_array, weight_spec
from passes.quantize_pipeline import quantize_mixed
from tests.conftest import has_module, requires_torch
from tests.costmodel.stubs import EveryKernel1ms, ShiftPerTerm

F32 = DType.F32


def _mm(name, k, n, omega, macs=None, pow2_kernel=""):
    """A linear layer (K, N) whose choices are the keys of `omega` (8 first)."""
    return Layer(name, k * n, k * n if macs is None else macs, omega=dict(omega), choices=tuple(omega),
                 kernel={"kind": "matmul", "w_shape": (k, n)}, pow2_kernel=pow2_kernel)


def _net(mid_omega):
    """first / two 256x256 middle layers / last; first and last only int8."""
    return [_mm("first", 64, 256, {8: 0.1}), _mm("a", 256, 256, mid_omega[0]),
            _mm("b", 256, 256, mid_omega[1]), _mm("last", 256, 10, {8: 0.1})]


OMEGA = [{8: 0.01, "lut4": 1.0, "lut2": 9.0}, {8: 0.01, "lut4": 2.0, "lut2": 5.0}]


# -- (a) the ILP: LUT where the size budget demands it ---------------------------------------
def test_mixed_realizations_lut_only_when_the_size_budget_demands_it():
    layers = _net(OMEGA)
    all8 = total_cost(layers, dict.fromkeys(("first", "a", "b", "last"), 8), "size")
    assert all8 == 64 * 256 + 2 * 256 * 256 + 2560
    # the LUT size is what the artifact stores: planes + int16 group scales + uint8 zeros
    assert layers[1].cost("size", "lut4") == packed_bytes(256, 256, 4) == 256 * 256 // 2 + 2 * 256 * 3
    assert layers[1].cost("size", "lut2") == 256 * 256 // 4 + 2 * 256 * 3
    assert solve_bits(layers, all8, "size") == {"first": 8, "a": 8, "b": 8, "last": 8}
    # saving one layer's lut4 bytes: the less sensitive one ("a") goes to 4-bit LUT
    one = all8 - (65536 - packed_bytes(256, 256, 4))
    assert solve_bits(layers, one, "size") == {"first": 8, "a": "lut4", "b": 8, "last": 8}
    # more than both at lut4 save: one layer at lut2, the perturbation's choice (a lut4, b lut2: 1 + 5 < 9 + 2)
    two = all8 - 2 * (65536 - packed_bytes(256, 256, 4)) - 1
    assert solve_bits(layers, two, "size") == {"first": 8, "a": "lut4", "b": "lut2", "last": 8}
    with pytest.raises(InfeasibleBudget, match="size budget"):
        solve_bits(layers, 0.3 * all8, "size")


def test_mixed_realizations_latency_budget_takes_the_faster_lut():
    layers = _net(OMEGA)
    for la in layers:
        la.latency = {c: la.macs * {8: 1.0, "lut4": 0.5, "lut2": 0.25}[c] for c in la.choices}
    all8 = sum(la.latency[8] for la in layers)
    assert solve_bits(layers, {"latency": 0.6 * all8}) == {"first": 8, "a": "lut4", "b": "lut4", "last": 8}
    assert solve_bits(layers, {"latency": 0.8 * all8}) == {"first": 8, "a": "lut4", "b": 8, "last": 8}


def test_mixed_realizations_ties_share_the_realization():
    layers = _net(OMEGA)
    one = total_cost(layers, dict.fromkeys(("first", "a", "b", "last"), 8), "size") - 40000
    tied = solve_bits(layers, one, "size", ties=[("a", "b")])
    assert tied["a"] == tied["b"] == "lut4"


# -- (b) the accuracy budget -------------------------------------------------------------------
def test_mixed_realizations_accuracy_budget_excludes_a_choice_over_it():
    """With an accuracy budget the ILP removes as many multiplies as the budget lets it; a choice whose
    measured perturbation is over the budget is never taken."""
    layers = [_mm("first", 16, 16, {8: 0.0}), _mm("a", 64, 64, {8: 0.01, "lut2": 0.3}, macs=100),
              _mm("b", 64, 64, {8: 0.01, "lut2": 0.5}, macs=1000), _mm("last", 16, 16, {8: 0.0})]
    assert solve_bits(layers, {"accuracy": 1.0}) == {"first": 8, "a": "lut2", "b": "lut2", "last": 8}
    # room for one: the one that removes more multiplies
    assert solve_bits(layers, {"accuracy": 0.6})["b"] == "lut2"
    # b's lut2 (0.5) is over the budget: excluded, a (0.3) takes the place
    assert solve_bits(layers, {"accuracy": 0.45}) == {"first": 8, "a": "lut2", "b": 8, "last": 8}
    assert solve_bits(layers, {"accuracy": 0.1}) == dict.fromkeys(("first", "a", "b", "last"), 8)
    # without an accuracy budget the objective is the perturbation: all int8
    assert solve_bits(layers, {"size": 1e9}) == dict.fromkeys(("first", "a", "b", "last"), 8)
    with pytest.raises(InfeasibleBudget, match="accuracy budget 0.01 is below the smallest reachable"):
        solve_bits(layers, {"accuracy": 0.01})


def test_mixed_realizations_accuracy_budget_with_size_budget():
    """The size budget needs a lut2 layer; the accuracy budget leaves it only the layer whose lut2 fits."""
    layers = _net(OMEGA)
    all8 = total_cost(layers, dict.fromkeys(("first", "a", "b", "last"), 8), "size")
    two = all8 - 2 * (65536 - packed_bytes(256, 256, 4)) - 1
    assert solve_bits(layers, {"size": two, "accuracy": 10.0}) == {"first": 8, "a": "lut4", "b": "lut2",
                                                                    "last": 8}
    with pytest.raises(InfeasibleBudget, match="size and accuracy budgets cannot be met together"):
        solve_bits(layers, {"size": two, "accuracy": 5.5})


def test_mixed_realizations_shift_add_is_multiplication_free_on_the_shift_kernel_only():
    om = {8: 0.01, "lut4": 1.0, "pow2x2": 0.05}
    def net(kernel):
        return [_mm("first", 16, 16, {8: 0.0}), _mm("a", 64, 64, om, pow2_kernel=kernel),
                _mm("last", 16, 16, {8: 0.0})]
    assert solve_bits(net("shift"), {"accuracy": 2.0})["a"] == "pow2x2"   # no multiply, less perturbation
    assert solve_bits(net("vnni"), {"accuracy": 2.0})["a"] == "lut4"      # VNNI multiplies the pow2 codes


# -- measured perturbations on a float graph ---------------------------------------------------------
def _mlp(rng, dims=(64, 256, 256, 256, 10), batch=8):
    g = Graph()
    h = g.add_input("x", TensorType((batch, dims[0]), F32))
    for i, (k, n) in enumerate(pairwise(dims)):
        w = g.const(rng.normal(0, 1 / np.sqrt(k), (k, n)).astype(np.float32), f"fc{i}_w")
        h = g.add1(linalg.matmul, [h, w], name=f"fc{i}")
        b = g.const(rng.normal(0, 0.1, n).astype(np.float32), f"fc{i}_b")
        h = g.add1(ew.add, [h, b], name=f"fc{i}_b")
        if n != dims[-1]:
            h = g.add1(ew.relu, [h])
    g.outputs = [h]
    return g


def _batches(rng, k=4, batch=8):
    return [[rng.standard_normal((batch, 64)).astype(np.float32)] for _ in range(k)]


def _layer_input(g, batches, n):
    from passes.shiftadd import layer_inputs
    return layer_inputs(g, batches, [n])[id(n)]


def test_mixed_realizations_perturbation_is_measured_per_choice(rng):
    g = _mlp(rng)
    batches = _batches(rng)
    plan = plan_mixed(g, batches, size_budget=0.8, realizations=REALIZATIONS, latency=proportional_latency,
                      pow2_kernel="shift")
    la = plan.layers[1]
    assert la.choices == (8, "lut4", "lut2", "pow2x2", "pow2x1")   # a linear layer: packed LUT instead of int4
    assert plan_mixed(g, batches, size_budget=0.8, realizations=REALIZATIONS, latency=proportional_latency,
                      pow2_kernel="vnni").layers[1].choices == (8, "lut4", "lut2")    # int8 dominates pow2x2
    n = weight_layers(g)[1]
    w = n.inputs[1].const
    spec = weight_spec(w, 1, 8)
    want = lut_weight(quantize_array(w, spec).astype(np.int64), 4) * np.asarray(spec.scale)
    np.testing.assert_allclose(realized_weight(n, "lut4"), want, rtol=1e-6)
    for choice in ("lut4", "lut2", "pow2x2"):
        w = realized_weight(n, choice, _layer_input(g, batches, n))
        d = output_perturbations(g, batches, [(n, w)])[0]
        assert la.omega[choice] == pytest.approx(d, rel=1e-6), choice
    assert la.omega[8] < la.omega["pow2x2"] < la.omega["lut4"] < la.omega["lut2"]
    assert plan.output_power > 0 and "accuracy" in str(plan)


def test_mixed_realizations_lut_latency_is_proportional_to_the_int8_prediction(rng):
    """The cost model has no LUT kernel: a LUT layer's latency is its int8 latency (the cost model's
    prediction, or the proportional placeholder without a model) times b / 8; a shift/add layer on the
    shift kernel the measured shift-kernel model's prediction (costmodel/shiftadd.py); the plan says which."""
    from costmodel import shiftadd as cs
    plan = plan_mixed(_mlp(rng), _batches(rng, k=1), size_budget=0.8, realizations=REALIZATIONS,
                      pow2_kernel="shift")
    la = plan.layers[1]
    assert la.latency["lut4"] == pytest.approx(0.5 * la.latency[8])
    assert la.latency["lut2"] == pytest.approx(0.25 * la.latency[8])
    if plan.latency_source.startswith("proportional placeholder"):
        assert la.latency["pow2x2"] == pytest.approx(2 * la.latency[8])      # a pass per term
    else:
        assert "lut4: 0.5 x the int8 prediction (no LUT kernel" in plan.latency_source
        assert "pow2x2: the shift kernel's measured model" in plan.latency_source
        k = la.kernel
        assert la.latency["pow2x2"] == pytest.approx(cs.predict_layer_latency(k["kind"], k["x_shape"],
                                                                              k["w_shape"], 2)[0])
    assert f"latency: {plan.latency_source}" in str(plan)


def test_mixed_realizations_shift_kernel_latency_from_the_shift_model():
    """pow2x<t> on the shift kernel costs what the shift-kernel model predicts (a stand-in model here); without
    one, t x the int8 prediction, and the source says so; on the VNNI kernel, the int8 prediction."""
    from costmodel import policy, shiftadd as cs
    from passes.mixed_precision import measure_costs

    def layers(kernel):
        return [Layer("a", 64 * 64, 4 * 64 * 64, choices=(8, 4, "pow2x2"), pow2_kernel=kernel,
                      kernel={"kind": "matmul", "x_shape": (4, 64), "w_shape": (64, 64)})]
    with policy.use_model(EveryKernel1ms()):
        with cs.use_model(ShiftPerTerm(matmul=3e-4)):
            la = layers("shift")
            src = measure_costs(la)
            assert la[0].latency[8] == pytest.approx(1e-3) and la[0].latency["pow2x2"] == pytest.approx(6e-4)
            assert "pow2x2: the shift kernel's measured model" in src
            la = layers("vnni")
            measure_costs(la)
            assert la[0].latency["pow2x2"] == pytest.approx(1e-3)
        with cs.use_model(None):
            la = layers("shift")
            src = measure_costs(la)
            assert la[0].latency["pow2x2"] == pytest.approx(2e-3) and "no shift-kernel prediction" in src


def test_mixed_realizations_accuracy_budget_on_measured_perturbations(rng):
    g = _mlp(rng)
    batches = _batches(rng)
    kw = {"realizations": ("lut4", "lut2"), "latency": proportional_latency}
    free = plan_mixed(g, batches, accuracy_budget=1.0, **kw)
    assert free.minimized == "multiplies"
    assert all(free.bits[la.name] == "lut4" for la in free.layers[1:-1])    # no multiply, least perturbation
    # room for one LUT layer over all-INT8: exactly one middle layer, one whose perturbation fits
    base = free.total("accuracy", 8)
    extra = {la.name: la.omega["lut4"] - la.omega[8] for la in free.layers[1:-1]}
    room = 1.01 * min(extra.values())
    one = plan_mixed(g, batches, accuracy_budget=(base + room) / free.output_power, **kw)
    chosen = [name for name, c in one.bits.items() if c != 8]
    assert len(chosen) == 1 and extra[chosen[0]] <= room and one.bits[chosen[0]] == "lut4"
    assert one.total("accuracy") <= one.budgets["accuracy"]
    # a size budget that needs a 2-bit layer, and an accuracy budget under every layer's lut2 perturbation
    lut2 = min(la.omega["lut2"] for la in free.layers[1:-1])
    with pytest.raises(InfeasibleBudget, match="size and accuracy budgets cannot be met together"):
        plan_mixed(g, batches, size_budget=0.5, accuracy_budget=0.9 * lut2 / free.output_power, **kw)
    sized = plan_mixed(g, batches, size_budget=0.5, accuracy_budget=1.0, **kw)
    assert "lut2" in sized.bits.values()
    with pytest.raises(InfeasibleBudget, match="accuracy budget"):
        plan_mixed(g, batches, accuracy_budget=1e-9, **kw)
    with pytest.raises(InvalidInput, match="Hessian"):
        plan_mixed(g, batches, accuracy_budget=0.1, sensitivity={})


def test_mixed_realizations_quantize_mixed_rewrites_the_planned_layers(rng):
    g = _mlp(rng)
    batches = _batches(rng)
    ig, plan = quantize_mixed(g, batches, size_budget=0.7, realizations=REALIZATIONS,
                              config=QuantConfig(integer_only=True), latency=proportional_latency)
    assert plan.bits == {"fc0": 8, "fc1": "lut4", "fc2": "lut4", "fc3": 8}      # one lut4 saves 0.21
    luts = {n.name.removesuffix("_acc"): f"lut{n.attrs['bits']}" for n in ig.nodes if n.op is lut.lut_matmul}
    assert luts == {"fc1": "lut4", "fc2": "lut4"}
    assert sum(n.op is quant.matmul for n in ig.nodes) == 2
    assert plan.weight_bytes <= 0.7 * plan.total("size", 8)
    # the realized output error is what the plan's perturbation predicts (sum Omega / P, as a relative RMS;
    # measured 0.123 against 0.126 predicted: the weights' error dominates the activations')
    err = np.mean([np.mean((interp.run(g, b[0])[0] - interp.run(ig, b[0])[0]) ** 2) for b in batches])
    predicted = np.sqrt(plan.total("accuracy") / plan.output_power)
    assert np.sqrt(err / plan.output_power) < 1.25 * predicted


def test_mixed_realizations_api_refuses_global_lut_with_mixed(rng):
    from compiler.api import quantize_model
    with pytest.raises(InvalidInput, match="chooses LUT and shift/add weights per layer"):
        quantize_model(_mlp(rng), "mixed", _batches(rng), False, size_budget=0.8, lut=4)
    with pytest.raises(InvalidInput, match="accuracy_budget need quantize='mixed'"):
        quantize_model(_mlp(rng), "int8", _batches(rng), False, accuracy_budget=0.01)


# -- (c) end to end: the digits MLP -------------------------------------------------------------------
def _e2e(test):
    """slow; needs torch, scikit-learn (the digits) and apache-tvm."""
    have = has_module("sklearn") and has_module("tvm")
    for mark in (pytest.mark.slow, requires_torch, pytest.mark.skipif(not have, reason="needs sklearn, tvm")):
        test = mark(test)
    return test


@pytest.fixture(scope="module")
def digits_mlp():
    """The trained MLP 64-256-256-256-10, the digits test split, compile keywords (batch 8), the FP32
    accuracy and the all-INT8 build."""
    import torch
    from torch import nn

    import compiler
    from examples.digits import load_digits_split
    from examples.digits_models import train
    torch.manual_seed(0)
    x_tr, y_tr, x_te, y_te = load_digits_split()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        layers = [nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                  nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)]
        model = train(nn.Sequential(*layers), x_tr, y_tr, 10)
    finally:
        torch.set_num_threads(threads)
    kw = {"example_inputs": (torch.tensor(x_te[:8]),), "integer_only": True,
          "calibration": [x_tr[i:i + 8] for i in range(0, 512, 8)]}
    fp32 = float((model(torch.tensor(x_te)).argmax(1).numpy() == y_te).mean() * 100)
    return model, kw, (x_te, y_te), fp32, compiler.compile(model, quantize="int8", **kw)


def _stored_weight_bytes(g: Graph) -> int:
    """Bytes of the constants the final IR (the artifact's graph) holds."""
    consts = {id(v): v for n in g.walk() for v in n.inputs if v.is_const}
    return sum(v.const.nbytes for v in consts.values())


def _accuracy(cm, x, y, batch=8):
    n = len(x) // batch * batch
    pred = np.concatenate([cm.run(x[i:i + batch])[0].argmax(1) for i in range(0, n, batch)])
    return float((pred == y[:n]).mean() * 100)


def _exact(cm, x, n=64):
    for i in range(0, n, 8):
        np.testing.assert_array_equal(cm.run(x[i:i + 8])[0], interp.run(cm.graph, x[i:i + 8])[0])


@pytest.mark.parametrize("budgets", [{"size_budget": 0.8}, {"size_budget": 0.5, "accuracy_budget": 0.02}])
@_e2e
def test_mixed_realizations_digits_mlp_compiles_the_plan(digits_mlp, budgets):
    """A size budget that forces LUT layers: the compiled graph has q.lut_matmul for exactly the planned
    layers, stores fewer weight bytes than the all-INT8 build (by the plan's saving), runs bit-exact with the
    interpreter, and keeps the test accuracy within 1.5 points of FP32 and of all-INT8."""
    import compiler
    model, kw, (x_te, y_te), fp32, int8 = digits_mlp
    cm = compiler.compile(model, quantize="mixed", **kw, **budgets)
    plan = cm.report.plan
    assert plan.meets_budget()
    planned = {name: c for name, c in plan.bits.items() if c != 8}
    assert planned and all(str(c).startswith("lut") for c in planned.values())
    got = {n.name.removesuffix("_acc"): f"lut{n.attrs['bits']}"
           for n in cm.graph.walk() if n.op is lut.lut_matmul}
    assert got == planned
    saved = plan.total("size", 8) - plan.total("size")
    assert _stored_weight_bytes(cm.graph) == _stored_weight_bytes(int8.graph) - saved
    _exact(cm, x_te)
    acc8, acc = _accuracy(int8, x_te, y_te), _accuracy(cm, x_te, y_te)
    print(f"\n{plan}\nFP32 {fp32:.2f}%  INT8 {acc8:.2f}%  mixed {acc:.2f}%  stored weights "
          f"{_stored_weight_bytes(int8.graph)} -> {_stored_weight_bytes(cm.graph)} B")
    assert fp32 - acc <= 1.5 and acc8 - acc <= 1.5


@_e2e
def test_mixed_realizations_digits_mlp_shift_add_layers(digits_mlp):
    """An accuracy budget with the shift kernel: the multiplication-free choice of least perturbation is
    2-term shift/add; those layers carry the power-of-two codes and the shift realization, bit-exact."""
    import compiler
    model, kw, (x_te, y_te), fp32, _ = digits_mlp
    cm = compiler.compile(model, quantize="mixed", accuracy_budget=0.02, shiftadd_kernel="shift", **kw)
    plan = cm.report.plan
    planned = {name for name, c in plan.bits.items() if c == "pow2x2"}
    assert planned == {la.name for la in plan.layers[1:-1]}
    got = {n.name.removesuffix("_acc") for n in cm.graph.walk() if n.op is quant.matmul
           and n.attrs["weight_code"] == "pow2x2" and n.attrs["realization"] == "shift"}
    assert got == planned
    assert plan.total("multiplies") < plan.total("multiplies", 8)
    _exact(cm, x_te, 32)
    acc = _accuracy(cm, x_te, y_te)
    print(f"\n{plan}\nFP32 {fp32:.2f}%  mixed (shift/add) {acc:.2f}%")
    assert fp32 - acc <= 1.5


# -- the command line ---------------------------------------------------------------------------------
def _onnx_mlp(path, rng, dims=(16, 32, 32, 4)):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits, h = [], [], "x"
    for i, (k, n) in enumerate(pairwise(dims)):
        w = rng.normal(0, 1 / np.sqrt(k), (k, n)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [h, f"w{i}"], [f"h{i}"], name=f"fc{i}"))
        h = f"h{i}"
    io = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, dims[0]]),
          helper.make_tensor_value_info(h, TensorProto.FLOAT, [2, dims[-1]])]
    g = helper.make_graph(nodes, "g", io[:1], io[1:], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.slow
def test_mixed_realizations_cli_accuracy_budget(tmp_path):
    """--accuracy-budget: needs --quantize mixed; a budget no plan meets exits 2 naming the budget; a loose
    one makes the middle layer a LUT layer."""
    from tests.test_cli import run_cli
    rng = np.random.default_rng(0)
    model = _onnx_mlp(tmp_path / "mlp.onnx", rng)
    np.savez(tmp_path / "c.npz", x=rng.standard_normal((8, 2, 16)).astype(np.float32))
    mixed = [model, "--quantize", "mixed", "--calibration", tmp_path / "c.npz", "--emit", "ir"]
    r = run_cli(model, "--accuracy-budget", "0.01", "--emit", "ir")
    assert r.returncode == 2 and "--accuracy-budget need --quantize mixed" in r.stderr
    r = run_cli(*mixed, "--accuracy-budget", "1e-12")
    assert r.returncode == 2, r.stderr
    assert "accuracy budget" in r.stderr and "smallest reachable accuracy" in r.stderr
    r = run_cli(*mixed, "--accuracy-budget", "0.5")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count('"q.lut_matmul"') == 1
