"""A CRNN-style OCR model (examples/crnn.py: conv stack, bidirectional 2-layer LSTM over the width,
linear classifier per column), built in PyTorch: through the torch frontend and through
torch.onnx.export (opset 17), it matches eager PyTorch and onnxruntime, in the reference
interpreter and compiled with TVM."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import requires_ort, requires_torch, requires_tvm

pytestmark = requires_torch
torch = pytest.importorskip("torch")


def crnn():
    from examples.crnn import crnn as build
    return build()


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
    cm = compiler.compile(str(path), target="llvm")
    (got,) = cm.run(x.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # every step's input projection is one call of our packed-panel matmul kernel per layer and direction
    relax_text = cm.executable.source("relax")
    assert relax_text.count("call_tir(cls.matmul_") >= 4 and "R.matmul(" not in relax_text
