"""A CRNN-style OCR model (examples/crnn.py: conv stack, bidirectional 2-layer LSTM over the width,
linear classifier per column), built in PyTorch: through the torch frontend and through
torch.onnx.export (opset 17), it matches eager PyTorch and onnxruntime, in the reference
interpreter and compiled with TVM and with MLIR; for cuda both backends give PTX that ptxas assembles,
in FP32 and FP16 (an integer-only LSTM is not built: INT8 is refused naming the float LSTMs)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.conftest import has_module, requires_ort, requires_torch, requires_tvm
from tests.ptxas import assemble

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


@pytest.mark.skipif(not has_module("iree.compiler"), reason="needs iree-base-compiler")
def test_crnn_through_mlir_matches_eager():
    import compiler
    model, x = crnn()
    with torch.no_grad():
        want = model(x).numpy()
    cm = compiler.compile(compiler.import_model(model, example_inputs=(x,)), target="llvm", backend="mlir")
    assert "scf.for" in cm.executable.source("mlir")          # the recurrence is a loop, not unrolled
    np.testing.assert_allclose(cm.run(x.numpy())[0], want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("ptxas") is None, reason="needs nvcc and ptxas")
@pytest.mark.skipif(not (has_module("tvm") and has_module("iree.compiler")), reason="needs apache-tvm and iree")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("backend", ["tvm", "mlir"])
def test_crnn_gives_ptx_that_assembles(backend, precision):
    import compiler
    from compiler.diagnostics import Unsupported
    model, x = crnn()
    g = compiler.import_model(model, example_inputs=(x,))
    cm = compiler.compile(g, "cuda -arch=sm_90", backend=backend, precision=precision)
    ptx = cm.executable.source("ptx")
    assemble(ptx)
    if backend == "tvm":            # the recurrence: a kernel per direction (the two layers share them), barriers
        assert ptx.count(".entry lstm_loop") == 2 and "bar.sync" in ptx      # in its step loop
    if precision == "fp32":
        with pytest.raises(Unsupported, match="nn.lstm"):
            compiler.compile(g, "cuda -arch=sm_90", backend=backend, quantize="int8", integer_only=True,
                             calibration=[[x.numpy()]])
