"""Mixed 8/16-bit activations chosen for an accuracy budget: `--keep-16bit auto[:BUDGET]`.

An integer-only INT8 MobileNetV3-Large loses accuracy at 8-bit activations (output cosine with FP32 about 0.95
on photographs). `keep_16bit=["auto:cos0.99"]` measures, on the calibration crops, what keeping each conv /
matmul layer's activations on int16 grids is worth (its gain kept alone, its drop put back alone), then bisects
the number of layers kept (heaviest first) to the fewest that meet the budget on the worst crop
(passes/keep_16bit_search.py). The int16 convs run the VNNI conv's vpdpwssd form,
their activations' 65536-entry tables fused into its write-back.

    python examples/keep_16bit_auto.py [mobilenetv3_large | efficientnet_b0 | mobilenetv3_large_reduced ...]
                                       [--budget cos0.99]
    python examples/keep_16bit_auto.py yolov8n --budget metric0.05        # about 6 minutes

A detector's budget can be its own loss, metricM: the largest class-score error over the top-10 anchors
(examples/real_arch/detector_metric.py, passed as accuracy_metric=), which the head output's cosine hardly sees.

Prints the search (layers kept, every count measured), the output cosine with FP32 on 6 other photographs for the
all-8-bit and the chosen build, their latency (1 thread, interleaved), and checks the chosen build against the
reference interpreter (bit-exact).
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler  # noqa: E402
from benchmarks.common import interleaved_ms  # noqa: E402
from compiler import interp  # noqa: E402
from examples.real_arch import MODELS, build  # noqa: E402
from examples.real_arch.photos import photo_batch  # noqa: E402


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="mobilenetv3_large", choices=sorted(MODELS))
    ap.add_argument("--budget", default="cos0.99",
                    help="the accuracy budget: cosC, Npt, or metricM for a detector (default cos0.99)")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    model, x = build(args.model)
    size = MODELS[args.model][1]
    g = compiler.import_model(model, example_inputs=(x,))
    calib = list(photo_batch(size, 8, seed=0)[:, None])
    evals = list(photo_batch(size, 6, seed=1)[:, None])
    with torch.no_grad():
        ref = [model(torch.from_numpy(e)).numpy() for e in evals]
    target = "llvm -num-threads=1"
    print(f"{args.model}: compiling all 8-bit, then with keep_16bit=['auto:{args.budget}'] (the search builds and "
          "runs the model about (2 x layers + 8) times on the calibration crops)", flush=True)
    int8 = compiler.compile(g, target, quantize="int8", calibration=calib, integer_only=True)
    from examples.real_arch.detector_metric import class_score_error
    metric = class_score_error if args.model.startswith("yolo") else None
    mixed = compiler.compile(g, target, quantize="int8", calibration=calib, integer_only=True,
                             keep_16bit=[f"auto:{args.budget}"], accuracy_metric=metric,
                             progress=compiler.api.stderr_progress)
    search = mixed.report.keep_16bit
    print(search)
    print(f"  kept, by position among the {len(search.graph_order)} layers (0: the first): {search.positions()}")
    for label, cm in (("all 8-bit", int8), ("auto 8/16-bit", mixed)):
        outs = [cm.run(e)[0] for e in evals]
        worst = min(cosine(r, o) for r, o in zip(ref, outs))
        score = f", class-score error {max(metric([r], [o]) for r, o in zip(ref, outs)):.4f}" if metric else ""
        print(f"  {label:14s} output cosine with FP32 on 6 other photographs: worst {worst:.4f}{score}")
    np.testing.assert_array_equal(mixed.run(evals[0])[0], interp.run(mixed.graph, evals[0])[0])
    print("  the 8/16-bit build == the reference interpreter on its final IR (bit-exact)")
    kernels = re.findall(r"call_tir\(cls\.([a-z_0-9]+?)_\d+,", mixed.executable.source("relax"))
    print(f"  int16 convs on the vpdpwssd kernel: {kernels.count('qconv2d_vnni16')}, int8 convs on vpdpbusd: "
          f"{kernels.count('qconv2d_vnni')}")
    t8, t16 = interleaved_ms([lambda: int8.run(evals[0]), lambda: mixed.run(evals[0])], 3, 20)
    print(f"  latency, 1 thread: all 8-bit {statistics.median(t8):.2f} ms, auto 8/16-bit "
          f"{statistics.median(t16):.2f} ms")


if __name__ == "__main__":
    main()
