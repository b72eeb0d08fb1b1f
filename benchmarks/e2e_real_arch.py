"""The real-architecture suite, FP32 end to end, side by side in one run: this compiler (TVM
backend) vs onnxruntime, interleaved.

    python benchmarks/e2e_real_arch.py [--threads 1] [--models yolov8n convnext_t] [--repeat 30]

Models come from examples/real_arch (YOLOv8n at 320x320, MobileNetV3-Large, EfficientNet-B0 and
ConvNeXt-T at 224x224; seeded random weights), exported with torch.onnx to out/bench/real_arch/.
onnxruntime runs with intra_op_num_threads=N, no spinning, all graph optimizations; ours is
compiled for `llvm -num-threads=N`. Each repeat times one call of each, the order alternating
from one repeat to the next. Prints a markdown table: median / min / max ms of both, the ratio of
the medians, their geometric mean per thread count, max |diff| and the norm-relative difference
vs onnxruntime, compile seconds.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import CACHE, interleaved_ms, ort_session  # noqa: E402

MODELS = ["yolov8n", "mobilenetv3_large", "efficientnet_b0", "convnext_t"]
LABELS = {"yolov8n": "YOLOv8n, 320x320", "mobilenetv3_large": "MobileNetV3-Large, 224x224",
          "efficientnet_b0": "EfficientNet-B0, 224x224", "convnext_t": "ConvNeXt-T, 224x224"}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return "unknown cpu"


def measure(path: Path, x: np.ndarray, threads: int, warmup: int, repeat: int):
    """(ORT ms list, ours ms list, max |diff|, norm-relative diff, compile s) for one model."""
    import onnxruntime as ort

    import compiler
    t0 = time.perf_counter()
    cm = compiler.compile(path, target=f"llvm -num-threads={threads}")
    compile_s = time.perf_counter() - t0
    sess = ort_session(path, threads)
    assert sess.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    feed = {sess.get_inputs()[0].name: x}
    ref = sess.run(None, feed)[0]
    ours = cm.run(x)[0]
    diff = float(np.max(np.abs(ours - ref)))
    rel = float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))
    our_t, ort_t = interleaved_ms([lambda: cm.run(x), lambda: sess.run(None, feed)], warmup, repeat)
    return ort_t, our_t, diff, rel, compile_s


def _spread(ts: list[float]) -> str:
    return f"{statistics.median(ts):.2f} ({min(ts):.2f}-{max(ts):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--threads", nargs="+", type=int, default=[1])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()

    import onnxruntime as ort

    import compiler
    from examples.real_arch import export_onnx
    out_dir = CACHE / "real_arch"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        # re-exported every run (seconds): a cached file could predate a change to the model
        path, x = export_onnx(name, out_dir / f"{name}.onnx")
        for t in args.threads:
            rows.append((name, t, *measure(path, x.numpy(), t, args.warmup, args.repeat)))
            o, u = statistics.median(rows[-1][2]), statistics.median(rows[-1][3])
            print(f"{name} threads={t}: onnxruntime {o:.2f} ms, ours {u:.2f} ms ({u / o:.2f}x), "
                  f"max|diff| {rows[-1][4]:.1e}, compile {rows[-1][6]:.1f}s", file=sys.stderr, flush=True)

    print(f"\nmachine: {cpu_name()}, {len(os.sched_getaffinity(0))} cores, target cpu "
          f"{compiler.Target.parse('llvm').cpu}, onnxruntime {ort.__version__}; "
          f"{args.repeat} interleaved repeats after {args.warmup} warmup\n")
    print("| model | threads | ORT FP32 ms median (min-max) | ours ms median (min-max) | ours / ORT "
          "| max abs diff | rel diff | compile s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, t, o, u, d, r, c in rows:
        print(f"| {LABELS[name]} | {t} | {_spread(o)} | {_spread(u)} | "
              f"{statistics.median(u) / statistics.median(o):.2f}x | {d:.1e} | {r:.1e} | {c:.1f} |")
    for t in args.threads:
        ratios = [statistics.median(u) / statistics.median(o) for _, tt, o, u, *_ in rows if tt == t]
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        print(f"| geometric mean, {len(ratios)} models | {t} | | | {geo:.2f}x | | | |")


if __name__ == "__main__":
    main()
