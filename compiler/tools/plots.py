"""The report's pictures, drawn with matplotlib (Agg: files only, no display): per-kernel time, SQNR per
layer, time per pass, the memory timeline and the energy by op. Each is a PNG the HTML page shows with
an <img>; a section without data has no picture."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAX_BARS = 40          # more rows than this: the largest ones, the rest summed into one bar


def bar_chart(path: Path, labels: Sequence[str], values: Sequence[float], *, title: str, xlabel: str,
              colours: Sequence[str] | None = None) -> Path:
    """A horizontal bar per label (first label on top), written as a PNG at `path`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [lb if len(lb) <= 48 else "..." + lb[-45:] for lb in labels]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.26 * len(labels)), dpi=100)
    ys = range(len(labels))
    ax.barh(ys, values, color=list(colours) if colours else "#4a7ebb")
    ax.set_yticks(list(ys), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _largest(items: Sequence[tuple[str, float]], what: str) -> list[tuple[str, float]]:
    """At most MAX_BARS items, largest first; the remainder as one "(N other WHAT)" item."""
    items = sorted(items, key=lambda kv: -kv[1])
    if len(items) <= MAX_BARS:
        return items
    rest = items[MAX_BARS - 1:]
    return [*items[:MAX_BARS - 1], (f"({len(rest)} other {what})", sum(v for _, v in rest))]


def kernel_chart(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Time per kernel per run (ms), the op it runs in the label."""
    items = _largest([(f"{r['kernel']} ({r['op']})" if r.get("op") else r["kernel"], r["ms"]) for r in rows],
                     "kernels")
    return bar_chart(path, [k for k, _ in items], [v for _, v in items],
                     title="time per kernel (instrumented runs)", xlabel="ms per run")


def sqnr_chart(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """SQNR (dB) of every quantized layer against the float model, in graph order."""
    rows = [r for r in rows if r.get("sqnr_db") is not None][:MAX_BARS * 2]
    colours = ["#c0392b" if r["sqnr_db"] < 20 else "#4a7ebb" for r in rows]
    return bar_chart(path, [f"{r['layer']} ({r['op']})" for r in rows], [r["sqnr_db"] for r in rows],
                     title="SQNR per layer vs float (red: below 20 dB)", xlabel="dB", colours=colours)


def pass_chart(path: Path, times: Sequence[tuple[str, float]]) -> Path:
    """Seconds per pass, in the order they ran (a pass run in several stages shows once per run)."""
    items = list(times)
    if len(items) > MAX_BARS * 2:
        items = _largest(items, "passes")
    return bar_chart(path, [n for n, _ in items], [s for _, s in items],
                     title="time per pass (this compile)", xlabel="seconds")


def energy_chart(path: Path, energy: dict[str, Any]) -> Path:
    """Estimated energy per inference by op (and the activations' DRAM traffic), in uJ."""
    items = [(op, o["pJ"] / 1e6) for op, o in energy["by_op"].items()]
    items.append(("activations (DRAM)", energy["activations"]["pJ"] / 1e6))
    items = _largest(items, "ops")
    return bar_chart(path, [k for k, _ in items], [v for _, v in items],
                     title="energy per inference by op (estimate)", xlabel="uJ")


def draw_all(rep: dict[str, Any], folder: Path) -> dict[str, str]:
    """Every picture the report's data allows, into `folder`: section id -> file name."""
    out: dict[str, str] = {}
    if rep.get("profile", {}).get("rows"):
        out["kernels"] = kernel_chart(folder / "kernels.png", rep["profile"]["rows"]).name
    if rep.get("quant_rows") and any(r.get("sqnr_db") is not None for r in rep["quant_rows"]):
        out["quantization"] = sqnr_chart(folder / "sqnr.png", rep["quant_rows"]).name
    if rep.get("pass_times"):
        out["passes"] = pass_chart(folder / "passes.png", rep["pass_times"]).name
    if rep.get("memory", {}).get("timeline"):
        from compiler.memory_timeline import draw
        out["memory"] = draw(rep["memory"], folder / "memory.png").name
    if rep.get("energy", {}).get("by_op"):
        out["energy"] = energy_chart(folder / "energy.png", rep["energy"]).name
    return out
