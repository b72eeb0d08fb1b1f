"""A small CNN + attention model exported by torch (the legacy TorchScript exporter) imports
at several opsets, with a symbolic batch fixed by input_shapes, and matches onnxruntime."""
from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest

from compiler import interp
from frontends.onnx import load_onnx

torch = pytest.importorskip("torch")


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)
        self.ln = torch.nn.LayerNorm(10)
        self.att = torch.nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x):
        y = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        y = torch.nn.functional.interpolate(y, scale_factor=0.5, mode="bilinear")
        z = self.ln(self.fc(y.flatten(1)))
        t = y.reshape(y.shape[0], 8, 16)
        a, _ = self.att(t, t, t)
        return torch.nn.functional.gelu(z).softmax(-1), a.mean(1)


@pytest.mark.parametrize("opset", [13, 17])
def test_torch_exported_model_matches_onnxruntime(opset):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Net().eval(), (x,), buf, opset_version=opset, dynamo=False,
                          input_names=["img"], dynamic_axes={"img": {0: "batch"}})
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"img": x.numpy()})
    g = load_onnx(onnx.load_from_string(buf.getvalue()), input_shapes={"img": (2, 3, 16, 16)})
    got = interp.run(g, img=x.numpy())
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
