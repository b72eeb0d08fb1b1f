"""passes/shiftadd.py: what it rewrites (every conv / linear weight a per-channel sum of 1 or 2 signed powers of
two, attributes naming the code and the kernel, requant and bias recomputed for the new scale), that the meaning
is kept within the stated output error, that output-aware rounding beats rounding the weights, that it is an
ordinary pipeline entry; and the accuracy of the digits CNN and ViT with every conv / linear layer shift/add."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import interp
from compiler.ops import quant as q
from compiler.verify import verify
from passes.range_analysis import check_ranges
from passes.shiftadd import CODES, _error, _nearest, fit_layer, is_pow2_code, levels, output_error, shiftadd_rewrite
from tests.conftest import has_module, requires_torch
from tests.costmodel.stubs import EveryKernel1ms, ShiftPerTerm


def test_level_sets():
    one, two = levels(1), levels(2)
    assert set(one) == {0} | {s * 2**p for p in range(7) for s in (1, -1)}
    assert {127, -127, 96, 3, -5, 65, 0} <= set(two) and not {11, 13, 100} & set(two)
    assert set(one) < set(two) and two.min() == -127 and two.max() == 127
    assert is_pow2_code(np.array([[64, -3], [0, 127]]), 2) and not is_pow2_code(np.array([3]), 1)


def _layer(seed: int, rows: int = 600, fan_in: int = 48, channels: int = 12):
    """Correlated inputs (rows x fan_in) and int8 weights, as a conv's im2col would give."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 8)) @ rng.standard_normal((8, fan_in)) + 0.3 * rng.standard_normal((rows, fan_in))
    w = np.clip(np.rint(rng.standard_normal((fan_in, channels)) * 40), -127, 127)
    return x.T @ x / rows, w


@pytest.mark.parametrize("terms", [1, 2])
def test_fit_beats_rounding_the_weights(terms):
    """The fitted code has a smaller output error than the nearest power-of-two level of each weight at the
    largest weight's scale (weight-error rounding), and it is on the level set."""
    for seed in range(3):
        gram, w = _layer(seed)
        v, alpha = fit_layer(w, gram, terms)
        assert is_pow2_code(v, terms) and (alpha > 0).all()
        lv = levels(terms)
        base = np.abs(w).max(0) / lv[-1]
        naive = _error(w, _nearest(w / base, lv), base, gram).sum()
        fitted = _error(w, v.astype(float), alpha, gram).sum()
        assert fitted < 0.8 * naive, (fitted, naive)
        assert output_error(w, v, alpha, gram) < (0.03 if terms == 2 else 0.15)


def _small_model():
    import torch
    from torch import nn
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(16 * 16, 10)).eval()


def _quantized(batch: int = 8):
    import torch

    import compiler
    from passes.quantize import QuantConfig, calibration_batches
    from passes.quantize_pipeline import quantize_graph
    rng = np.random.default_rng(0)
    model = _small_model()
    g = compiler.import_model(model, example_inputs=(torch.zeros(batch, 3, 8, 8),))
    calib = calibration_batches(g, [rng.uniform(-1, 1, (4 * batch, 3, 8, 8)).astype(np.float32)])
    ig, _ = quantize_graph(g, calib, QuantConfig(activation="uint8", integer_only=True))
    return g, ig, calib, rng.uniform(-1, 1, (batch, 3, 8, 8)).astype(np.float32)


