"""The learned cost model choosing a kernel's register tile, checked against this machine.

For a few kernels (an fp32 conv whose hand-written tile is a poor fit, an int8 conv of ResNet-50, an int8 linear
layer and an attention matmul of the integer BERT encoder) the script asks ``costmodel.policy`` to rank every
candidate tile, prints the model's top five with their predicted times, then compiles and times the model's
choice, the hand-written ``pick_tile`` and the model's other top-five tiles side by side (interleaved rounds,
one thread), so you see whether the model's order holds on your machine.

    python examples/cost_model.py [--repeat 5]

`compile tune-costmodel --target llvm` retrains the model on this machine; docs/costmodel.md has the held-out
quality of the shipped one.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")     # the shipped model was measured single-threaded
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from compiler.backends.tvm_kernels.common import host_target
from costmodel import features as F
from costmodel import measure as Me
from costmodel import policy

KERNELS = [
    Me.conv_spec(48, 17, 96, 5, 1, 2),                 # fp32 5x5 conv on a 17-wide image
    Me.qconv_spec(256, 14, 256, 3, 1, 1),              # int8 3x3 conv of ResNet-50's stage 3
    Me.qmatmul_spec(128, 384, 1536),                   # int8 BERT FFN up-projection, seq 128
    Me.qbmm_spec(6, 128, 64, 128, tb=True),            # int8 attention Q K^T, 6 heads
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="interleaved timing rounds per kernel (default 5)")
    args = ap.parse_args()
    if policy.default_model() is None:
        sys.exit("no cost model available (xgboost missing or DYC_COSTMODEL=off)")
    target = host_target(1)
    print(f"model: {policy.model_path()}  target: llvm -mcpu={F.target_info(None).mcpu}, 1 thread\n")
    for spec in KERNELS:
        tiles, scores = policy.rank(spec)
        order = np.argsort(scores)
        top = [tuple(tiles[i]) for i in order[:5]]
        hand = F.default_tile(spec)
        timed = top + ([hand] if hand not in top else [])
        res = Me.time_funcs_interleaved([F.build_func(spec, t) for t in timed], spec, target, args.repeat)
        ms = {t: r[0] * 1e3 for t, r in zip(timed, res)}
        best = min(ms.values())
        print(f"{Me.task_name(spec)}: {len(tiles)} candidate tiles")
        print(f"  {'tile':<14s}{'predicted ms':>14s}{'measured ms':>14s}  ")
        for i, t in zip(order[:5], top):
            tags = (["model's choice"] if t == top[0] else []) + (["hand-written"] if t == hand else [])
            print(f"  {t!s:<14s}{np.exp(scores[i]) * 1e3:14.3f}{ms[t]:14.3f}  {', '.join(tags)}")
        if hand not in top:
            j = tiles.index(hand)
            print(f"  {hand!s:<14s}{np.exp(scores[j]) * 1e3:14.3f}{ms[hand]:14.3f}  hand-written "
                  f"(model's rank {int(np.where(order == j)[0][0]) + 1})")
        print(f"  model's choice: {ms[top[0]] / best - 1:+.1%} vs the fastest timed tile, "
              f"hand-written {ms[hand] / ms[top[0]]:.2f}x its time\n")


if __name__ == "__main__":
    main()
