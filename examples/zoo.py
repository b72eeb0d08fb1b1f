"""Small model definitions the examples, tests and benchmarks build themselves (no downloads):
ResNet-style CNNs (ResNet-50 sized on request) and a BERT-style encoder, plus ONNX export."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return torch.relu(self.body(x) + self.short(x))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return torch.relu(self.body(x) + self.short(x))


class ResNet(nn.Module):
    """ResNet v1.5. `resnet50()` is the ImageNet ResNet-50; `small_resnet()` a CIFAR-sized one."""

    def __init__(self, depths, widths, bottleneck: bool, num_classes: int, stem_channels: int,
                 imagenet_stem: bool):
        super().__init__()
        if imagenet_stem:
            self.stem = nn.Sequential(nn.Conv2d(3, stem_channels, 7, 2, 3, bias=False),
                                      nn.BatchNorm2d(stem_channels), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, stem_channels, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(stem_channels), nn.ReLU())
        blocks, cin = [], stem_channels
        for i, (d, w) in enumerate(zip(depths, widths)):
            for j in range(d):
                stride = 2 if j == 0 and i > 0 else 1
                if bottleneck:
                    blocks.append(Bottleneck(cin, w, stride))
                    cin = w * 4
                else:
                    blocks.append(BasicBlock(cin, w, stride))
                    cin = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def resnet50(num_classes: int = 1000) -> ResNet:
    return ResNet([3, 4, 6, 3], [64, 128, 256, 512], True, num_classes, 64, True)


def small_resnet(num_classes: int = 10) -> ResNet:
    return ResNet([1, 1, 1], [16, 32, 64], False, num_classes, 16, False)


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads, self.dh = heads, hidden // heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x):
        b, s, h = x.shape
        q, k, v = self.qkv(x).reshape(b, s, 3, self.heads, self.dh).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dh), dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(b, s, h))


class EncoderLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int):
        super().__init__()
        self.att = SelfAttention(hidden, heads)
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Linear(ffn, hidden))

    def forward(self, x):
        x = self.ln1(x + self.att(x))
        return self.ln2(x + self.ffn(x))


class BertEncoder(nn.Module):
    """Token + position embeddings, LayerNorm, `layers` post-norm encoder layers, tanh pooler."""

    def __init__(self, vocab: int = 1000, hidden: int = 384, heads: int = 6, ffn: int = 1536,
                 layers: int = 6, seq: int = 128):
        super().__init__()
        self.tok = nn.Embedding(vocab, hidden)
        self.pos = nn.Parameter(torch.randn(1, seq, hidden) * 0.02)
        self.ln = nn.LayerNorm(hidden)
        self.layers = nn.Sequential(*[EncoderLayer(hidden, heads, ffn) for _ in range(layers)])
        self.pool = nn.Linear(hidden, hidden)

    def forward(self, ids):
        x = self.layers(self.ln(self.tok(ids) + self.pos))
        return torch.tanh(self.pool(x[:, 0]))


def seeded_encoder(hidden: int, heads: int, ffn: int, layers: int, seq: int, batch: int = 1, vocab: int = 100,
                   seed: int = 0) -> tuple[BertEncoder, np.ndarray, list[np.ndarray]]:
    """(a BertEncoder with torch seeded by `seed`, token ids (batch, seq), two calibration batches of ids), the
    ids from numpy's default_rng(seed): the calibration batches first, then the input."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = BertEncoder(vocab=vocab, hidden=hidden, heads=heads, ffn=ffn, layers=layers, seq=seq).eval()
    calib = [rng.integers(0, vocab, (batch, seq)) for _ in range(2)]
    return model, rng.integers(0, vocab, (batch, seq)), calib


class TinyCNN(nn.Module):
    """The demo model: 8x8 grayscale digits -> 10 class probabilities (logits if logits=True)."""

    def __init__(self, logits: bool = False):
        super().__init__()
        self.logits = logits
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        y = self.head(torch.flatten(self.features(x), 1))
        return y if self.logits else torch.softmax(y, dim=-1)


def randomize_batch_norm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial statistics, so folding them is really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return model.eval()


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, opset: int = 17,
                input_name: str = "input") -> Path:
    """torch.onnx.export with the TorchScript exporter (no onnxscript needed). The file appears whole: it is written
    beside `path` and renamed onto it, so a process reading `path` (a test beside this one exporting the same
    cached model) never sees it half written."""
    import os
    import warnings
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), (example,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=[input_name], output_names=["output"])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.Hardswish(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.body(x)
        return x + y if self.use_res else y


class MobileNetV2(nn.Module):
    """A small MobileNetV2-style CNN: inverted residuals, depthwise 3x3, hardswish and ReLU6."""

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.Hardswish())
        cfg = [(width, 1, 1), (24, 2, 4), (24, 1, 4), (40, 2, 4), (40, 1, 4)]
        layers, cin = [], width
        for cout, stride, expand in cfg:
            layers.append(InvertedResidual(cin, cout, stride, expand))
            cin = cout
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.blocks(self.stem(x)).mean((2, 3))
        return self.head(x)


class ViT(nn.Module):
    """A ViT-style classifier: patch embedding by a strided conv, class token, encoder layers."""

    def __init__(self, image: int = 8, patch: int = 2, channels: int = 1, hidden: int = 64,
                 heads: int = 4, ffn: int = 128, layers: int = 2, num_classes: int = 10):
        super().__init__()
        n = (image // patch) ** 2
        self.embed = nn.Conv2d(channels, hidden, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, n + 1, hidden) * 0.02)
        self.layers = nn.Sequential(*[EncoderLayer(hidden, heads, ffn) for _ in range(layers)])
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.layers(x))[:, 0])
