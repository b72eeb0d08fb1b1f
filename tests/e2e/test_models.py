"""Whole models exported from PyTorch at test time: onnxruntime == interp == TVM executable."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import requires_ort, requires_torch

pytestmark = [requires_torch, requires_ort]


def _export(tmp_path, model, example, name):
    from examples.zoo import export_onnx
    return export_onnx(model, example, tmp_path / f"{name}.onnx")


def _ort(path, x):
    import onnxruntime as ort
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})


def _models():
    import torch

    from examples import zoo
    torch.manual_seed(0)
    return {
        "resnet": (zoo.randomize_batch_norm(zoo.small_resnet()), torch.randn(1, 3, 32, 32)),
        "bert": (zoo.BertEncoder(vocab=100, hidden=64, heads=4, ffn=128, layers=2, seq=16).eval(),
                 torch.randint(0, 100, (1, 16))),
    }


@pytest.mark.parametrize("name", ["resnet", "bert"])
def test_interp_matches_onnxruntime_and_torch(tmp_path, name):
    import torch

    import compiler
    from compiler import interp
    model, x = _models()[name]
    path = _export(tmp_path, model, x, name)
    g = compiler.import_model(path)
    xn = x.numpy()
    ref = _ort(path, xn)[0]
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(interp.run(g, xn)[0], ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(interp.run(compiler.optimize(g), xn)[0], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["tvm", "mlir"])
@pytest.mark.parametrize("name", ["resnet", "bert"])
def test_executable_matches_interp(tmp_path, name, backend):
    import importlib.util

    import compiler
    from compiler import interp
    if importlib.util.find_spec({"tvm": "tvm", "mlir": "iree"}[backend]) is None:
        pytest.skip(f"{backend} is not installed")
    model, x = _models()[name]
    path = _export(tmp_path, model, x, name)
    cm = compiler.compile(path, target="llvm", backend=backend)
    xn = x.numpy()
    want = interp.run(cm.graph, xn)[0]
    np.testing.assert_allclose(cm.run(xn)[0], want, rtol=1e-4, atol=1e-5)
    cm2 = compiler.load(cm.save(tmp_path / f"{name}.dyc"))
    np.testing.assert_array_equal(cm2.run(xn)[0], cm.run(xn)[0])


def test_an_exported_model_appears_whole(tmp_path, monkeypatch):
    """examples.zoo.export_onnx writes beside the destination and renames: while the exporter writes, the destination
    does not exist (a test in another process exporting the same cached model would have read half a file), and
    afterwards it holds the whole model and nothing is left beside it."""
    import onnx
    import torch
    from examples import zoo
    dest = tmp_path / "m.onnx"
    real = torch.onnx.export

    def exporter(*args, **kw):
        assert not dest.exists() and args[2] != str(dest)
        return real(*args, **kw)
    monkeypatch.setattr(torch.onnx, "export", exporter)
    zoo.export_onnx(torch.nn.Linear(4, 2), torch.zeros(1, 4), dest)
    onnx.checker.check_model(onnx.load(str(dest)))
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
