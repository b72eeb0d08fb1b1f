"""FP32 end to end, side by side in one run: this compiler (TVM backend) vs onnxruntime.

    python benchmarks/e2e_fp32.py --threads 1 2 [--models resnet50 bert] [--repeat 30]

Models are built here with random weights (zoo.resnet50: ResNet-50 at 224x224; zoo.BertEncoder:
6 layers, hidden 384, 6 heads, FFN 1536, seq 128), exported with torch.onnx, and cached in out/bench/.
The two are timed interleaved (alternating calls). Prints a markdown table: median latency in ms, ratio to onnxruntime, max |diff| vs onnxruntime.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import export_model as build, interleaved_medians, ort_session  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet50", "bert"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()

    import compiler
    rows = []
    for name in args.models:
        path, x = build(name)
        for t in args.threads:
            t0 = time.perf_counter()
            cm = compiler.compile(path, target=f"llvm -num-threads={t}")
            compile_s = time.perf_counter() - t0
            sess = ort_session(path, t)
            feed = {sess.get_inputs()[0].name: x}
            ref = sess.run(None, feed)[0]
            ours = cm.run(x)[0]
            diff = float(np.max(np.abs(ours - ref)))
            lat = interleaved_medians({"ort": lambda: sess.run(None, feed), "ours": lambda: cm.run(x)},
                                      args.warmup, args.repeat)
            ort_ms, our_ms = lat["ort"], lat["ours"]
            rows.append((name, t, ort_ms, our_ms, our_ms / ort_ms, diff, compile_s))
            print(f"{name} threads={t}: onnxruntime {ort_ms:.2f} ms, ours {our_ms:.2f} ms "
                  f"({our_ms / ort_ms:.2f}x), max|diff| {diff:.1e}, compile {compile_s:.1f}s",
                  file=sys.stderr, flush=True)
    print(f"\nmachine: {os.uname().machine}, {os.cpu_count()} cores, cpu {compiler.Target.parse('llvm').cpu}")
    print("| model | threads | onnxruntime FP32 ms | ours ms | ours / ORT | max abs diff | compile s |")
    print("|---|---|---|---|---|---|---|")
    for name, t, o, u, r, d, c in rows:
        print(f"| {name} | {t} | {o:.2f} | {u:.2f} | {r:.2f}x | {d:.1e} | {c:.1f} |")


if __name__ == "__main__":
    main()
