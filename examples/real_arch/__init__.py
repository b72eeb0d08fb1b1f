"""A real-architecture model suite, ported to torch from the published definitions: YOLOv8n
(ultralytics), MobileNetV3-Large, EfficientNet-B0 and ConvNeXt-T (torchvision). Seeded random
weights, eval mode; `build(name)` gives the model and an example input, `export_onnx` the ONNX file.

    python -m examples.real_arch out/real_arch        # exports all four, prints their op histograms
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from examples.real_arch.common import calibrate_batch_norm
from examples.real_arch.photos import photo_batch
from examples.real_arch.convnext import convnext_tiny, randomize_convnext
from examples.real_arch.efficientnet import efficientnet_b0
from examples.real_arch.mobilenetv3 import mobilenet_v3_large
from examples.real_arch.yolov8 import SCALES, DetectionModel

# name -> (constructor, input resolution); the full-size models and the reduced ones ("_reduced":
# narrower, fewer blocks, lower resolution, same block kinds) that quick tests compile
MODELS: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "yolov8n": (lambda: DetectionModel(SCALES["n"]), 320),
    "mobilenetv3_large": (mobilenet_v3_large, 224),
    "efficientnet_b0": (efficientnet_b0, 224),
    "convnext_t": (convnext_tiny, 224),
    "yolov8n_reduced": (lambda: DetectionModel((0.33, 0.125, 1024), nc=16), 64),
    "mobilenetv3_large_reduced": (lambda: mobilenet_v3_large(0.5, [0, 2, 3, 4, 6, 7, 11, 12, 13]), 64),
    "efficientnet_b0_reduced": (lambda: efficientnet_b0(0.5, 0.5, [0, 1, 2, 5]), 64),
    "convnext_t_reduced": (lambda: convnext_tiny([(16, 32, 1), (32, 64, 1), (64, None, 2)]), 64),
}
FULL = ["yolov8n", "mobilenetv3_large", "efficientnet_b0", "convnext_t"]


def build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """(model in eval mode, example input 1x3xHxW), both seeded. The nets whose BatchNorm statistics come
    from photographs get a photograph (another crop) as their input: on Gaussian noise, far from those
    statistics, EfficientNet-B0's logits reach ~1000 and float32 round-off grows ~1000x through the net."""
    if name not in MODELS:
        raise SystemExit(f"unknown model {name}; choose from {', '.join(MODELS)}")
    ctor, size = MODELS[name]
    torch.manual_seed(seed)
    model = ctor()
    x = torch.randn((1, 3, size, size), generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        if name.startswith("convnext"):
            model = randomize_convnext(model, seed)
        else:                             # BN statistics of photographs, as a trained net would have
            model = calibrate_batch_norm(model, torch.from_numpy(photo_batch(size, 4, seed=100 + seed)), seed)
            x = torch.from_numpy(photo_batch(size, 1, seed=200 + seed))
    return model.eval(), x


def export_onnx(name: str, path: str | Path, opset: int = 17, seed: int = 0) -> tuple[Path, torch.Tensor]:
    """Build `name` and export it with torch.onnx.export (the TorchScript exporter: the dynamo
    exporter needs onnxscript, which is not installed here). Returns the path and the example input."""
    from examples.zoo import export_onnx as export
    model, x = build(name, seed)
    with torch.no_grad():
        model(x)                          # dry run, as ultralytics' exporter does: caches YOLO's anchors
    return export(model, x, path, opset=opset, input_name="images"), x


def op_histogram(path: str | Path) -> Counter:
    import onnx
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)