@requires_torch
@pytest.mark.parametrize("terms,layer_budget,budget", [(2, 0.03, 0.05), (1, 0.2, 0.25)])
def test_rewrite_codes_weights_and_keeps_meaning(terms, layer_budget, budget):
    """Every conv / linear weight becomes a per-channel sum of `terms` powers of two; the requants are per
    channel and recomputed; the graph verifies and cannot overflow. The stated error (randomly initialized
    layers, the hard case for powers of two): each layer's output within `layer_budget` (relative L2, on the
    calibration data) of its int8 output, the model's output within `budget` of the int8 graph's."""
    _g, ig, calib, x = _quantized()
    report: list = []
    sg = shiftadd_rewrite(ig, calib, terms, "shift", report)
    verify(sg)
    assert check_ranges(sg) == []
    layers = [n for n in sg.nodes if n.op in (q.conv, q.matmul) and n.inputs[1].is_const]
    assert len(layers) == 3 and len(report) == 3
    for n in layers:
        assert n.attrs["weight_code"] == CODES[terms] and n.attrs["realization"] == "shift"
        w = np.asarray(n.inputs[1].const)
        assert w.dtype == np.int8 and is_pow2_code(w, terms)
        assert len(n.inputs[1].type.quant.scale) == (w.shape[0] if n.op is q.conv else w.shape[1])
    old = {n.name: n for n in ig.nodes}
    rq = [n for n in sg.nodes if n.op is q.requant and n.inputs[0].producer is not None
          and n.inputs[0].producer.op is q.conv]
    assert rq and all(n.attrs["multiplier"] != old[n.name].attrs["multiplier"] for n in rq)
    assert all(r["output_error"] < layer_budget for r in report)
    want, got = interp.run(ig, x)[0], interp.run(sg, x)[0]
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < budget


@requires_torch
def test_pipeline_entry_print_disable_and_realization(capsys):
    """shiftadd is a pass of the QUANTIZE stage: --print-after and --disable-pass reach it, the compile option
    sets the realization (auto: the target's rule), and it needs quantize='int8'."""
    import compiler
    from compiler.api import final_ir, quantize_model
    from compiler.diagnostics import InvalidInput
    from compiler.pipeline import quantize_passes
    from compiler.target import Target
    from passes.shiftadd import choose_realization
    assert "shiftadd" in quantize_passes(True) and "shiftadd" in quantize_passes(False)
    g, _ig, calib, _x = _quantized()
    fg = compiler.optimize(g)
    tgt = Target("llvm", num_threads=1)
    qg, report = quantize_model(fg, "int8", calib, True, target=tgt, shiftadd=2, print_after=("shiftadd",))
    assert '// ----- IR after shiftadd -----' in capsys.readouterr().err
    layers = [n for n in qg.nodes if n.op in (q.conv, q.matmul)]
    got = {n.name: (n.attrs["weight_code"], n.attrs["realization"]) for n in layers}
    assert len(got) == len(report.shiftadd) == 3
    for r in report.shiftadd:           # auto: per layer the kernel predicted faster, both predictions reported
        assert got[r["name"]] == ("pow2x2", r["realization"])
        assert r["realization"] == ("shift" if r["shift_s"] < r["vnni_s"] else "vnni")
        assert r["realization"] == choose_realization(tgt, next(n for n in layers if n.name == r["name"]), 2)
    qg, _ = quantize_model(fg, "int8", calib, True, target=tgt, shiftadd=1, shiftadd_kernel="shift")
    assert {n.attrs["realization"] for n in qg.nodes if n.op in (q.conv, q.matmul)} == {"shift"}
    qg, report = quantize_model(fg, "int8", calib, True, target=tgt, shiftadd=2, disable_passes=("shiftadd",))
    assert {n.attrs["weight_code"] for n in qg.nodes if n.op in (q.conv, q.matmul)} == {""}
    assert report.shiftadd is None
    with pytest.raises(InvalidInput, match="shiftadd needs quantize"):
        final_ir(g, shiftadd=2)
    with pytest.raises(InvalidInput):
        quantize_model(fg, "int8", calib, True, shiftadd=3)


