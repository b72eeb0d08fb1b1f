"""The memory timeline: every arena buffer as a rectangle in (time, address), the live-bytes lower bound
and the arena top marked, drawn as a PNG with matplotlib.

It reads the manifest's `memory` object (MemoryPlan.to_json(): `timeline` rows [start, end, offset,
bytes]), so a loaded artifact draws the same picture as a fresh compile. With `tiered`, it draws the
two-level mapping's placement instead, the fast region shaded and its buffers coloured.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _rows(memory: dict[str, Any], tiered: bool) -> tuple[list[tuple[int, int, int, int]], set[int], int]:
    """(start, end, offset, bytes) per buffer, the fast-tier buffer indices, the arena top."""
    rows = [tuple(r) for r in memory.get("timeline", [])]
    tier = memory.get("fast_tier") if tiered else None
    if tier is None:
        return rows, set(), memory["arena_bytes"]
    placed = [(s, e, o, n) for (s, e, _, n), o in zip(rows, tier["offsets"])]
    return placed, set(tier["chosen"]), tier["arena_bytes"]


def draw(memory: Any, path: str | os.PathLike, *, tiered: bool = False, title: str | None = None) -> Path:
    """Write the timeline of `memory` (a MemoryPlan or its to_json() dict) to `path` (PNG).

    Raises ValueError when the memory object has no timeline (an artifact from before it was recorded)."""
    import matplotlib
    matplotlib.use("Agg")                     # no display: write files only
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    if hasattr(memory, "to_json"):
        memory = memory.to_json()
    if "timeline" not in memory:
        raise ValueError("the memory plan has no timeline (recompile to record one)")
    rows, fast, top = _rows(memory, tiered)
    scale, unit = _unit(max(top, 1))
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    patches, colours = [], []
    cmap = plt.get_cmap("tab20")
    for k, (start, end, off, size) in enumerate(rows):
        patches.append(Rectangle((start - 0.45, off / scale), end - start + 0.9, size / scale))
        colours.append("tab:red" if k in fast else cmap(k % 20))
    ax.add_collection(PatchCollection(patches, facecolors=colours, edgecolors="black",
                                      linewidths=0.3, alpha=0.85))
    bound = memory["lower_bound_bytes"]
    ax.axhline(bound / scale, color="black", linestyle="--", linewidth=1,
               label=f"lower bound (max live) {bound / scale:.2f} {unit}")
    ax.axhline(top / scale, color="tab:blue", linewidth=1, label=f"arena {top / scale:.2f} {unit}")
    if tiered and memory.get("fast_tier"):
        cap = memory["fast_tier"]["capacity_bytes"] / scale
        ax.axhspan(0, cap, color="tab:red", alpha=0.08, label=f"fast region {cap:.2f} {unit}")
    horizon = max((e for _, e, _, _ in rows), default=0) + 1
    ax.set_xlim(-1, horizon)
    ax.set_ylim(0, max(top, bound) / scale * 1.15 or 1)      # room for the legend
    ax.set_xlabel("time (kernel index in the final IR)")
    ax.set_ylabel(f"arena offset ({unit})")
    ax.set_title(title or f"memory plan: {len(rows)} buffers, {memory.get('planner', '')}"
                 f"{', proven optimal' if memory.get('optimal') else ''}")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out


def _unit(top: int) -> tuple[float, str]:
    """The byte scale the axis reads in."""
    for scale, unit in ((1 << 20, "MiB"), (1 << 10, "KiB")):
        if top >= 4 * scale:
            return float(scale), unit
    return 1.0, "bytes"
