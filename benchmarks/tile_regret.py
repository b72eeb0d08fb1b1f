"""How far the cost model's register tile is from the best one, measured: for a set of fp32 conv layers, every
candidate tile is built and timed here, and the model's choice is compared with the fastest.

    python benchmarks/tile_regret.py [--layers resnet50 mobilenetv3_dw] [--number 10]

resnet50: ten of ResNet-50's 3x3 / 1x1 layers (blocked NCHW16c, bias + relu); mobilenetv3_dw: six of
MobileNetV3-Large's depthwise layers. Prints per layer the chosen tile, the best tile, their times and the
ratio, and the ratio of the sums (1.00x: the model always picks the fastest).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LAYERS = {
    # (ci, co, hw, kernel, stride, groups, block)
    "resnet50": [(64, 64, 56, 3, 1, 1, 16), (64, 256, 56, 1, 1, 1, 16), (256, 64, 56, 1, 1, 1, 16),
                 (128, 128, 28, 3, 1, 1, 16), (512, 128, 28, 1, 1, 1, 16), (256, 256, 14, 3, 1, 1, 16),
                 (1024, 256, 14, 1, 1, 1, 16), (512, 512, 7, 3, 1, 1, 16), (2048, 512, 7, 1, 1, 1, 16),
                 (512, 2048, 7, 1, 1, 1, 16)],
    "mobilenetv3_dw": [(64, 64, 112, 3, 2, 64, 16), (72, 72, 56, 3, 1, 72, 8), (120, 120, 28, 5, 1, 120, 8),
                       (16, 16, 112, 3, 1, 16, 16), (960, 960, 7, 5, 1, 960, 16), (240, 240, 28, 3, 2, 240, 16)],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    ap.add_argument("--number", type=int, default=10, help="calls per timing repeat (5 repeats, median)")
    args = ap.parse_args()

    import tvm

    from compiler.backends.tvm_kernels import conv2d as C
    from compiler.backends.tvm_kernels.common import SCHEDULE_ATTR, host_target
    from costmodel import features as F
    from costmodel import policy

    target = host_target(1)
    for group in args.layers:
        print(f"\n{group}: layer | chosen tile ms | best tile ms | chosen / best")
        tot_chosen = tot_best = 0.0
        for ci, co, hw, k, stride, groups, block in LAYERS[group]:
            act = "relu" if groups == 1 else "none"
            spec = C.Conv2dSpec(1, ci, hw, hw, co, k, k, (stride, stride), (k // 2,) * 4, (1, 1), groups, block,
                                block, True, False, act)
            chosen = tuple(policy.choose(spec)[0])
            shapes = [C.data_shape(spec), C.weight_shape(spec), C.bias_shape(spec), C.out_shape(spec)]
            data = [tvm.runtime.tensor(np.random.default_rng(0).random(s).astype("float32")) for s in shapes]
            times = {}
            for tile in {chosen, *map(tuple, F.candidate_tiles(spec))}:
                func = C.make_conv2d(spec, tile)
                if str(func.attrs[SCHEDULE_ATTR]) != "tiled":
                    continue
                lib = tvm.compile(tvm.IRModule({"main": func}), target=target)
                ev = lib.mod.time_evaluator("main", tvm.cpu(), number=args.number, repeat=5)
                times[tile] = float(np.median(ev(*data).results)) * 1e3
            best = min(times, key=times.get)
            tot_chosen += times[chosen]
            tot_best += times[best]
            print(f"  {ci}->{co} {hw}x{hw} k{k} s{stride} g{groups} | {chosen} {times[chosen]:.3f} | "
                  f"{best} {times[best]:.3f} | {times[chosen] / times[best]:.3f}x", flush=True)
        print(f"  sum: {tot_chosen:.3f} ms chosen vs {tot_best:.3f} ms best = {tot_chosen / tot_best:.3f}x")


if __name__ == "__main__":
    main()
