"""Predicted energy per inference, FP32 against integer-only INT8 and the multiplication-free builds
(shift/add weights, 4-bit LUT linear layers), for the bundled digits CNN (examples/models/digits_cnn.onnx,
8x8 inputs), ResNet-50 (224x224) and the 6-layer BERT encoder (hidden 384, seq 128) of the model zoo: an
ESTIMATE from the operation counts of each final IR (compiler/energy.py: Horowitz 45 nm, shifts from
ShiftAddViT), not a measurement.

    PYTHONPATH=. .venv/bin/python benchmarks/energy.py [--models digits resnet50 bert]

ResNet-50 and BERT have random weights (seed 0; the counts depend on the graph, not on the values) and
INT8 calibrated on 4 random batches; the digits CNN is the trained one, calibrated on 64 training digits. Only the compiler's passes run (compiler.api.final_ir): no code is generated, nothing
is timed. Prints, per model, the builds side by side (operation counts, energy by kind and by op),
then one summary table. The activations' DRAM traffic follows the memory plan (the arena written
once and read once); the table also gives the traffic with every tensor written and read once.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import export_model  # noqa: E402


DIGITS = ROOT / "examples" / "models" / "digits_cnn.onnx"


def model_path(name: str) -> Path:
    return DIGITS if name == "digits" else export_model(name)[0]


def calibration(name: str, n: int = 4) -> list[np.ndarray]:
    """Inputs shaped like the model's: training digits for digits, random images for resnet50, random
    token ids for bert."""
    if name == "digits":
        from examples.digits import load_digits_split
        xtr = load_digits_split()[0]
        return [xtr[i:i + 1] for i in range(64)]
    rng = np.random.default_rng(0)
    if name == "bert":
        return [rng.integers(0, 1000, (1, 128)).astype(np.int64) for _ in range(n)]
    return [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(n)]


def standard_builds(name: str) -> dict[str, dict[str, Any]]:
    """The builds every model gets: compile options by column name."""
    return {"FP32": {},
            "INT8 integer-only": {"quantize": "int8", "calibration": calibration(name), "integer_only": True}}


def multiplication_free_builds(name: str) -> dict[str, dict[str, Any]]:
    """The multiplication-free builds of the same model: shift/add weights (every conv / linear weight a
    sum of two signed powers of two, the shift-and-add kernel) and 4-bit LUT linear layers (T-MAC table
    lookups). The shift/add fit is sized for layers like BERT's and the digits CNN's, so ResNet-50 gets only
    the LUT build (which touches just its classifier: a CNN's convs stay int8)."""
    int8 = standard_builds(name)["INT8 integer-only"]
    builds = {"LUT 4-bit linear": {**int8, "lut": 4}}
    if name in ("bert", "digits"):
        builds["shift/add 2-term"] = {**int8, "shiftadd": 2, "shiftadd_kernel": "shift"}
    return builds


def estimate_build(path: Path, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], float]:
    """(estimate with the memory plan, estimate without it, seconds the passes took)."""
    from compiler.api import final_ir
    from compiler.energy import estimate
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    g, _ = final_ir(str(path), "llvm", results=results, **options)
    seconds = time.perf_counter() - t0
    plan = results.get("memory")
    return estimate(g, plan.arena_bytes if plan is not None else None), estimate(g), seconds


def summary_rows(model: str, estimates: dict[str, tuple[dict, dict]]) -> list[str]:
    """Markdown rows: total, the split by kind, the traffic without the plan, the ratio to FP32."""
    from compiler.energy import energy_by_kind, joules
    first = next(iter(estimates.values()))[0]["pJ_per_inference"]
    rows = []
    for build, (e, per_tensor) in estimates.items():
        k = energy_by_kind(e)
        rows.append(f"| {model} | {build} | {joules(e['pJ_per_inference'])} | {joules(k['arithmetic'])} | "
                    f"{joules(k['table lookups (SRAM)'])} | {joules(k['weights (DRAM)'])} | "
                    f"{joules(k['activations (DRAM)'])} | {joules(per_tensor['activations']['pJ'])} | "
                    f"{e['pJ_per_inference'] / first:.3f}x |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["digits", "resnet50", "bert"],
                    choices=["digits", "resnet50", "bert"])
    args = ap.parse_args()
    from compiler.energy import TABLE_SOURCE, format_side_by_side
    summary = []
    for name in args.models:
        path = model_path(name)
        builds = {**standard_builds(name), **multiplication_free_builds(name)}
        estimates = {}
        for build, options in builds.items():
            with_plan, per_tensor, seconds = estimate_build(path, options)
            estimates[build] = (with_plan, per_tensor)
            print(f"{name} {build}: passes in {seconds:.1f} s", file=sys.stderr, flush=True)
        print(f"\n{name}: predicted energy per inference, batch 1 (ESTIMATE: operation counts x per-op "
              "table, not a measurement)\n")
        print(format_side_by_side({b: e for b, (e, _) in estimates.items()}))
        summary += summary_rows(name, estimates)
    print("\nsummary (ESTIMATE, pJ counts x Horowitz 45 nm table; activations follow the memory plan):\n")
    print("| model | build | per inference | arithmetic | lookups (SRAM) | weights (DRAM) | activations "
          "(DRAM, arena) | activations (DRAM, every tensor) | vs FP32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(summary))
    print("\n" + textwrap.fill(f"table: {TABLE_SOURCE}", 100))


if __name__ == "__main__":
    main()
