"""The energy estimate of the bundled digit classifier, FP32 and integer-only INT8, side by side.

    python examples/energy_report.py

Both builds are compiled for the host CPU; `cm.energy` counts the multiplies, adds, shifts, table
lookups and DRAM bytes of each final IR and prices them with Horowitz's 45 nm table (shifts from
ShiftAddViT). The artifact's manifest.json carries the same object, and `compile report` shows it.
It is an estimate from operation counts, not a measurement.
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler  # noqa: E402
from compiler.energy import format_side_by_side  # noqa: E402
from examples.digits import load_digits_split  # noqa: E402

MODEL = Path(__file__).resolve().parent / "models" / "digits_cnn.onnx"


def main() -> None:
    xtr = load_digits_split()[0]
    builds = {
        "FP32": compiler.compile(MODEL),
        "INT8 integer-only": compiler.compile(MODEL, quantize="int8", integer_only=True,
                                              calibration=[xtr[i:i + 1] for i in range(64)]),
    }
    energies = {name: cm.energy for name, cm in builds.items()}
    print(f"{MODEL.name}: predicted energy per inference (an estimate: operation counts of the final "
          "IR times a per-op table)\n")
    print(format_side_by_side(energies))
    act = energies["INT8 integer-only"]["activations"]
    print(f"\nactivation traffic: {act['model']}; weights are read from DRAM once per inference")
    print(textwrap.fill(f"table: {energies['FP32']['table_source']}", 100))


if __name__ == "__main__":
    main()
