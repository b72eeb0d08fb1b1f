"""Arena bytes of the memory planner against the live-bytes lower bound, on the final IR.

    python benchmarks/memory_plan.py [--models resnet50 bert] [--target llvm]

For each model: the arena buffers of the final IR (after reshape views and in-place epilogues), the sum
of their sizes (no reuse), the lower bound (most bytes live at once), the best greedy placement, the
kept placement and its planner, whether it is proven minimal, and the planner's time. TVM's own planner
is not measured here (its storage plan is not read back from the built module).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import export_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet50", "bert"])
    ap.add_argument("--target", default="llvm")
    args = ap.parse_args()
    from compiler.api import final_ir
    from compiler.target import Target
    from passes.memory import ALIGNMENT, plan
    align = ALIGNMENT[Target.parse(args.target).kind]
    print("| model | buffers | no reuse MB | lower bound MB | greedy MB | arena MB | arena / bound | planner "
          "| optimal | plan ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        path, _ = export_model(name)
        g, _ = final_ir(str(path), args.target, disable_passes=("plan_memory",))
        t0 = time.perf_counter()
        p = plan(g, align)
        ms = (time.perf_counter() - t0) * 1e3
        mb = 1 / 2**20
        print(f"| {name} | {len(p.buffers)} | {sum(b.size for b in p.buffers) * mb:.2f} | "
              f"{p.lower_bound_bytes * mb:.2f} | {p.greedy_bytes * mb:.2f} | {p.arena_bytes * mb:.2f} | "
              f"{p.arena_bytes / p.lower_bound_bytes:.4f} | {p.planner} | {p.optimal} | {ms:.1f} |", flush=True)


if __name__ == "__main__":
    main()
