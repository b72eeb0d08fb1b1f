"""EfficientNet-B0, ported from torchvision.models.efficientnet (torchvision 0.2x): MBConv blocks
(1x1 expand, depthwise, squeeze-excite with SiLU and sigmoid, 1x1 project), SiLU everywhere,
stochastic depth (the identity in eval mode)."""
from __future__ import annotations

import copy
import itertools
import math
from functools import partial

import torch
from torch import nn

from examples.real_arch.common import Conv2dNormActivation, SqueezeExcitation, StochasticDepth, make_divisible


class MBConvConfig:
    def __init__(self, expand_ratio: float, kernel: int, stride: int, input_channels: int,
                 out_channels: int, num_layers: int, width_mult: float = 1.0, depth_mult: float = 1.0):
        self.expand_ratio = expand_ratio
        self.kernel = kernel
        self.stride = stride
        self.input_channels = self.adjust_channels(input_channels, width_mult)
        self.out_channels = self.adjust_channels(out_channels, width_mult)
        self.num_layers = math.ceil(num_layers * depth_mult)

    @staticmethod
    def adjust_channels(channels: int, width_mult: float, min_value: int | None = None) -> int:
        return make_divisible(channels * width_mult, 8, min_value)


class MBConv(nn.Module):
    def __init__(self, cnf: MBConvConfig, stochastic_depth_prob: float, norm_layer,
                 se_layer=SqueezeExcitation):
        super().__init__()
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        layers: list[nn.Module] = []
        expanded = cnf.adjust_channels(cnf.input_channels, cnf.expand_ratio)
        if expanded != cnf.input_channels:
            layers.append(Conv2dNormActivation(cnf.input_channels, expanded, 1,
                                               norm_layer=norm_layer, activation_layer=nn.SiLU))
        layers.append(Conv2dNormActivation(expanded, expanded, cnf.kernel, stride=cnf.stride,
                                           groups=expanded, norm_layer=norm_layer,
                                           activation_layer=nn.SiLU))
        layers.append(se_layer(expanded, max(1, cnf.input_channels // 4),
                               activation=partial(nn.SiLU, inplace=True)))
        layers.append(Conv2dNormActivation(expanded, cnf.out_channels, 1, norm_layer=norm_layer,
                                           activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")
        self.out_channels = cnf.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result = self.stochastic_depth(result)
            result = result + x
        return result


class EfficientNet(nn.Module):
    def __init__(self, setting: list[MBConvConfig], dropout: float, stochastic_depth_prob: float = 0.2,
                 num_classes: int = 1000, last_channel: int | None = None):
        super().__init__()
        norm_layer = nn.BatchNorm2d
        layers: list[nn.Module] = [Conv2dNormActivation(3, setting[0].input_channels, 3, stride=2,
                                                        norm_layer=norm_layer,
                                                        activation_layer=nn.SiLU)]
        total_stage_blocks = sum(cnf.num_layers for cnf in setting)
        stage_block_id = 0
        for cnf in setting:
            stage: list[nn.Module] = []
            for _ in range(cnf.num_layers):
                block_cnf = copy.copy(cnf)
                if stage:                 # later blocks of a stage: stride 1, same width in and out
                    block_cnf.input_channels = block_cnf.out_channels
                    block_cnf.stride = 1
                sd_prob = stochastic_depth_prob * float(stage_block_id) / total_stage_blocks
                stage.append(MBConv(block_cnf, sd_prob, norm_layer))
                stage_block_id += 1
            layers.append(nn.Sequential(*stage))
        lastconv_in = setting[-1].out_channels
        lastconv_out = last_channel if last_channel is not None else 4 * lastconv_in
        layers.append(Conv2dNormActivation(lastconv_in, lastconv_out, 1, norm_layer=norm_layer,
                                           activation_layer=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True),
                                        nn.Linear(lastconv_out, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                init_range = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -init_range, init_range)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# (expand_ratio, kernel, stride, input, out, layers): _efficientnet_conf("efficientnet_b0")
B0 = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
      (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]


def efficientnet_b0(width_mult: float = 1.0, depth_mult: float = 1.0,
                    stages: list[int] | None = None, num_classes: int = 1000) -> EfficientNet:
    """torchvision's efficientnet_b0 (width 1.0, depth 1.0, dropout 0.2); `stages` keeps only
    those stages, chained (for quick tests)."""
    rows = B0 if stages is None else [B0[i] for i in stages]
    setting = [MBConvConfig(*r, width_mult, depth_mult) for r in rows]
    if stages is not None:
        for prev, cnf in itertools.pairwise(setting):
            cnf.input_channels = prev.out_channels
    return EfficientNet(setting, dropout=0.2, num_classes=num_classes)
