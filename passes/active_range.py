"""active_range: the 8-bit grid of a value that only an activation reads covers only where the activation
changes.

A conv's output read by hardswish alone is quantized (the requant after the accumulator), then looked up
(table_islands). Every value below -3 gives hardswish 0, so the grid steps spent there carry nothing; the
same holds below 0 for ReLU, outside [-3, 3] for hardsigmoid, and, once the output is on its own 8-bit grid,
far out on SiLU, sigmoid, GELU, tanh. For a float value v whose every use lies in one elementwise island
(FLOAT_ELEMENTWISE nodes that read only v, each other and scalar constants), with calibrated range [lo, hi]:

    lo' = the largest x such that every exit of the island, on its own grid, is one integer on [lo, x]
    hi' = the smallest x such that the same holds on [x, hi]

evaluated on 4097 points of [lo, hi] with the ops' own references (the exits: island values read outside it,
graph outputs, and values that get a grid of their own; an exit without a grid must be exactly flat there),
then widened by one step of v's new grid, so the grid's end still lies in the flat part. v's grid spans
[lo', hi'] and the requant clamps to it: clamping moves no exit's integer (a one-step error there would hit
every clamped element alike, a bias the next layer sums), and v's step shrinks by (hi - lo) / (hi' - lo').
A side is trimmed only when that removes at least 5% of [lo, hi].
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Optional

import numpy as np

from compiler.ir import Graph, Node, Value
from passes.table_islands import FLOAT_ELEMENTWISE, MAX_NODES

POINTS = 4097
LEVELS = 255
# an exit's grid: (scale, zero point, qmin, qmax), or None where it stays float
Grid = Optional[tuple[float, int, int, int]]
MIN_TRIM = 0.05                  # a side is trimmed only when that removes at least this share of the range


def _scalar(v: Value) -> bool:
    return v.is_const and np.asarray(v.const).size == 1


def island_of(v: Value, uses: Mapping, order: Mapping[int, int]) -> list[Node] | None:
    """The elementwise island that reads v, in graph order: every use of v is in it (else None)."""
    members, nodes, pending = {id(v)}, [], [u for u, _ in uses.get(v, [])]
    seen: set[int] = set()
    while pending:
        pending.sort(key=lambda n: order[id(n)])
        n = pending.pop(0)
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.op not in FLOAT_ELEMENTWISE or len(n.outputs) != 1 or \
                not all(id(i) in members or _scalar(i) for i in n.inputs):
            continue
        nodes.append(n)
        if len(nodes) > MAX_NODES:
            return None
        members.add(id(n.outputs[0]))
        pending.extend(u for u, _ in uses.get(n.outputs[0], []))
    inside = {id(n) for n in nodes}
    if not nodes or any(id(u) not in inside for u, _ in uses.get(v, [])):
        return None
    return nodes


def _evaluate(v: Value, nodes: list[Node], xs: np.ndarray) -> dict[int, np.ndarray]:
    env = {id(v): xs}

    def read(a: Value) -> np.ndarray:
        return np.asarray(a.const).reshape(()) if a.is_const else env[id(a)]
    for n in nodes:
        env[id(n.outputs[0])] = np.asarray(n.op.reference([read(a) for a in n.inputs], n.attrs)[0])
    return env


def _flat_prefix(f: np.ndarray) -> int:
    """The last index k with f[:k+1] all one value."""
    change = np.nonzero(f != f[0])[0]
    return int(change[0]) - 1 if change.size else f.size - 1


def _on_grid(f: np.ndarray, grid: Grid) -> np.ndarray:
    if grid is None:
        return f
    scale, zp, qmin, qmax = grid
    return np.clip(np.rint(f / scale) + zp, qmin, qmax)


def active_range(v: Value, nodes: list[Node], exits: list[Value], stats,
                 grid: Callable[[Value], Grid]) -> tuple[float, float] | None:
    """(lo', hi') of the module docstring for v, read by island `nodes` with `exits`; None when it does not
    narrow v's calibrated range."""
    lo, hi = stats[v.name].lo, stats[v.name].hi
    if not hi > lo or not exits:
        return None
    xs = np.linspace(lo, hi, POINTS).astype(np.float32)
    env = _evaluate(v, nodes, xs)
    first, last = POINTS - 1, 0
    for e in exits:
        f = np.broadcast_to(env[id(e)], xs.shape).astype(np.float64)
        if not np.all(np.isfinite(f)):
            return None
        q = _on_grid(f, grid(e))
        first = min(first, _flat_prefix(q))
        last = max(last, POINTS - 1 - _flat_prefix(q[::-1]))
    if first < MIN_TRIM * (POINTS - 1):
        first = 0
    if last > (1 - MIN_TRIM) * (POINTS - 1):
        last = POINTS - 1
    if last <= first or (first, last) == (0, POINTS - 1):
        return None
    margin = int(np.ceil((last - first) / LEVELS)) + 1        # one step of the new grid, in points
    first = max(first - margin, 0) if first else 0
    last = min(last + margin, POINTS - 1) if last < POINTS - 1 else last
    return (float(xs[first]) if first else lo), (float(xs[last]) if last < POINTS - 1 else hi)


def active_ranges(g: Graph, stats, quantized: Callable[[Value], bool], grid: Callable[[Value], Grid],
                  uses: Mapping | None = None) -> dict[str, tuple[float, float]]:
    """{value name: (lo', hi')} for every calibrated float value of `g` that only an elementwise island
    reads and whose range that island narrows. `quantized(value)`: whether a value gets a grid; `grid(value)`:
    that grid (None for a value that stays float)."""
    uses = uses if uses is not None else g.uses()
    order = {id(n): i for i, n in enumerate(g.nodes)}
    outputs = {id(o) for o in g.outputs}
    out: dict[str, tuple[float, float]] = {}
    for v in [*g.inputs, *(o for n in g.nodes for o in n.outputs)]:
        if v.is_const or not v.type.dtype.is_float or v.name not in stats or not quantized(v):
            continue
        nodes = island_of(v, uses, order)
        if nodes is None:
            continue
        inside = {id(n) for n in nodes}
        values = [n.outputs[0] for n in nodes]
        exits = [w for w in values if id(w) in outputs or quantized(w)
                 or any(id(u) not in inside for u, _ in uses.get(w, []))]
        if any(w.name not in stats for w in exits):
            continue
        found = active_range(v, nodes, exits, stats, grid)
        if found is not None:
            out[v.name] = found
    return out
