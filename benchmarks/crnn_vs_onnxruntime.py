"""A CRNN (examples/crnn.py: conv stack + bidirectional 2-layer LSTM + linear per column) against onnxruntime
FP32, side by side in one run, interleaved.

    python benchmarks/crnn_vs_onnxruntime.py [--threads 1] [--repeat 30] [--backends tvm mlir]

Two sizes: the tests' model (hidden 32, 16 steps, batch 2) and an OCR-sized one (hidden 256, 64 steps,
batch 1). Prints a markdown table: median ms per backend, its ratio to onnxruntime, max |diff|.
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
    ap.add_argument("--backends", nargs="+", choices=("tvm", "mlir"), default=["tvm"])
    args = ap.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    import compiler
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for label, kw in SIZES.items():
            path, x = export(Path(d) / "crnn.onnx", **kw)
            cms = {b: compiler.compile(path, target=f"llvm -num-threads={args.threads}", backend=b)
                   for b in args.backends}
            sess = ort_session(path, args.threads)
            want = sess.run(None, {"x": x})[0]
            diff = max(float(np.abs(cm.run(x)[0] - want).max()) for cm in cms.values())
            calls = {"ort": lambda: sess.run(None, {"x": x})}
            calls.update({b: (lambda cm=cm: cm.run(x)) for b, cm in cms.items()})
            lat = interleaved_medians(calls, args.warmup, args.repeat)
            rows.append((label, lat, diff))
            print(f"{label}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in lat.items()), file=sys.stderr, flush=True)
    print(f"\n{args.threads} thread(s), median of {args.repeat} interleaved calls\n")
    names = {"tvm": "ours (TVM)", "mlir": "ours (MLIR)"}
    print("| CRNN | onnxruntime FP32 ms | " + " | ".join(f"{names[b]} ms | / ORT" for b in args.backends)
          + " | max abs diff |")
    print("|---|---|" + "---|---|" * len(args.backends) + "---|")
    for label, lat, diff in rows:
        cells = " | ".join(f"{lat[b]:.3f} | {lat[b] / lat['ort']:.2f}x" for b in args.backends)
        print(f"| {label} | {lat['ort']:.3f} | {cells} | {diff:.1e} |")

if __name__ == "__main__":
    main()
