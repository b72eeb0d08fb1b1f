"""Integer-only INT8 models on sklearn's 8x8 digits: train in torch (seconds), import, quantize
with calibration on training batches, run the integer graph in the reference interpreter:
the test accuracy drops by at most 0.5 points and the graph is integer-only."""
from __future__ import annotations

import importlib.util

import numpy as np

import pytest

from tests.conftest import has_module, requires_torch

pytestmark = [requires_torch, pytest.mark.skipif(not has_module("sklearn"), reason="needs scikit-learn")]


def _cnn():
    from torch import nn

    class DigitsCNN(nn.Module):
        """examples.zoo.TinyCNN without the final softmax: it ends in the logits."""

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            return self.head(self.features(x).mean((2, 3)))

    return DigitsCNN()


def _resnet():
    from torch import nn

    from examples.zoo import BasicBlock

    class DigitsResNet(nn.Module):
        """Stem + two BasicBlocks (identity and 1x1-downsample shortcuts: residual adds)."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 12, 3, 1, 1, bias=False), nn.BatchNorm2d(12), nn.ReLU())
            self.blocks = nn.Sequential(BasicBlock(12, 12, 1), BasicBlock(12, 24, 2))
            self.head = nn.Linear(24, 10)

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)).mean((2, 3)))

    return DigitsResNet()


def _mobile():
    from torch import nn

    class SqueezeExcite(nn.Module):
        def __init__(self, c: int, r: int = 4):
            super().__init__()
            self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c // r, 1), nn.ReLU(),
                                    nn.Conv2d(c // r, c, 1), nn.Hardsigmoid())

        def forward(self, x):
            return x * self.fc(x)

    class DigitsMobile(nn.Module):
        """The activations and gates of mobile nets and detectors: SiLU, hardswish, a depthwise conv,
        squeeze-excite (x * gate), a layer-scale constant, a nearest upsample concatenated with a skip,
        a scalar division."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.SiLU())
            self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1, groups=16), nn.BatchNorm2d(16), nn.Hardswish())
            self.se = SqueezeExcite(16)
            self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, 16).reshape(16, 1, 1))
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.mix = nn.Sequential(nn.Conv2d(32, 24, 1), nn.Mish())
            self.head = nn.Linear(24, 10)

        def forward(self, x):
            s = self.stem(x)
            y = self.gamma * self.se(self.dw(s))
            y = self.mix(torch.cat([self.up(y), s], 1)) / 2
            return self.head(y.mean((2, 3)))

    import torch
    return DigitsMobile()


def _train(model, x, y, epochs: int):
    import torch
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


@pytest.mark.parametrize("name,build,epochs", [("cnn", _cnn, 25), ("resnet", _resnet, 12), pytest.param("mobile", _mobile, 40, marks=pytest.mark.slow)])
def test_int8_integer_only_accuracy(name, build, epochs):
    import torch

    import compiler
    from compiler import interp
    from compiler.ops import quant
    from examples.digits import load_digits_split
    from passes.quant_report import format_report, report
    from passes.quantize import QuantConfig, calibration_batches
    from passes.quantize_pipeline import quantize_graph
    from passes.range_analysis import check_ranges
    from passes.verify_integer_only import verify_integer_only

    torch.manual_seed(0)
    x_tr, y_tr, x_te, y_te = load_digits_split()
    model = _train(build(), x_tr, y_tr, epochs)
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
