"""The kernel-level passes (fusion, layouts, tiles) keep every model's meaning: the reference interpreter
gives the same result on the final IR as on the graph before them — bit-exact for integer graphs, rel 1e-5
for float ones. Runs without TVM: no backend describes kernels, so tiles stay empty."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compiler import interp
from compiler.ops import kernel
from compiler.target import Target
from passes import PassContext, run_pipeline
from tests.conftest import requires_torch

KERNEL_PASSES = ["fuse_attention", "fuse_kernels", "assign_layouts", "fuse_gates", "choose_tiles"]
GPU_KERNEL_PASSES = ["fuse_attention", "fuse_kernels", "assign_gpu_layouts", "choose_tiles"]
LIGHT = Path(np.__file__).parents[1] / "onnx" / "backend" / "test" / "data" / "light"


def _final(g, target: str = "llvm"):
    passes = GPU_KERNEL_PASSES if target.startswith("cuda") else KERNEL_PASSES
    return run_pipeline(g, passes, PassContext(target=Target.parse(target)))


def _same(before, after, inputs, integer: bool) -> None:
    want, got = interp.run(before, *inputs), interp.run(after, *inputs)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        if integer or a.dtype.kind != "f":
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(b).max())))
    assert sum(n.op is kernel.fused for n in after.nodes) > 0


def _zoo(name):
    import torch

    from examples import zoo
    torch.manual_seed(0)
    return {
        "resnet": lambda: (zoo.randomize_batch_norm(zoo.small_resnet()), torch.randn(1, 3, 32, 32)),
        "mobilenetv2": lambda: (zoo.randomize_batch_norm(zoo.MobileNetV2()).eval(),
                                torch.randn(1, 3, 32, 32)),
        "vit": lambda: (zoo.ViT(hidden=32, heads=2, ffn=64).eval(),
                        torch.randn(1, 1, 8, 8)),
        "bert": lambda: (zoo.BertEncoder(vocab=100, hidden=64, heads=4, ffn=128, layers=2, seq=16).eval(),
                         torch.randint(0, 100, (1, 16))),
        "tinycnn": lambda: (zoo.randomize_batch_norm(zoo.TinyCNN()).eval(), torch.randn(1, 1, 8, 8)),
        "silu_cnn": lambda: (_silu_net(), torch.randn(1, 3, 16, 16)),
    }[name]()


def _silu_net():
    import torch
    from torch import nn

    class SiLUNet(nn.Module):
        """conv + SiLU (x * sigmoid(x)), a strided conv, a residual, concat and a global pool."""

        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, 2, 1)
            self.c3 = nn.Conv2d(32, 32, 1)

        def forward(self, x):
            a = nn.functional.silu(self.c1(x))
            b = nn.functional.silu(self.c2(a))
            c = nn.functional.hardswish(self.c3(b) + b)
            return torch.cat([b, c], 1).mean((2, 3))
    return SiLUNet().eval()


def _graph(tmp_path, name):
    import compiler
    from examples.zoo import export_onnx
    model, x = _zoo(name)
    path = export_onnx(model, x, tmp_path / f"{name}.onnx")
    return compiler.optimize(compiler.import_model(path)), x.numpy()


@requires_torch
@pytest.mark.parametrize("name", ["resnet", "mobilenetv2", "vit", "bert", "tinycnn", "silu_cnn"])
def test_float_models(tmp_path, name):
    g, x = _graph(tmp_path, name)
    _same(g, _final(g), [x], integer=False)


def _integer_only(g, x, target: str):
    from compiler.api import optimize_quantized, quantize_model
    rng = np.random.default_rng(0)
    if x.dtype.kind == "f":
        batches = [(x + 0.1 * rng.standard_normal(x.shape).astype(x.dtype),) for _ in range(4)]
    else:
        batches = [(rng.integers(0, 100, x.shape).astype(x.dtype),) for _ in range(4)]
    qg, _ = quantize_model(g, "int8", batches, integer_only=True)
    return optimize_quantized(qg, Target.parse(target))


@requires_torch
@pytest.mark.parametrize("target", ["llvm", "cuda -arch=sm_90"])
@pytest.mark.parametrize("name", ["resnet", "bert", "tinycnn", "silu_cnn"])
def test_integer_only_models(tmp_path, name, target):
    """... through the CPU's kernel passes and the GPU's (its int8 convs and pools on NCHW{16}c / {8}c)."""
    g, x = _graph(tmp_path, name)
    qg = _integer_only(g, x, target)
    _same(qg, _final(qg, target), [x], integer=True)


@requires_torch
def test_integer_only_detector_through_the_gpu_kernel_passes(tmp_path):
    """The reduced YOLOv8n integer-only for cuda: C2f's channel split and concat, SPPF's max pools and the
    upsampling between blocked convs."""
    import compiler
    from examples import real_arch
    path, x = real_arch.export_onnx("yolov8n_reduced", tmp_path / "yolo.onnx")
    qg = _integer_only(compiler.optimize(compiler.import_model(path)), x.numpy(), "cuda -arch=sm_90")
    final = _final(qg, "cuda -arch=sm_90")
    assert sum(n.op is kernel.fused and n.outputs[0].type.rank == 5 for n in final.nodes) > 10
    _same(qg, final, [x.numpy()], integer=True)


def test_digits_demo_model():
    import compiler
    path = Path(__file__).parents[2] / "examples" / "models" / "digits_cnn.onnx"
    g = compiler.optimize(compiler.import_model(path))
    x = np.random.default_rng(0).standard_normal(g.inputs[0].type.shape).astype(np.float32)
    _same(g, _final(g), [x], integer=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.stem for p in LIGHT.glob("light_*.onnx")) if LIGHT.exists() else [])
def test_onnx_model_zoo_light(name):
    import compiler
    g = compiler.optimize(compiler.import_model(LIGHT / f"{name}.onnx"))
    x = np.random.default_rng(0).standard_normal(g.inputs[0].type.shape).astype(np.float32)
    _same(g, _final(g), [x], integer=False)


@requires_torch
@pytest.mark.parametrize("name", ["yolov8n_reduced", "mobilenetv3_large_reduced", "efficientnet_b0_reduced",
                                  "convnext_t_reduced"])
def test_real_architectures(tmp_path, name):
    """The real-architecture suite's reduced models: SiLU/hardswish epilogues, squeeze-excite gates,
    C2f split/concat, the DFL softmax, channels-last LayerNorm."""
    import compiler
    from examples import real_arch
    path, x = real_arch.export_onnx(name, tmp_path / f"{name}.onnx")
    g = compiler.optimize(compiler.import_model(path))
    _same(g, _final(g), [x.numpy()], integer=False)
