"""Export the four full-size models to a directory and print each model's ONNX op histogram."""
from __future__ import annotations

import argparse
from pathlib import Path

from examples.real_arch import FULL, MODELS, export_onnx, op_histogram


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path, help="directory for <name>.onnx")
    ap.add_argument("--models", nargs="+", default=FULL, choices=list(MODELS))
    ap.add_argument("--opset", type=int, default=17)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        path, x = export_onnx(name, args.out / f"{name}.onnx", args.opset)
        hist = op_histogram(path)
        print(f"{name}: input {tuple(x.shape)}, {sum(hist.values())} nodes, "
              f"{path.stat().st_size / 1e6:.1f} MB -> {path}")
        print("  " + ", ".join(f"{op} {n}" for op, n in hist.most_common()))


if __name__ == "__main__":
    main()
