"""ConvNeXt-T, ported from torchvision.models.convnext (torchvision 0.2x): 4x4 patchify stem,
blocks of 7x7 depthwise conv, channels-last LayerNorm, Linear-GELU-Linear and layer scale,
LayerNorm2d + 2x2 stride-2 downsampling, and the classifier head LayerNorm2d + Flatten + Linear."""
from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from examples.real_arch.common import Conv2dNormActivation, Permute, StochasticDepth


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (permute to NHWC and back)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    def __init__(self, dim: int, layer_scale: float, stochastic_depth_prob: float):
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]),
            norm_layer(dim),
            nn.Linear(dim, 4 * dim, bias=True),
            nn.GELU(),
            nn.Linear(4 * dim, dim, bias=True),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.stochastic_depth(self.layer_scale * self.block(x))
        return result + x


class CNBlockConfig:
    def __init__(self, input_channels: int, out_channels: int | None, num_layers: int):
        self.input_channels = input_channels
        self.out_channels = out_channels
        self.num_layers = num_layers


class ConvNeXt(nn.Module):
    def __init__(self, block_setting: list[CNBlockConfig], stochastic_depth_prob: float = 0.0,
                 layer_scale: float = 1e-6, num_classes: int = 1000):
        super().__init__()
        norm_layer = partial(LayerNorm2d, eps=1e-6)
        first = block_setting[0].input_channels
        layers: list[nn.Module] = [Conv2dNormActivation(3, first, kernel_size=4, stride=4, padding=0,
                                                        norm_layer=norm_layer, activation_layer=None,
                                                        bias=True)]
        total_stage_blocks = sum(cnf.num_layers for cnf in block_setting)
        stage_block_id = 0
        for cnf in block_setting:
            stage: list[nn.Module] = []
            for _ in range(cnf.num_layers):
                sd_prob = stochastic_depth_prob * stage_block_id / max(total_stage_blocks - 1.0, 1.0)
                stage.append(CNBlock(cnf.input_channels, layer_scale, sd_prob))
                stage_block_id += 1
            layers.append(nn.Sequential(*stage))
            if cnf.out_channels is not None:
                layers.append(nn.Sequential(norm_layer(cnf.input_channels),
                                            nn.Conv2d(cnf.input_channels, cnf.out_channels, 2, 2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last = block_setting[-1]
        last_out = last.out_channels if last.out_channels is not None else last.input_channels
        self.classifier = nn.Sequential(norm_layer(last_out), nn.Flatten(1),
                                        nn.Linear(last_out, num_classes))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)))


TINY = [(96, 192, 3), (192, 384, 3), (384, 768, 9), (768, None, 3)]


def convnext_tiny(setting: list[tuple[int, int | None, int]] = TINY,
                  num_classes: int = 1000) -> ConvNeXt:
    """torchvision's convnext_tiny (stochastic depth 0.1, the identity in eval mode)."""
    return ConvNeXt([CNBlockConfig(*r) for r in setting], stochastic_depth_prob=0.1,
                    num_classes=num_classes)


@torch.no_grad()
def randomize_convnext(model: ConvNeXt, seed: int) -> ConvNeXt:
    """Seeded weights that let every block show in the output: LayerNorm gamma in [0.5, 1.5] and
    beta ~ N(0, 0.1), layer scales in [0.1, 1.0], conv/linear weights of variance 1/fan_in, biases
    ~ N(0, 0.02). The published init (std 0.02 weights, layer scale 1e-6) makes every residual
    branch ~1e-6 of its input, so a numerics test would not see the blocks at all."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in ** 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.02)
        elif isinstance(m, nn.LayerNorm):
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        elif isinstance(m, CNBlock):
            m.layer_scale.copy_(torch.rand(m.layer_scale.shape, generator=g) * 0.9 + 0.1)
    return model.eval()
