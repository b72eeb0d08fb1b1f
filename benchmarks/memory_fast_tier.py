"""The two-level mapping, predicted and measured: each model compiled twice from the same ONNX file, with
the executable's intermediates placed by the size-only arena plan (`-fast-tier=off`, the default) and by
the fast-tier mapping (`-fast-tier=l2`: the buffers with the most bytes moved per byte of size, packed into
the arena's first L2-size bytes, everything else around them), timed interleaved in one process.

    PYTHONPATH=. python benchmarks/memory_fast_tier.py [--models resnet50 bert] [--repeats 3]

Prints per model the mapping's prediction (the arena bytes the kernels move per run and the share the fast
region holds, counting every access to it as a cache hit) and, per repeat, the median ms of each build
(30 interleaved rounds after 5 warmups, 1 thread) with their ratio. Outputs are checked bit-identical.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import export_model, interleaved_medians  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet50", "bert"], choices=["resnet50", "bert"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import compiler
    mib = 1 / 2**20
    print("| model | fast region MiB | buffers in it | arena MiB (size-only -> tiered) | predicted traffic saved "
          "| off ms | l2 ms | l2 / off |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        path, x = export_model(name)
        plain = compiler.compile(str(path), target="llvm -num-threads=1")
        tiered = compiler.compile(str(path), target="llvm -num-threads=1 -fast-tier=l2")
        same = all(np.array_equal(a, b) for a, b in zip(plain.run(x), tiered.run(x)))
        if not same:
            raise SystemExit(f"{name}: the two placements give different outputs")
        exe = tiered.memory["executable"]
        tier = exe["fast_tier"]
        for r in range(args.repeats):
            m = interleaved_medians({"off": lambda: plain.run(x), "l2": lambda: tiered.run(x)}, 5, 30)
            print(f"| {name} (run {r + 1}) | {tier['capacity_bytes'] * mib:.2f} | {tier['buffers']} of "
                  f"{exe['buffers']} | {tier['size_only_arena_bytes'] * mib:.2f} -> {exe['arena_bytes'] * mib:.2f} | "
                  f"{tier['saved_bytes'] * mib:.1f} of {tier['traffic_bytes'] * mib:.1f} MiB "
                  f"({tier['saved_bytes'] / tier['traffic_bytes']:.0%}) | {m['off']:.2f} | {m['l2']:.2f} | "
                  f"{m['l2'] / m['off']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
