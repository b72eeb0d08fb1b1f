"""The command-line loop on a compiled model: compile the bundled digit classifier in FP32 and
integer-only INT8, run both on a held-out digit from an .npy file, show what a malformed input
says, then time both against onnxruntime (FP32, and its own INT8 for the integer artifact).

    python examples/run_and_bench.py              # everything (the bench part takes ~20 s)
    python examples/run_and_bench.py --no-bench   # compile and run only: no timing
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.digits import load_digits_split

MODEL = ROOT / "examples" / "models" / "digits_cnn.onnx"


def compile_cli(*args: object, check: bool = True) -> int:
    """Run `compile ARGS...` (as `python -m compiler`), echoing the command like a shell session."""
    argv = [str(a) for a in args]
    print(f"\n$ compile {shlex.join(_short(a) for a in argv)}", flush=True)
    r = subprocess.run([sys.executable, "-m", "compiler", *argv], cwd=ROOT, check=False)
    if check and r.returncode != 0:
        raise SystemExit(f"compile {argv[0]} failed with exit code {r.returncode}")
    return r.returncode


def _short(arg: str) -> str:
    return arg.replace(str(ROOT) + "/", "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-bench", action="store_true", help="skip the timing part")
    ap.add_argument("--out", default=str(ROOT / "out" / "run_and_bench"), help="where the files go")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    xtr, _, xte, yte = load_digits_split()
    np.savez(out / "calib.npz", input=xtr[:64])              # 64 training digits, (64, 1, 8, 8)
    np.save(out / "digit.npy", xte[:1])                      # one held-out digit, (1, 1, 8, 8)
    np.save(out / "wrong.npy", xte[0, 0])                    # (8, 8): the batch and channel axes missing
    print(f"held-out digit 0 is a {yte[0]}; inputs written to {_short(str(out))}/")

    fp32, int8 = out / "digits.dyc", out / "digits_int8.dyc"
    compile_cli(MODEL, "-o", fp32, "-q")
    compile_cli(MODEL, "--quantize", "int8", "--calibration", out / "calib.npz", "--integer-only",
                "-o", int8, "-q")

    compile_cli("run", fp32, "--input", f"input={out / 'digit.npy'}", "-o", out / "fp32_out.npz")
    compile_cli("run", int8, "--input", f"input={out / 'digit.npy'}", "-o", out / "int8_out.npz")
    a, b = np.load(out / "fp32_out.npz")["output"], np.load(out / "int8_out.npz")["output"]
    print(f"\nFP32 and INT8 both say {int(a.argmax())} (label {yte[0]}): {a.argmax() == b.argmax()}; "
          f"max |FP32 - INT8| probability {float(np.abs(a - b).max()):.3g}")

    code = compile_cli("run", fp32, "--input", f"input={out / 'wrong.npy'}", check=False)
    print(f"(exit code {code})")

    if not args.no_bench:
        compile_cli("bench", fp32, "--compare", MODEL, "--threads", "1", "--repeat", "200")
        compile_cli("bench", int8, "--compare", MODEL, "--data", out / "calib.npz", "--threads", "1",
                    "--repeat", "200", "--profile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
