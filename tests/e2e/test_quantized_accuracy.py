"""Integer-only INT8 models on sklearn's 8x8 digits: train in torch (seconds), import, quantize
with calibration on training batches, run the integer graph in the reference interpreter:
the test accuracy drops by at most 0.5 points and the graph is integer-only."""
from __future__ import annotations

import importlib.util

import numpy as np

import pytest

from tests.conftest import has_module, requires_torch

pytestmark = [requires_torch, pytest.mark.skipif(not has_module("sklearn"), reason="needs scikit-learn")]


@pytest.mark.parametrize("name", ["cnn", "resnet", pytest.param("mobile", marks=pytest.mark.slow)])
def test_int8_integer_only_accuracy(name):
    import torch

    import compiler
    from compiler import interp
    from compiler.ops import quant
    from examples.digits import load_digits_split
    from examples.digits_models import trained_model
    from passes.quant_report import format_report, report
    from passes.quantize import QuantConfig, calibration_batches
    from passes.quantize_pipeline import quantize_graph
    from passes.range_analysis import check_ranges
    from passes.verify_integer_only import verify_integer_only

    x_tr, y_tr, x_te, y_te = load_digits_split()
    model = trained_model(name, x_tr, y_tr)     # examples/digits_models.py: torch seed 0
    g = compiler.import_model(model, example_inputs=(torch.tensor(x_te),))   # batch = the test set
    calib = calibration_batches(g, [x_tr])
    ig, stats = quantize_graph(g, calib, QuantConfig(activation="uint8", integer_only=True))

    assert verify_integer_only(ig) == []
    assert check_ranges(ig) == []
    ops = ig.op_histogram()
    assert ops["q.quantize"] == 1 and ops["q.dequantize"] == 1
    if name == "resnet":
        assert ops["nn.add"] >= 2      # the residual adds, in int32
    if name == "mobile":
        assert ops["q.table"] >= 4      # SiLU, hardswish, hardsigmoid, Mish: one exact lookup each
        assert ops["nn.mul"] >= 2       # the squeeze-excite gate and the layer scale, in int32

    fp32 = (interp.run(stats.graph, x_te)[0].argmax(1) == y_te).mean() * 100
    int8 = (interp.run(ig, x_te)[0].argmax(1) == y_te).mean() * 100

    # the same model at batch 8 through both code generators: whole graphs, bit-exact
    g8 = compiler.import_model(model, example_inputs=(torch.tensor(x_te[:8]),))
    ig8, _ = quantize_graph(g8, calibration_batches(g8, [x_tr[:512]]),
                            QuantConfig(activation="uint8", integer_only=True))
    want = interp.run(ig8, x_te[:8])[0]
    for backend, module in (("tvm", "tvm"), ("mlir", "iree")):
        if importlib.util.find_spec(module) is not None:
            got = compiler.compile(ig8, backend=backend).run(x_te[:8])[0]
            np.testing.assert_array_equal(got, want, err_msg=f"{backend} != interp")
    rows = report(stats.graph, ig, calib[:1])
    print(f"\n{name}: FP32 {fp32:.2f}%  INT8 {int8:.2f}%\n{format_report(rows)}")
    assert fp32 >= (93.0 if name == "mobile" else 97.0)     # the small mobile net trains to ~96%
    assert fp32 - int8 <= 0.5
    assert rows and all(r["sqnr_db"] is not None and r["sqnr_db"] > 20 for r in rows)
    assert sum(n.op is quant.requant for n in ig.nodes) >= 4
