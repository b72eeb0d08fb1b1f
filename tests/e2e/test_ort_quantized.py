"""An onnxruntime-quantized ResNet-style model (quantize_static: per-channel int8 weights, uint8
activations, calibrated on a few random inputs), QDQ and QOperator formats, compiled integer-only
with compile(..., quantize="model") -- the model's own scales, no calibration of ours -- agrees with
onnxruntime's INT8 output: cosine >= 0.999 and the same top-1. Not bit-exact: our dyadic
requantization rounds where onnxruntime rescales in float."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import has_module, requires_torch, requires_tvm

pytestmark = [pytest.mark.slow, requires_torch, requires_tvm,
              pytest.mark.skipif(not has_module("onnxruntime"), reason="needs onnxruntime")]


def _resnet_style():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(),
                                      nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout))
            self.skip = nn.Identity() if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride)

        def forward(self, x):
            return torch.relu(self.body(x) + self.skip(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2))
            self.blocks = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2))
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))

    torch.manual_seed(0)
    net = Net().eval()
    for m in net.modules():          # non-trivial BatchNorm statistics, folded into the convs by export
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(float path, {"qdq": path, "qop": path}, evaluation inputs)."""
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    d = tmp_path_factory.mktemp("ort_int8")
    fp32 = d / "resnet_style.onnx"
    torch.onnx.export(_resnet_style(), (torch.randn(1, 3, 32, 32),), str(fp32), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False)
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(4)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x}

    out = {}
    for fmt, qf in (("qdq", QuantFormat.QDQ), ("qop", QuantFormat.QOperator)):
        out[fmt] = d / f"resnet_style_{fmt}.onnx"
        quantize_static(str(fp32), str(out[fmt]), Reader(), quant_format=qf, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True)
    evals = [np.random.default_rng(1 + i).standard_normal((1, 3, 32, 32)).astype(np.float32) for i in range(4)]
    return fp32, out, evals


@pytest.mark.parametrize("fmt", ["qdq", "qop"])
def test_ort_quantized_model_compiles_integer_only_and_matches(models, fmt):
    import onnxruntime as ort

    import compiler
    _, paths, evals = models
    cm = compiler.compile(str(paths[fmt]), target="llvm", quantize="model", integer_only=True)
    ops = {n.op.name for n in cm.graph.walk()}
    assert "q.conv" in ops and "q.requant" in ops
    sess = ort.InferenceSession(str(paths[fmt]), providers=["CPUExecutionProvider"])
    for x in evals:
        want = sess.run(None, {"input": x})[0].ravel()
        got = cm.run(x)[0].ravel()
        cosine = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
        assert cosine >= 0.999, f"{fmt}: cosine {cosine:.5f}"
        assert got.argmax() == want.argmax()
