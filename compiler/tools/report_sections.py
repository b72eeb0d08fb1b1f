"""Sections of `compile report` kept out of report.py: the pass pipeline with each pass's time and the
memory plan, as text lines and as HTML, plus the small HTML helpers (tables, bars) every section uses."""
from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any


def bar(frac: float, cls: str = "") -> str:
    """A horizontal bar `frac` of 20em long (clipped to [0, 1])."""
    return f'<div class="bar {cls}" style="width:{max(0.0, min(frac, 1.0)) * 20:.2f}em"></div>'


def table(head: Sequence[str], rows: Sequence[Sequence[Any]], numeric: set[int] = frozenset()) -> str:
    """An HTML table; cells are HTML already (escape text before); columns in `numeric` align right."""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(
        f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


# -- the pass pipeline -------------------------------------------------------------------------------
def passes_text(times: Sequence[tuple[str, float]]) -> list[str]:
    """One line per pass run, in order, with its seconds and share of all passes' time."""
    total = sum(t for _, t in times) or 1.0
    width = max(24, *(len(n) + 2 for n, _ in times))
    return [f"passes ({len(times)} runs, {total:.2f} s, verification excluded):",
            *(f"  {i:>3} {n:<{width}}{t:>9.3f} s{t / total:>8.1%}" for i, (n, t) in enumerate(times))]


def passes_html(times: Sequence[tuple[str, float]], img: str = "") -> list[str]:
    """The pipeline as run: every pass in order with its time, share and a bar."""
    total = sum(t for _, t in times) or 1.0
    peak = max((t for _, t in times), default=1.0) or 1.0
    rows = [(str(i), html.escape(n), f"{t:.3f}", f"{t / total:.1%}", bar(t / peak)) for i, (n, t) in enumerate(times)]
    return ['<section id="passes"><h2>Pass pipeline</h2>',
            f"<p>{len(times)} pass runs, {total:.2f} s in all (the verifier's time between passes excluded); "
            "times are from this report's own compile, never stored in the artifact.</p>", img,
            table(["#", "pass", "s", "share", ""], rows, {0, 2, 3}), "</section>"]


# -- the memory plan ---------------------------------------------------------------------------------
def _kib(n: int | float) -> str:
    return f"{n / 1024:,.1f} KiB" if n >= 1024 else f"{int(n)} bytes"


def memory_facts(mem: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows of the manifest's memory object: arena, lower bound, planner, Relax's own
    planner, the fast tier."""
    rows = [("arena", f"{_kib(mem['arena_bytes'])} ({mem.get('buffers', '?')} buffers, "
                      f"alignment {mem.get('alignment', '?')})"),
            ("lower bound (max live bytes)", f"{_kib(mem['lower_bound_bytes'])}; arena / bound "
                                             f"{mem.get('ratio', 1.0):.4f}x"),
            ("planner", f"{mem.get('planner', '?')}{', proven optimal' if mem.get('optimal') else ''}"
                        + (f"; best greedy {_kib(mem['greedy_bytes'])}" if "greedy_bytes" in mem else ""))]
    if mem.get("tvm_planner_bytes"):
        relax = mem["tvm_planner_bytes"]
        rows.append(("Relax's planner (StaticPlanBlockMemory)",
                     f"{_kib(relax)}; arena / Relax {mem['arena_bytes'] / relax:.2f}x"))
    tier = mem.get("fast_tier")
    if tier:
        saved = tier["saved_bytes"] / tier["traffic_bytes"] if tier.get("traffic_bytes") else 0.0
        rows.append(("fast tier (per-core L2)",
                     f"{_kib(tier['capacity_bytes'])}: {len(tier['chosen'])} buffers by {tier['planner']}"
                     f"{', optimal' if tier.get('optimal') else ''}; predicted DRAM traffic saved "
                     f"{_kib(tier['saved_bytes'])} of {_kib(tier['traffic_bytes'])} ({saved:.0%}) per run"))
    return rows


def memory_text(mem: dict[str, Any]) -> list[str]:
    return ["memory plan:", *(f"  {k:<40}{v}" for k, v in memory_facts(mem))]


def memory_html(mem: dict[str, Any], img: str = "") -> list[str]:
    rows = [(html.escape(k), html.escape(v)) for k, v in memory_facts(mem)]
    return ['<section id="memory"><h2>Memory plan</h2>',
            "<p>The activations of the final IR in one arena, each buffer at the offset the planner chose "
            "from their liveness. The TVM executable does not allocate by this plan yet: it allocates what "
            "Relax's planner row says.</p>",
            table(["", ""], rows), img, "</section>"]
