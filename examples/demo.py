"""The demo: compile the bundled digit classifier with the `compile` CLI, load the artifact,
classify sklearn's held-out digits, and compare with the reference interpreter; then the user's loop
from the command line: compile it integer-only INT8, bench both artifacts against onnxruntime and
write the HTML report.

    python examples/demo.py        (or: make demo)
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import compiler  # noqa: E402
from compiler import interp  # noqa: E402
from examples.digits import load_digits_split  # noqa: E402

MODEL = ROOT / "examples" / "models" / "digits_cnn.onnx"
OUT = ROOT / "out" / "digits_cnn.dyc"
OUT_INT8 = ROOT / "out" / "digits_cnn_int8.dyc"
CALIB = ROOT / "out" / "digits_calib.npz"
REPORT = ROOT / "out" / "digits_report"


def _cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "compiler", *map(str, args)]
    print("\n$ compile", " ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True)


def user_loop(x_train: np.ndarray) -> None:
    """Integer-only INT8 compile, bench against onnxruntime (FP32, and INT8 on the same data), report."""
    import onnx
    name = onnx.load(MODEL).graph.input[0].name
    np.savez(CALIB, **{name: x_train[:64].reshape(64, 1, *x_train.shape[1:])})
    _cli(MODEL, "--target", "llvm", "--quantize", "int8", "--integer-only", "--calibration", CALIB, "-o", OUT_INT8)
    _cli("bench", OUT, "--compare", MODEL, "--threads", "1", "--repeat", "50")
    _cli("bench", OUT_INT8, "--compare", MODEL, "--data", CALIB, "--threads", "1", "--repeat", "50")
    _cli("report", MODEL, "--quantize", "int8", "--data", CALIB, "-o", REPORT)


def main() -> int:
    OUT.parent.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "compiler", str(MODEL), "--target", "llvm", "-o", str(OUT)]
    print("$ compile", " ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True)

    cm = compiler.load(OUT)
    x_train, _, x, y = load_digits_split()
    probs = np.concatenate([cm.run(x[i:i + 1])[0] for i in range(len(x))])
    pred = probs.argmax(1)
    print(f"\nclassified {len(x)} held-out digits: accuracy {np.mean(pred == y):.4f}")
    print("first 12 predictions:", " ".join(map(str, pred[:12])))
    print("first 12 labels:     ", " ".join(map(str, y[:12])))

    graph = compiler.optimize(compiler.import_model(MODEL), "llvm")
    ref = np.concatenate([interp.run(graph, x[i:i + 1])[0] for i in range(len(x))])
    err = float(np.max(np.abs(probs - ref)))
    same = int(np.sum(ref.argmax(1) == pred))
    print(f"agreement with the reference interpreter: max |diff| {err:.2e}, "
          f"same class on {same}/{len(x)} inputs")
    lat = cm.benchmark(x[:1], warmup=10, repeat=200)
    print(f"latency (batch 1): median {lat['median_ms'] * 1e3:.1f} us")
    user_loop(x_train)
    return 0 if err < 1e-4 and same == len(x) else 1


if __name__ == "__main__":
    sys.exit(main())
