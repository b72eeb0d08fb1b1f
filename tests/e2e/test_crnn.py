"""A CRNN-style OCR model (conv stack, bidirectional 2-layer LSTM over the width, linear
classifier per column), built in PyTorch: through the torch frontend and through
torch.onnx.export (opset 17), it matches eager PyTorch and onnxruntime, in the reference
interpreter and compiled with TVM."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import requires_ort, requires_torch, requires_tvm

pytestmark = requires_torch
torch = pytest.importorskip("torch")


def crnn():
    nn = torch.nn

    class CRNN(nn.Module):
        def __init__(self, classes: int = 11, hidden: int = 32):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d((2, 1)))
            self.rnn = nn.LSTM(32 * 4, hidden, num_layers=2, bidirectional=True)
            self.fc = nn.Linear(2 * hidden, classes)

        def forward(self, x):                        # (N, 1, 16, W) -> (W/2, N, classes)
            f = self.features(x)                     # (N, 32, 4, W/2)
            n, c, h, w = f.shape
            seq = f.permute(3, 0, 1, 2).reshape(w, n, c * h)
            y, _ = self.rnn(seq)
            return self.fc(y).log_softmax(-1)

    torch.manual_seed(0)
    model = CRNN().eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return model, torch.randn(2, 1, 16, 32)


@requires_tvm
def test_crnn_torch_frontend_matches_eager():
    import compiler
    from compiler import interp
    model, x = crnn()
    with torch.no_grad():
        want = model(x).numpy()
    g = compiler.import_model(model, example_inputs=(x,))
    assert sum(n.op.name == "nn.lstm" for n in g.nodes) == 2      # one op per layer, not unrolled
    np.testing.assert_allclose(interp.run(g, x.numpy())[0], want, rtol=1e-4, atol=1e-5)
    (got,) = compiler.compile(g, target="llvm").run(x.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@requires_ort
@requires_tvm
def test_crnn_onnx_export_matches_onnxruntime(tmp_path):
    import onnxruntime as ort

    import compiler
    from compiler import interp
    model, x = crnn()
    path = tmp_path / "crnn.onnx"
    torch.onnx.export(model, (x,), str(path), opset_version=17, dynamo=False, input_names=["x"])
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(want, model(x).numpy(), rtol=1e-4, atol=1e-5)
    g = compiler.import_model(str(path))
    assert sum(n.op.name == "nn.lstm" for n in g.nodes) == 2
    np.testing.assert_allclose(interp.run(g, x.numpy())[0], want, rtol=1e-4, atol=1e-5)
    (got,) = compiler.compile(str(path), target="llvm").run(x.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
