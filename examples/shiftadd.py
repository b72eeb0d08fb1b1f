"""Multiplication-free weights, post-training: the digits CNN compiled integer-only with every conv / linear
weight re-expressed as per-channel sums of 1 or 2 signed powers of two (passes/shiftadd.py), fitted to each
layer's output on the calibration images. Prints the test accuracy of FP32, INT8 and the 2- and 1-term builds,
each layer's fit and realization (the kernel that runs it: by default the one the cost models predict faster,
both predictions printed), and the latency of the two realizations.

    python examples/shiftadd.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler  # noqa: E402
from compiler.ops import kernel, quant as q  # noqa: E402
from examples.digits import load_digits_split  # noqa: E402
from examples.make_demo_model import train  # noqa: E402


def layers(cm) -> list[tuple[str, str, str, str]]:
    """(layer, fused kernel, weight code, realization) of every integer conv / linear of the final IR."""
    out = []
    for n in cm.graph.nodes:
        if n.op is kernel.fused:
            for m in n.attrs["body"].nodes:
                if m.op not in (q.conv, q.matmul):
                    continue
                w = m.inputs[1]         # a constant, or the VNNI kernels' packed constant unpacked
                if w.is_const or (w.producer is not None and w.producer.op.name == "layout.unpack_weight"):
                    out.append((m.name, n.name, m.attrs["weight_code"] or "int8", m.attrs["realization"] or "-"))
    return out


def main() -> None:
    model, _ = train(logits=True)
    xtr, _, xte, yte = load_digits_split()
    n = len(xte)
    example = (torch.from_numpy(xte),)
    calib = [xtr[i:i + n] for i in range(0, len(xtr) - n + 1, n)]
    quant = dict(quantize="int8", integer_only=True, calibration=calib)
    builds = {
        "FP32": compiler.compile(model, example_inputs=example),
        "INT8": compiler.compile(model, example_inputs=example, **quant),
        "shift/add 2-term": compiler.compile(model, example_inputs=example, shiftadd=2, **quant),
        "shift/add 1-term": compiler.compile(model, example_inputs=example, shiftadd=1, **quant),
        "shift/add 2-term, shift kernel": compiler.compile(model, example_inputs=example, shiftadd=2,
                                                           shiftadd_kernel="shift", **quant),
    }
    outs = {name: cm.run(xte)[0] for name, cm in builds.items()}
    print(f"digits test set ({n} images), integer-only builds calibrated on {len(calib) * n} training images\n")
    for name, cm in builds.items():
        lat = cm.benchmark(xte, warmup=3, repeat=20)["median_ms"]
        print(f"{name:32} accuracy {np.mean(outs[name].argmax(1) == yte) * 100:6.2f}%   "
              f"{lat:6.2f} ms per batch of {n}")
    same = np.array_equal(outs["shift/add 2-term"], outs["shift/add 2-term, shift kernel"])
    print(f"\nthe two realizations of the 2-term build give identical outputs: {same}")
    for name in ("shift/add 2-term", "shift/add 1-term", "shift/add 2-term, shift kernel"):
        print(f"\n{name}: per layer (output error: relative L2 against the INT8 layer on the calibration data)")
        fit = {r["name"]: r for r in builds[name].report.shiftadd}
        for layer, fused, code, real in layers(builds[name]):
            r = fit.get(layer, {})
            err = r.get("output_error", float("nan"))
            pred = "  ".join(f"{k} {r[k + '_s'] * 1e3:.4f} ms" for k in ("vnni", "shift") if r.get(k + "_s"))
            print(f"  {layer:22} in {fused:24} {code:7} realization {real:6} output error {err * 100:5.2f}%"
                  f"  predicted {pred or '-'}")


if __name__ == "__main__":
    main()
