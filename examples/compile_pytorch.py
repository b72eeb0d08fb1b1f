"""Compile PyTorch modules directly (torch.export, no ONNX file) and compare with eager PyTorch.

    python examples/compile_pytorch.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler  # noqa: E402
from examples import zoo  # noqa: E402


def eager_ms(model: torch.nn.Module, x: torch.Tensor, repeat: int = 20) -> float:
    with torch.no_grad():
        model(x)
        t0 = time.perf_counter()
        for _ in range(repeat):
            model(x)
    return (time.perf_counter() - t0) / repeat * 1e3


def main() -> None:
    torch.manual_seed(0)
    models = {
        "ResNet-18-style (CIFAR)": (zoo.randomize_batch_norm(zoo.small_resnet()), torch.randn(1, 3, 32, 32)),
        "MobileNetV2-style": (zoo.randomize_batch_norm(zoo.MobileNetV2()), torch.randn(1, 3, 32, 32)),
        "ViT (8x8 digits)": (zoo.ViT().eval(), torch.randn(1, 1, 8, 8)),
        "BERT-style encoder": (zoo.BertEncoder(layers=2).eval(), torch.randint(0, 1000, (1, 128))),
    }
    print(f"{'model':26} {'IR ops':>7} {'max |diff|':>11} {'eager ms':>9} {'compiled ms':>12}")
    for name, (model, x) in models.items():
        cm = compiler.compile(model, example_inputs=(x,), target="llvm")
        with torch.no_grad():
            want = model(x).numpy()
        got = cm.run(x)[0].numpy()                    # torch in -> torch out
        ms = cm.benchmark(x.numpy(), warmup=3, repeat=20)["median_ms"]
        print(f"{name:26} {len(cm.graph.nodes):>7} {np.max(np.abs(got - want)):>11.1e} "
              f"{eager_ms(model, x):>9.2f} {ms:>12.2f}")


if __name__ == "__main__":
    main()
