"""YOLOv8 detection model, ported from ultralytics (ultralytics/nn/modules/{conv,block,head}.py,
utils/tal.py, cfg/models/v8/yolov8.yaml), in its export form: one (1, 4 + nc, anchors) tensor of
decoded xywh boxes (input pixels) and class probabilities."""
from __future__ import annotations

import math

import torch
from torch import nn

from examples.real_arch.common import make_divisible


def autopad(k: int, p: int | None = None, d: int = 1) -> int:
    """Padding for 'same' output shape."""
    if d > 1:
        k = d * (k - 1) + 1
    return k // 2 if p is None else p


class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 d: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)   # ultralytics initialize_weights
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Two Convs, with a residual add when `shortcut` and the shapes agree."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1,
                 k: tuple[int, int] = (3, 3), e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, k[0], 1)
        self.cv2 = Conv(c_, c2, k[1], 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP bottleneck with 2 convolutions: split cv1's output in two halves, chain n Bottlenecks
    on the second, concatenate every intermediate, fuse with cv2."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1,
                 e: float = 0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, g, k=(3, 3), e=1.0)
                               for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ultralytics' forward_split: its exporter swaps it in for ONNX ("split provides cleaner
        # ONNX graph": one Split instead of Shape/Gather/Slice chains); same values as chunk(2, 1)
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained k x k max pools, concatenated."""

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    """Distribution focal loss integral: softmax over reg_max bins, expectation by a fixed 1x1
    conv with weights 0..c1-1."""

    def __init__(self, c1: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def make_anchors(feats: list[torch.Tensor], strides: torch.Tensor, offset: float = 0.5):
    """Anchor centres (grid cell + offset) and the stride of every anchor, level by level."""
    points, stride_tensor = [], []
    dtype, device = feats[0].dtype, feats[0].device
    for i, stride in enumerate(strides):
        h, w = feats[i].shape[2:]
        sx = torch.arange(end=w, dtype=dtype, device=device) + offset
        sy = torch.arange(end=h, dtype=dtype, device=device) + offset
        sy, sx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_tensor.append(torch.full((h * w, 1), float(stride), dtype=dtype, device=device))
    return torch.cat(points), torch.cat(stride_tensor)


def dist2bbox(distance: torch.Tensor, anchor_points: torch.Tensor, xywh: bool = True,
              dim: int = -1) -> torch.Tensor:
    """(left, top, right, bottom) distances from the anchor -> xywh (or xyxy) boxes."""
    lt, rb = distance.chunk(2, dim)
    x1y1 = anchor_points - lt
    x2y2 = anchor_points + rb
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
    return torch.cat((x1y1, x2y2), dim)


class Detect(nn.Module):
    """Decoupled head: per level a box branch (4 * reg_max DFL logits) and a class branch;
    inference concatenates the levels, decodes boxes by DFL + anchors * stride, sigmoid on classes."""

    def __init__(self, nc: int = 80, ch: tuple[int, ...] = (), strides=(8.0, 16.0, 32.0)):
        super().__init__()
        self.nc, self.nl, self.reg_max = nc, len(ch), 16
        self.no = nc + self.reg_max * 4
        self.register_buffer("stride", torch.tensor(strides))
        c2, c3 = max((16, ch[0] // 4, self.reg_max * 4)), max(ch[0], min(self.nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3),
                                               nn.Conv2d(c2, 4 * self.reg_max, 1)) for x in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3),
                                               nn.Conv2d(c3, self.nc, 1)) for x in ch)
        self.dfl = DFL(self.reg_max)
        self.shape: torch.Size | None = None
        self.anchors = self.strides = torch.empty(0)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        x = [torch.cat((self.cv2[i](xi), self.cv3[i](xi)), 1) for i, xi in enumerate(x)]
        shape = x[0].shape
        x_cat = torch.cat([xi.view(shape[0], self.no, -1) for xi in x], 2)
        if self.shape != shape:           # anchors cached per input shape: constants when traced
            self.anchors, self.strides = (t.transpose(0, 1) for t in make_anchors(x, self.stride, 0.5))
            self.shape = shape
        box, cls = x_cat.split((self.reg_max * 4, self.nc), 1)
        dbox = dist2bbox(self.dfl(box), self.anchors.unsqueeze(0), xywh=True, dim=1) * self.strides
        return torch.cat((dbox, cls.sigmoid()), 1)

    def bias_init(self) -> None:
        """ultralytics' prior for the last convs' biases (box 1.0; class log(5/nc/(640/s)^2))."""
        for a, b, s in zip(self.cv2, self.cv3, self.stride):
            a[-1].bias.data[:] = 1.0
            b[-1].bias.data[: self.nc] = math.log(5 / self.nc / (640 / float(s)) ** 2)


# yolov8.yaml: (from, repeats, module, args) with channels before width scaling
BACKBONE = [(-1, 1, "Conv", [64, 3, 2]), (-1, 1, "Conv", [128, 3, 2]), (-1, 3, "C2f", [128, True]),
            (-1, 1, "Conv", [256, 3, 2]), (-1, 6, "C2f", [256, True]), (-1, 1, "Conv", [512, 3, 2]),
            (-1, 6, "C2f", [512, True]), (-1, 1, "Conv", [1024, 3, 2]), (-1, 3, "C2f", [1024, True]),
            (-1, 1, "SPPF", [1024, 5])]
HEAD = [(-1, 1, "Upsample", []), ([-1, 6], 1, "Concat", []), (-1, 3, "C2f", [512]),
        (-1, 1, "Upsample", []), ([-1, 4], 1, "Concat", []), (-1, 3, "C2f", [256]),
        (-1, 1, "Conv", [256, 3, 2]), ([-1, 12], 1, "Concat", []), (-1, 3, "C2f", [512]),
        (-1, 1, "Conv", [512, 3, 2]), ([-1, 9], 1, "Concat", []), (-1, 3, "C2f", [1024]),
        ([15, 18, 21], 1, "Detect", [])]
SCALES = {"n": (0.33, 0.25, 1024), "s": (0.33, 0.50, 1024), "m": (0.67, 0.75, 768)}


class Concat(nn.Module):
    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, 1)


class DetectionModel(nn.Module):
    """ultralytics parse_model over yolov8.yaml at (depth, width, max_channels), then the
    layer-by-layer forward that keeps the outputs later layers refer to."""

    def __init__(self, scale: tuple[float, float, int] = SCALES["n"], nc: int = 80):
        super().__init__()
        depth, width, max_channels = scale
        ch, layers, froms = [3], [], []
        for f, n, kind, args in BACKBONE + HEAD:
            n = max(round(n * depth), 1) if n > 1 else n
            if kind in ("Conv", "C2f", "SPPF"):
                c1, c2 = ch[f], make_divisible(min(args[0], max_channels) * width, 8)
                if kind == "Conv":
                    m = Conv(c1, c2, *args[1:])
                elif kind == "C2f":
                    m = C2f(c1, c2, n, *args[1:])
                else:
                    m = SPPF(c1, c2, *args[1:])
            elif kind == "Upsample":
                m, c2 = nn.Upsample(None, 2, "nearest"), ch[f]
            elif kind == "Concat":
                m, c2 = Concat(), sum(ch[i] for i in f)
            else:
                m, c2 = Detect(nc, tuple(ch[i] for i in f)), None
            layers.append(m)
            froms.append(f)
            ch = ch[1:] if len(layers) == 1 else ch
            ch.append(c2)
        self.model = nn.ModuleList(layers)
        self.froms = froms
        self.save = sorted({i for f in froms if isinstance(f, list) for i in f if i != -1})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: list[torch.Tensor | None] = []
        for m, f in zip(self.model, self.froms):
            if f != -1:
                x = [x if j == -1 else y[j] for j in f]
            x = m(x)
            y.append(x if len(y) in self.save else None)
        return x
