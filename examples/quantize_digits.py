"""Integer-only INT8: train a digit classifier, compile it integer-only with calibration on
training images, and compare accuracy and latency with the float build.

    python examples/quantize_digits.py
    python examples/quantize_digits.py --keep-16bit first,last   # those layers' activations at 16 bits
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler  # noqa: E402
from examples.digits import load_digits_split  # noqa: E402
from examples.make_demo_model import train  # noqa: E402


def accuracy(cm, x, y) -> float:
    return float(np.mean([cm.run(x[i:i + 1])[0].argmax() == y[i] for i in range(len(x))]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep-16bit", default="", metavar="NAME[,NAME...]",
                    help="conv / linear layers (ONNX node names, first, last) whose activations stay int16")
    keep = [k for k in ap.parse_args().keep_16bit.split(",") if k]
    model, _ = train(logits=True)
    xtr, _, xte, yte = load_digits_split()
    example = (torch.from_numpy(xte[:1]),)
    fp32 = compiler.compile(model, example_inputs=example)
    int8 = compiler.compile(model, example_inputs=example, quantize="int8", integer_only=True,
                            calibration=[xtr[i:i + 1] for i in range(128)], keep_16bit=keep)
    print(int8.report)
    ops = sorted({n.op.name for n in int8.graph.nodes})
    print(f"\ninteger-only graph ops: {', '.join(ops)}")
    for name, cm in (("FP32", fp32), ("INT8 integer-only", int8)):
        lat = cm.benchmark(xte[:1], warmup=20, repeat=200)["median_ms"] * 1e3
        print(f"{name:18} test accuracy {accuracy(cm, xte, yte):.4f}, latency {lat:.1f} us")
    path = int8.save(Path(__file__).resolve().parents[1] / "out" / "digits_int8.dyc")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
