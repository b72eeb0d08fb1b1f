"""A CRNN-style OCR model (conv stack, bidirectional 2-layer LSTM over the width, a linear classifier per
column), written in PyTorch, exported with torch.onnx and compiled; the output is compared with onnxruntime.

    python examples/crnn.py [--hidden 256] [--width 128] [--batch 1] [--backend tvm|mlir]

`crnn()` is the model the tests (tests/e2e/test_crnn.py) and benchmarks/crnn_vs_onnxruntime.py use.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def crnn(hidden: int = 32, width: int = 32, batch: int = 2, classes: int = 11, seed: int = 0):
    """(model in eval mode, input (batch, 1, 16, width)); seeded weights and BatchNorm statistics."""
    import torch
    from torch import nn

    class CRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d((2, 1)))
            self.rnn = nn.LSTM(32 * 4, hidden, num_layers=2, bidirectional=True)
            self.fc = nn.Linear(2 * hidden, classes)

        def forward(self, x):                        # (N, 1, 16, W) -> (W/2, N, classes)
            f = self.features(x)                     # (N, 32, 4, W/2)
            n, c, h, w = f.shape
            seq = f.permute(3, 0, 1, 2).reshape(w, n, c * h)
            y, _ = self.rnn(seq)
            return self.fc(y).log_softmax(-1)

    torch.manual_seed(seed)
    model = CRNN().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return model, torch.randn(batch, 1, 16, width, generator=torch.Generator().manual_seed(seed + 1))


def export(path: str | Path, **kw) -> tuple[Path, np.ndarray]:
    """crnn(**kw) exported to `path` (opset 17, input "x"); returns the path and the example input."""
    import torch
    model, x = crnn(**kw)
    torch.onnx.export(model, (x,), str(path), opset_version=17, dynamo=False, input_names=["x"])
    return Path(path), x.numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--backend", choices=("tvm", "mlir"), default="tvm",
                    help="code generator: TVM, or MLIR through IREE (the recurrence an scf.for over the steps)")
    args = ap.parse_args()
    import onnxruntime as ort

    import compiler
    with tempfile.TemporaryDirectory() as d:
        path, x = export(Path(d) / "crnn.onnx", hidden=args.hidden, width=args.width, batch=args.batch)
        cm = compiler.compile(path, target="llvm", backend=args.backend)
        want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = cm.run(x)[0]
    print(f"CRNN hidden {args.hidden}, {args.width // 2} steps, batch {args.batch}, {args.backend}: output {got.shape}, "
          f"max |ours - onnxruntime| {np.abs(got - want).max():.2e}")
    print(f"ours {cm.benchmark(x)['median_ms']:.3f} ms per call")


if __name__ == "__main__":
    main()
