"""HAWQV3 mixed precision on the digits CNN: per-layer 4/8-bit weights chosen by an integer
linear program under a weight-size budget, integer-only, compared with FP32 and INT8; and under an
accuracy budget in top-1 points (or cosine) with the LUT and shift/add choices, on the shift kernel.

    python examples/mixed_precision_digits.py [--budget 0.7 0.55] [--hessian] [--accuracy-budget 0.5pt cos0.999]

Sensitivity is the output perturbation on the calibration data by default; --hessian uses
HAWQ's Hutchinson trace of the loss Hessian instead (the torch model is at hand here).
--accuracy-budget 0.5pt keeps the plan with the fewest multiplies that loses at most 0.5 top-1
points on the labelled calibration data (the training digits), measured on built integer graphs
(passes/accuracy_budget.py); cos0.999 bounds the output's cosine with FP32 instead.
Accuracies come from the reference interpreter on the whole test set (one batch).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler
from compiler import interp
from examples.digits import load_digits_split
from examples.make_demo_model import train
from passes.accuracy_budget import parse_accuracy_budget
from passes.mixed_precision import REALIZATIONS, layer_names, weight_layers
from passes.sensitivity import hutchinson_sensitivity, match_torch_weights
from passes.quantize import QuantConfig, calibration_batches
from passes.quantize_pipeline import quantize_graph, quantize_mixed


def weight_bytes(ig) -> float:
    """Bytes of the conv / matmul weights of an integer graph, int4 counted packed (half a byte)."""
    return sum(n.inputs[1].const.size * n.inputs[1].type.dtype.bits / 8 for n in ig.nodes
               if n.op.name in ("q.conv", "q.matmul") and n.inputs[1].is_const)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, nargs="+", default=[0.7, 0.55],
                    help="size budgets, fractions of the all-INT8 weight bytes")
    ap.add_argument("--hessian", action="store_true", help="Hutchinson Hessian-trace sensitivity")
    ap.add_argument("--accuracy-budget", nargs="*", default=["0.5pt"], metavar="Npt|cosC",
                    help="accuracy budgets (top-1 points lost on the calibration digits, or cosine with FP32) "
                         "with LUT and shift/add choices on the shift kernel [0.5pt]")
    args = ap.parse_args()

    model, _ = train(logits=True)
    xtr, ytr, xte, yte = load_digits_split()
    g = compiler.import_model(model, example_inputs=(torch.from_numpy(xte),))
    calib = calibration_batches(g, [xtr])
    config = QuantConfig(activation="uint8", integer_only=True)

    def acc(graph) -> float:
        return float(np.mean(interp.run(graph, xte)[0].argmax(1) == yte)) * 100

    int8, stats = quantize_graph(g, calib, config)
    sensitivity = None
    if args.hessian:
        xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
        batches = [(xt[i:i + 256], yt[i:i + 256]) for i in range(0, 1024, 256)]
        traces = hutchinson_sensitivity(
            model, lambda b: torch.nn.functional.cross_entropy(model(b[0]), b[1]), batches, probes=8)
        nodes = weight_layers(stats.graph)
        sensitivity = match_torch_weights(model, nodes, layer_names(nodes), traces)

    rows = [("FP32", acc(stats.graph), sum(n.inputs[1].const.size * 4 for n in weight_layers(stats.graph))),
            ("INT8", acc(int8), weight_bytes(int8))]
    for budget in args.budget:
        ig, plan = quantize_mixed(g, calib, size_budget=budget, config=config, sensitivity=sensitivity)
        print(f"\n== size budget {budget} ==\n{plan}")
        bits = "/".join(str(plan.bits[la.name]) for la in plan.layers)
        rows.append((f"mixed {budget} (W{bits})", acc(ig), weight_bytes(ig)))
    labels = ytr[:len(calib) * len(xte)]           # calibration_batches: batches of the test-set size
    for budget in args.accuracy_budget:
        ig, plan = quantize_mixed(g, calib, accuracy_budget=parse_accuracy_budget(budget, labels), config=config,
                                  realizations=REALIZATIONS, shift_kernel="shift")
        print(f"\n== accuracy budget {budget} ==\n{plan}")
        bits = "/".join(str(plan.bits[la.name]) for la in plan.layers)
        rows.append((f"mixed {budget} (W{bits})", acc(ig), weight_bytes(ig)))
    print(f"\n{'model':<40} {'test acc %':>10} {'weight bytes':>13}")
    for name, a, b in rows:
        print(f"{name:<40} {a:>10.2f} {b:>13.0f}")


if __name__ == "__main__":
    main()
