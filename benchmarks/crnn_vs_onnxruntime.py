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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import backends_vs_ort, print_backend_table  # noqa: E402
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
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for label, kw in SIZES.items():
            path, x = export(Path(d) / "crnn.onnx", **kw)
            lat, diff = backends_vs_ort(path, x, args.backends, args.threads, args.warmup, args.repeat)
            rows.append((label, lat, diff))
    print(f"\n{args.threads} thread(s), median of {args.repeat} interleaved calls\n")
    print_backend_table("CRNN", rows, args.backends)


if __name__ == "__main__":
    main()
