"""MobileNetV3-Large, ported from torchvision.models.mobilenetv3 (torchvision 0.2x): inverted
residuals with hardswish or ReLU, squeeze-excite with hardsigmoid, the 1280-wide classifier."""
from __future__ import annotations

import itertools
from functools import partial

import torch
from torch import nn

from examples.real_arch.common import Conv2dNormActivation, SqueezeExcitation, make_divisible


class InvertedResidualConfig:
    def __init__(self, input_channels: int, kernel: int, expanded_channels: int, out_channels: int,
                 use_se: bool, activation: str, stride: int, dilation: int, width_mult: float):
        self.input_channels = make_divisible(input_channels * width_mult, 8)
        self.kernel = kernel
        self.expanded_channels = make_divisible(expanded_channels * width_mult, 8)
        self.out_channels = make_divisible(out_channels * width_mult, 8)
        self.use_se = use_se
        self.use_hs = activation == "HS"
        self.stride = stride
        self.dilation = dilation


SE_HARDSIGMOID = partial(SqueezeExcitation, scale_activation=nn.Hardsigmoid)


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when the expansion is 1), k x k depthwise, optional squeeze-excite
    (hardsigmoid gate), 1x1 linear projection; residual when stride 1 and shapes agree."""

    def __init__(self, cnf: InvertedResidualConfig, norm_layer,
                 se_layer=SE_HARDSIGMOID):
        super().__init__()
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        act = nn.Hardswish if cnf.use_hs else nn.ReLU
        layers: list[nn.Module] = []
        if cnf.expanded_channels != cnf.input_channels:
            layers.append(Conv2dNormActivation(cnf.input_channels, cnf.expanded_channels, 1,
                                               norm_layer=norm_layer, activation_layer=act))
        stride = 1 if cnf.dilation > 1 else cnf.stride
        layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.expanded_channels, cnf.kernel,
                                           stride=stride, dilation=cnf.dilation,
                                           groups=cnf.expanded_channels, norm_layer=norm_layer,
                                           activation_layer=act))
        if cnf.use_se:
            layers.append(se_layer(cnf.expanded_channels, make_divisible(cnf.expanded_channels // 4, 8)))
        layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.out_channels, 1,
                                           norm_layer=norm_layer, activation_layer=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result = result + x
        return result


class MobileNetV3(nn.Module):
    def __init__(self, setting: list[InvertedResidualConfig], last_channel: int,
                 num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        layers: list[nn.Module] = [Conv2dNormActivation(3, setting[0].input_channels, 3, stride=2,
                                                        norm_layer=norm_layer,
                                                        activation_layer=nn.Hardswish)]
        layers += [InvertedResidual(cnf, norm_layer) for cnf in setting]
        lastconv_in = setting[-1].out_channels
        lastconv_out = 6 * lastconv_in
        layers.append(Conv2dNormActivation(lastconv_in, lastconv_out, 1, norm_layer=norm_layer,
                                           activation_layer=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(lastconv_out, last_channel), nn.Hardswish(),
                                        nn.Dropout(p=dropout), nn.Linear(last_channel, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# (input, kernel, expanded, out, use_se, activation, stride), dilation 1: _mobilenet_v3_conf
LARGE = [(16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2),
         (24, 3, 72, 24, False, "RE", 1), (24, 5, 72, 40, True, "RE", 2),
         (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
         (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1),
         (80, 3, 184, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
         (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
         (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1),
         (160, 5, 960, 160, True, "HS", 1)]


def mobilenet_v3_large(width_mult: float = 1.0, blocks: list[int] | None = None,
                       num_classes: int = 1000) -> MobileNetV3:
    """torchvision's mobilenet_v3_large; `blocks` keeps only those rows of the setting (a
    shallower network of the same block kinds, for quick tests)."""
    rows = LARGE if blocks is None else [LARGE[i] for i in blocks]
    setting = [InvertedResidualConfig(*r, 1, width_mult) for r in rows]
    if blocks is not None:                # chain the kept rows: each takes the previous output
        for prev, cnf in itertools.pairwise(setting):
            cnf.input_channels = prev.out_channels
    return MobileNetV3(setting, make_divisible(1280 * width_mult, 8), num_classes)
