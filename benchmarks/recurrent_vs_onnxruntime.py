"""torch.nn.LSTM / GRU / RNN (2 layers, bidirectional) exported to ONNX, compiled, against onnxruntime FP32 side by
side in one run, interleaved.

    python benchmarks/recurrent_vs_onnxruntime.py [--threads 1] [--repeat 15] [--backends tvm mlir]
                                                  [--hidden 256] [--steps 64] [--batch 1]

Prints a markdown table: median ms per cell and backend, the ratio to onnxruntime, max |diff|.
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
from benchmarks.common import backends_vs_ort, print_backend_table  # noqa: E402

CELLS = ("LSTM", "GRU", "RNN")
INPUT = 128


def export(cell: str, path: Path, hidden: int, steps: int, batch: int) -> tuple[Path, np.ndarray]:
    """A seeded 2-layer bidirectional torch.nn.<cell> over (steps, batch, 128), exported (opset 17, input "x")."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = getattr(torch.nn, cell)(INPUT, hidden, num_layers=2, bidirectional=True)

        def forward(self, x):
            return self.rnn(x)[0]
    torch.manual_seed(0)
    x = torch.randn(steps, batch, INPUT)
    torch.onnx.export(Net().eval(), (x,), str(path), opset_version=17, dynamo=False, input_names=["x"])
    return path, x.numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--backends", nargs="+", choices=("tvm", "mlir"), default=["tvm"])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for cell in CELLS:
            path, x = export(cell, Path(d) / f"{cell}.onnx", args.hidden, args.steps, args.batch)
            lat, diff = backends_vs_ort(path, x, args.backends, args.threads, args.warmup, args.repeat)
            rows.append((cell, lat, diff))
    print(f"\n2 layers, bidirectional, input {INPUT}, hidden {args.hidden}, {args.steps} steps, batch {args.batch}; "
          f"{args.threads} thread(s), median of {args.repeat} interleaved calls\n")
    print_backend_table("cell", rows, args.backends)


if __name__ == "__main__":
    main()
