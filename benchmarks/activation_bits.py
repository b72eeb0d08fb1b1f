"""How many activation bits a real-architecture model needs for a cosine bar: a float simulation in torch.

Every BatchNorm folded into its conv, weights rounded per output channel to symmetric int8, and the output of
every conv, linear, activation, pooling, squeeze-excite multiply and residual block rounded to a per-tensor
asymmetric grid of B bits whose range is the min / max seen on the calibration crops (times --expand). The
same crops as benchmarks/e2e_int8_real_arch.py: 8 calibrate, 6 others evaluate; prints the worst image's
cosine of the output with FP32 per bit width. It measures what rounding to such grids costs the model, not
the compiler (whose 8-bit result the e2e benchmark measures).

    python benchmarks/activation_bits.py [--models mobilenetv3_large efficientnet_b0] [--bits 8 10 11 12 16]
                                         [--expand 1.0 2.0]
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

POINTS = ("Conv2d", "Linear", "Hardswish", "SiLU", "ReLU", "Hardsigmoid", "Sigmoid", "GELU", "AdaptiveAvgPool2d",
          "SqueezeExcitation")
RESIDUAL_BLOCKS = ("InvertedResidual", "MBConv")


def fold_batch_norms(model):
    """A copy of `model` whose Conv2dNormActivation convs carry their BatchNorm (eval statistics)."""
    from torch import nn

    from examples.real_arch.common import Conv2dNormActivation
    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, Conv2dNormActivation) and isinstance(mod[1], nn.BatchNorm2d):
            conv, bn = mod[0], mod[1]
            s = bn.weight / (bn.running_var + bn.eps).sqrt()
            folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                               conv.dilation, conv.groups, bias=True)
            folded.weight.data = (conv.weight * s[:, None, None, None]).detach()
            bias = conv.bias * s if conv.bias is not None else 0
            folded.bias.data = (bn.bias - bn.running_mean * s + bias).detach()
            mod[0], mod[1] = folded, nn.Identity()
    return m


def rounding_points(m) -> list:
    """The modules whose outputs get a grid."""
    return [mod for mod in m.modules() if type(mod).__name__ in POINTS
            or (type(mod).__name__ in RESIDUAL_BLOCKS and getattr(mod, "use_res_connect", False))]


def cosine_at(model, calib, evals, bits: int, expand: float) -> float:
    import torch
    from torch import nn
    m = fold_batch_norms(model)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                w = mod.weight.data
                s = w.abs().amax(dim=tuple(range(1, w.ndim)), keepdim=True).clamp_min(1e-12) / 127
                mod.weight.data = torch.round(w / s) * s
    points = rounding_points(m)
    ranges: dict[int, tuple[float, float]] = {}

    def observe(mod, _inp, out):
        lo, hi = ranges.get(id(mod), (0.0, 0.0))
        ranges[id(mod)] = (min(lo, out.min().item()), max(hi, out.max().item()))
    hooks = [p.register_forward_hook(observe) for p in points]
    with torch.no_grad():
        m(calib)
    for h in hooks:
        h.remove()
    levels = 2 ** bits - 1

    def rounded(mod, _inp, out):
        lo, hi = (r * expand for r in ranges[id(mod)])
        step = (hi - lo) / levels or 1.0
        zp = round(-lo / step)
        return (torch.clamp(torch.round(out / step) + zp, 0, levels) - zp) * step
    for p in points:
        p.register_forward_hook(rounded)
    with torch.no_grad():
        ref, got = model(evals).double(), m(evals).double()
    return min(float(r @ g / (r.norm() * g.norm())) for r, g in zip(ref, got))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["mobilenetv3_large", "efficientnet_b0"],
                    choices=["mobilenetv3_large", "efficientnet_b0"])
    ap.add_argument("--bits", nargs="+", type=int, default=[8, 10, 11, 12, 16])
    ap.add_argument("--expand", nargs="+", type=float, default=[1.0],
                    help="calibrated ranges times this (headroom for crops beyond the calibration's)")
    args = ap.parse_args()

    import torch

    from examples.real_arch import MODELS, build
    from examples.real_arch.photos import photo_batch
    torch.set_num_threads(1)
    for name in args.models:
        model, _ = build(name)
        size = MODELS[name][1]
        calib = torch.from_numpy(photo_batch(size, 8, seed=0))
        evals = torch.from_numpy(photo_batch(size, 6, seed=1))
        for e in args.expand:
            row = "  ".join(f"{b}-bit {cosine_at(model, calib, evals, b, e):.4f}" for b in args.bits)
            print(f"{name} (ranges x{e}): {row}", flush=True)


if __name__ == "__main__":
    main()
