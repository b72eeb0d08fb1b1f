"""The memory plan of a small CNN: every intermediate buffer of the final IR at an offset in one arena.

    python examples/memory_plan.py

Prints each buffer (the values stored in it: a reshape's view and an in-place result share their
input's bytes), its size, its live range in kernel steps and its offset; then the arena against the
live-bytes lower bound, the best greedy placement, the planner that won and whether it proved the arena
minimal; the fast-tier (per-core L2) mapping with its predicted DRAM traffic saved; and writes the
memory timeline (time x address, lower bound marked) to out/memory_timeline.png and the tiered one to
out/memory_timeline_tiered.png. The executable does not yet place its buffers by this plan; it is
reported (manifest.json, cm.memory, cm.memory_timeline(path)).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compiler.api import final_ir
from compiler.memory_timeline import draw
from examples import zoo
from passes.memory import live_bytes


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = zoo.export_onnx(zoo.randomize_batch_norm(zoo.small_resnet()), torch.randn(1, 3, 32, 32),
                               Path(tmp) / "small_resnet.onnx")
        results: dict = {}
        g, _ = final_ir(str(path), "llvm", results=results)
    plan = results["memory"]
    print(f"{len(g.nodes)} nodes in the final IR, {len(plan.buffers)} arena buffers "
          f"(graph inputs, outputs and constants are not in the arena)\n")
    print(f"{'offset':>8} {'bytes':>8}  live    values")
    for b, off in sorted(zip(plan.buffers, plan.offsets), key=lambda bo: (bo[0].start, bo[1])):
        shared = " <- ".join(b.values)
        print(f"{off:>8} {b.size:>8}  {b.start:>2}-{b.end:<2}   {shared}")
    live = live_bytes(list(plan.buffers))
    peak = live.index(max(live))
    print(f"\nlive bytes peak at step {peak} ({g.nodes[peak].name}): {max(live)}")
    print(plan)
    tier = plan.fast_tier
    print(f"fast tier: {[plan.buffers[i].values[0] for i in tier.chosen]} in the lowest "
          f"{tier.capacity_bytes} bytes ({tier.planner}{', proven best' if tier.optimal else ''}); "
          f"arena with them there first: {tier.arena_bytes} bytes")
    out = Path(__file__).resolve().parents[1] / "out"
    out.mkdir(exist_ok=True)
    print("timeline:", draw(plan, out / "memory_timeline.png"),
          draw(plan, out / "memory_timeline_tiered.png", tiered=True))


if __name__ == "__main__":
    main()
