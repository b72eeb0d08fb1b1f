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
from benchmarks.common import interleaved_medians, ort_session  # noqa: E402

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
    import compiler
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for cell in CELLS:
            path, x = export(cell, Path(d) / f"{cell}.onnx", args.hidden, args.steps, args.batch)
            cms = {b: compiler.compile(path, target=f"llvm -num-threads={args.threads}", backend=b)
                   for b in args.backends}
            sess = ort_session(path, args.threads)
            want = sess.run(None, {"x": x})[0]
            diff = max(float(np.abs(cm.run(x)[0] - want).max()) for cm in cms.values())
            calls = {"ort": lambda: sess.run(None, {"x": x})}
            calls.update({b: (lambda cm=cm: cm.run(x)) for b, cm in cms.items()})
            lat = interleaved_medians(calls, args.warmup, args.repeat)
            rows.append((cell, lat, diff))
            print(f"{cell}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in lat.items()), file=sys.stderr, flush=True)
    print(f"\n2 layers, bidirectional, input {INPUT}, hidden {args.hidden}, {args.steps} steps, batch {args.batch}; "
          f"{args.threads} thread(s), median of {args.repeat} interleaved calls\n")
    names = {"tvm": "ours (TVM)", "mlir": "ours (MLIR)"}
    print("| cell | onnxruntime FP32 ms | " + " | ".join(f"{names[b]} ms | / ORT" for b in args.backends)
          + " | max abs diff |")
    print("|---|---|" + "---|---|" * len(args.backends) + "---|")
    for cell, lat, diff in rows:
        cells = " | ".join(f"{lat[b]:.3f} | {lat[b] / lat['ort']:.2f}x" for b in args.backends)
        print(f"| {cell} | {lat['ort']:.3f} | {cells} | {diff:.1e} |")


if __name__ == "__main__":
    main()
