"""Three small torch models for sklearn's 8x8 digits (examples/digits.py) and their training: a CNN, a
ResNet and a mobile net, trained in seconds; tests/e2e/test_quantized_accuracy.py and
benchmarks/e2e_int8_table.py quantize them. torch is imported inside the functions."""
from __future__ import annotations


def make_cnn():
    from torch import nn

    class DigitsCNN(nn.Module):
        """examples.zoo.TinyCNN without the final softmax: it ends in the logits."""

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            return self.head(self.features(x).mean((2, 3)))

    return DigitsCNN()


def make_resnet():
    from torch import nn

    from examples.zoo import BasicBlock

    class DigitsResNet(nn.Module):
        """Stem + two BasicBlocks (identity and 1x1-downsample shortcuts: residual adds)."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 12, 3, 1, 1, bias=False), nn.BatchNorm2d(12), nn.ReLU())
            self.blocks = nn.Sequential(BasicBlock(12, 12, 1), BasicBlock(12, 24, 2))
            self.head = nn.Linear(24, 10)

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)).mean((2, 3)))

    return DigitsResNet()


def make_mobile():
    import torch
    from torch import nn

    class SqueezeExcite(nn.Module):
        def __init__(self, c: int, r: int = 4):
            super().__init__()
            self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c // r, 1), nn.ReLU(),
                                    nn.Conv2d(c // r, c, 1), nn.Hardsigmoid())

        def forward(self, x):
            return x * self.fc(x)

    class DigitsMobile(nn.Module):
        """The activations and gates of mobile nets and detectors: SiLU, hardswish, a depthwise conv,
        squeeze-excite (x * gate), a layer-scale constant, a nearest upsample concatenated with a skip,
        a scalar division."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.SiLU())
            self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1, groups=16), nn.BatchNorm2d(16), nn.Hardswish())
            self.se = SqueezeExcite(16)
            self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, 16).reshape(16, 1, 1))
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.mix = nn.Sequential(nn.Conv2d(32, 24, 1), nn.Mish())
            self.head = nn.Linear(24, 10)

        def forward(self, x):
            s = self.stem(x)
            y = self.gamma * self.se(self.dw(s))
            y = self.mix(torch.cat([self.up(y), s], 1)) / 2
            return self.head(y.mean((2, 3)))

    return DigitsMobile()


# name: (builder, training epochs)
MODELS = {"cnn": (make_cnn, 25), "resnet": (make_resnet, 12), "mobile": (make_mobile, 40)}


def train(model, x, y, epochs: int):
    """Adam, lr 3e-3, batches of 64, seed 0; returns the model in eval mode."""
    import torch
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def trained_model(name: str, x, y):
    """MODELS[name] built with torch seed 0 and trained on (x, y) for its epochs."""
    import torch
    torch.manual_seed(0)
    build, epochs = MODELS[name]
    return train(build(), x, y, epochs)