@requires_torch
def test_auto_takes_the_kernel_predicted_faster_per_layer():
    """realization "auto": each layer runs the kernel with the smaller prediction (stand-in models: every VNNI
    kernel 1 ms; the shift kernel 0.1 ms per term for one kind of layer, 10 ms for the other), so both
    kernels are chosen in one graph and the choice follows the predictions when they swap; the report
    carries both predictions and the choice. A CPU without VNNI takes the shift kernel whatever the
    predictions; a GPU target neither (the op as it is)."""
    from compiler.target import Target
    from costmodel import policy, shiftadd as cs
    from passes.shiftadd import choose_realization, kernel_choice
    _g, ig, calib, _x = _quantized()
    tgt = Target("llvm", mcpu="znver4", num_threads=1)
    with policy.use_model(EveryKernel1ms()):
        for fast, slow in (("conv", "matmul"), ("matmul", "conv")):
            report: list = []
            with cs.use_model(ShiftPerTerm(**{fast: 1e-4, slow: 1e-2})):
                sg = shiftadd_rewrite(ig, calib, 2, "auto", report, target=tgt)
            want = {fast: "shift", slow: "vnni"}
            layers = [n for n in sg.nodes if n.op in (q.conv, q.matmul)]
            got = {n.name: n.attrs["realization"] for n in layers}
            kinds = {n.name: "conv" if n.op is q.conv else "matmul" for n in layers}
            assert got == {name: want[kind] for name, kind in kinds.items()}
            for r in report:
                shift = (1e-4 if kinds[r["name"]] == fast else 1e-2) * 2
                assert r["vnni_s"] == pytest.approx(1e-3) and r["shift_s"] == pytest.approx(shift)
                assert r["realization"] == got[r["name"]] and r["why"].startswith("predicted")
        conv = next(n for n in ig.nodes if n.op is q.conv)
        with cs.use_model(ShiftPerTerm(conv=1.0, matmul=1.0)):
            assert choose_realization(tgt, conv, 2) == "vnni"
            no_vnni = kernel_choice(Target("llvm", mcpu="skylake", num_threads=1), conv, 2)
            assert no_vnni["realization"] == "shift" and no_vnni["shift_s"] == pytest.approx(2.0)
        with cs.use_model(None):
            c = kernel_choice(tgt, conv, 2)
            assert c["realization"] == "vnni" and c["shift_s"] is None and "no shift prediction" in c["why"]
    assert choose_realization(Target("cuda"), conv, 2) == "" and choose_realization(None, conv) == ""
    assert choose_realization(tgt) == "vnni"          # no layer: the rule for a layer nobody can price


# -- accuracy: the digits CNN and ViT of tests/e2e, every conv / linear layer shift/add -------------------------------
def _accuracies(model, x_tr, x_te, y_te, calib_n: int):
    import torch

    import compiler
    from passes.quantize import QuantConfig, calibration_batches
    from passes.quantize_pipeline import quantize_graph
    g = compiler.import_model(model, example_inputs=(torch.tensor(x_te),))
    calib = calibration_batches(g, [x_tr[:calib_n]])
    ig, stats = quantize_graph(g, calib, QuantConfig(activation="uint8", integer_only=True))

    def acc(graph):
        return float((interp.run(graph, x_te)[0].argmax(1) == y_te).mean() * 100)
    out = {"fp32": acc(stats.graph), "int8": acc(ig)}
    for terms in (2, 1):
        report: list = []
        sg = shiftadd_rewrite(ig, calib, terms, "", report)
        assert len(report) == sum(n.op in (q.conv, q.matmul) and n.inputs[1].is_const for n in ig.nodes)
        out[f"{terms}-term"] = acc(sg)
    return out


def _check(name: str, acc: dict) -> None:
    print(f"\n{name}: " + "  ".join(f"{k} {v:.2f}%" for k, v in acc.items()))
    assert acc["fp32"] - acc["2-term"] <= 1.0
    assert acc["fp32"] - acc["1-term"] <= 3.0


@pytest.mark.slow
@requires_torch
@pytest.mark.skipif(not has_module("sklearn"), reason="needs scikit-learn")
def test_digits_cnn_accuracy_shiftadd():
    import torch

    from examples.digits import load_digits_split
    from examples.digits_models import make_cnn, train
    torch.manual_seed(0)
    x_tr, y_tr, x_te, y_te = load_digits_split()
    _check("digits CNN", _accuracies(train(make_cnn(), x_tr, y_tr, 25), x_tr, x_te, y_te, len(x_tr)))


@pytest.mark.slow
@requires_torch
@pytest.mark.skipif(not has_module("sklearn"), reason="needs scikit-learn")
def test_digits_vit_accuracy_shiftadd():
    import torch

    from examples.digits import load_digits_split
    from tests.e2e.test_ivit_accuracy import _train_vit
    torch.set_num_threads(1)
    x_tr, y_tr, x_te, y_te = load_digits_split()
    _check("digits ViT", _accuracies(_train_vit(x_tr, y_tr), x_tr, x_te, y_te, 360))
