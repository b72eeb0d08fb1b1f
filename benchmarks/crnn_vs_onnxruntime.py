"""A CRNN (examples/crnn.py: conv stack + bidirectional 2-layer LSTM + linear per column) against onnxruntime
FP32, side by side in one run, interleaved.

    python benchmarks/crnn_vs_onnxruntime.py [--threads 1] [--repeat 30]

Two sizes: the tests' model (hidden 32, 16 steps, batch 2) and an OCR-sized one (hidden 256, 64 steps,
batch 1). Prints a markdown table: median ms, ratio to onnxruntime, max |diff|.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import interleaved_medians, ort_session  # noqa: E402
from examples.crnn import export  # noqa: E402

SIZES = {"hidden 32, 16 steps, batch 2": dict(hidden=32, width=32, batch=2),
         "hidden 256, 64 steps, batch 1": dict(hidden=256, width=128, batch=1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    import compiler
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for label, kw in SIZES.items():
            path, x = export(Path(d) / "crnn.onnx", **kw)
            cm = compiler.compile(path, target=f"llvm -num-threads={args.threads}")
            sess = ort_session(path, args.threads)
            diff = float(np.abs(cm.run(x)[0] - sess.run(None, {"x": x})[0]).max())
            lat = interleaved_medians({"ort": lambda: sess.run(None, {"x": x}), "ours": lambda: cm.run(x)},
                                      args.warmup, args.repeat)
            rows.append((label, lat["ort"], lat["ours"], diff))
            print(f"{label}: onnxruntime {lat['ort']:.3f} ms, ours {lat['ours']:.3f} ms", file=sys.stderr, flush=True)
    print(f"\n{args.threads} thread(s), median of {args.repeat} interleaved calls\n")
    print("| CRNN | onnxruntime FP32 ms | ours ms | ours / ORT | max abs diff |")
    print("|---|---|---|---|---|")
    for label, o, u, diff in rows:
        print(f"| {label} | {o:.3f} | {u:.3f} | {u / o:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
