"""Integer-only INT8 for a detector: a YOLOv8n-style model (SiLU after every conv, C2f split/concat, nearest
upsampling, the DFL softmax head) calibrated on photographs, compiled with `--integer-only`: every activation
becomes one exact table lookup fused into its conv, and nothing computes in float between the input's
quantize and the output's dequantize. A conv output that only its activation reads gets a grid over where
the activation changes (passes/active_range.py); on a CPU with AVX-512 VBMI the lookups are register permutes
(compiler/backends/tvm_byte_lookup.py).

    python examples/integer_only_detector.py [yolov8n_reduced | yolov8n | mobilenetv3_large_reduced | ...]

Prints the integer graph's ops and how many grids were narrowed, checks the compiled model against the
reference interpreter (bit-exact), compares the output with the FP32 model on other photographs, with and
without the narrowed grids, and counts the permute instructions in the compiled code.
"""
from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler  # noqa: E402
from compiler import interp  # noqa: E402
from examples.real_arch import MODELS, build  # noqa: E402
from examples.real_arch.photos import photo_batch  # noqa: E402
from passes.quantize import QuantConfig  # noqa: E402
from passes.quantize_pipeline import quantize_graph  # noqa: E402
from passes.verify_integer_only import verify_integer_only  # noqa: E402


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "yolov8n_reduced"
    model, x = build(name)
    size = MODELS[name][1]
    g = compiler.import_model(model, example_inputs=(x,))
    calib = list(photo_batch(size, 8, seed=0)[:, None])
    ig, stats = quantize_graph(g, calib, QuantConfig(integer_only=True))
    flat, _ = quantize_graph(g, calib, QuantConfig(integer_only=True, active_range=False))
    narrowed = sum(1 for n in ig.nodes for v in n.outputs
                   if getattr(v.type.quant, "active_range", None) is not None)
    print(f"{name}: {len(g.nodes)} float nodes -> {len(ig.nodes)} integer nodes; "
          f"float nodes left: {len(verify_integer_only(ig))}; grids narrowed to their activation: {narrowed}")
    print("  " + ", ".join(f"{op} x{k}" for op, k in Counter(n.op.name for n in ig.nodes).most_common(8)))

    cm = compiler.compile(ig, target="llvm -num-threads=1")
    for i, xe in enumerate(photo_batch(size, 3, seed=1)[:, None]):
        got, want = cm.run(xe)[0], interp.run(ig, xe)[0]
        ref = interp.run(stats.graph, xe)[0].ravel().astype(np.float64)
        cos = [ref @ o.ravel() / (np.linalg.norm(ref) * np.linalg.norm(o)) for o in (got, interp.run(flat, xe)[0])]
        print(f"  photo {i}: compiled == interpreter: {np.array_equal(got, want)}; cosine with FP32 {cos[0]:.4f} "
              f"(calibrated ranges as they are: {cos[1]:.4f})")
    asm = cm.executable.source("asm")
    print(f"  byte-table lookups: {len(re.findall(r'vperm[it]2b', asm))} vpermi2b/vpermt2b, "
          f"{asm.count('vpinsrb')} vpinsrb in the compiled code")


if __name__ == "__main__":
    main()
