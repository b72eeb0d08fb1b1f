"""Whole PyTorch models: the torch frontend and the ONNX path give one IR, and the compiled
executables match eager PyTorch."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import requires_ort, requires_torch, requires_tvm

pytestmark = requires_torch
torch = pytest.importorskip("torch")


def _models():
    from examples import zoo
    torch.manual_seed(0)
    return {
        "resnet18_style": (zoo.randomize_batch_norm(zoo.small_resnet()), torch.randn(1, 3, 32, 32)),
        "mobilenetv2_style": (zoo.randomize_batch_norm(zoo.MobileNetV2()), torch.randn(1, 3, 32, 32)),
        "vit": (zoo.ViT().eval(), torch.randn(1, 1, 8, 8)),
        "bert": (zoo.BertEncoder(vocab=100, hidden=64, heads=4, ffn=128, layers=2, seq=16).eval(),
                 torch.randint(0, 100, (1, 16))),
    }


NAMES = ["resnet18_style", "mobilenetv2_style", "vit", "bert"]


@requires_ort
@pytest.mark.parametrize("name", NAMES)
def test_same_ir_as_the_onnx_path(tmp_path, name):
    import compiler
    from examples.zoo import export_onnx
    model, x = _models()[name]
    via_onnx = compiler.optimize(compiler.import_model(export_onnx(model, x, tmp_path / "m.onnx")))
    via_torch = compiler.optimize(compiler.import_model(model, example_inputs=(x,)))
    assert via_torch.op_histogram() == via_onnx.op_histogram()


@requires_tvm
@pytest.mark.parametrize("name", NAMES)
def test_compiled_matches_eager(name):
    import compiler
    model, x = _models()[name]
    cm = compiler.compile(model, example_inputs=(x,), target="llvm")
    with torch.no_grad():
        want = model(x)
    (got,) = cm.run(x)
    assert isinstance(got, torch.Tensor)                  # torch in, torch out
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    (got_np,) = cm.run(x.numpy())
    assert isinstance(got_np, np.ndarray)
