"""plan_memory: every intermediate buffer of the final IR at an offset in one arena.

Liveness runs over the final node order (time t = index of a top-level node; a node's inputs and
outputs are all live at its time). Graph inputs, graph outputs and constants are not arena buffers.
Two rules let values share a buffer:

  alias    `nn.reshape`'s output is a view of its input (same bytes, row-major);
  in-place an elementwise node (passes.fusion.ELEMENTWISE: relu, add, requant, cast, q.table, ...)
           writes into an input of its output's shape and byte size that dies at it; a `k.fused` node
           does the same with an operand that reaches its output only through such elementwise body
           ops (a residual add's other operand), never with what its anchor reads.

The lower bound is the most bytes live at any time. Offsets come from best-fit / first-fit greedy
placement in several orders (size, lifetime, area, conflict degree, start, as XLA's heap simulator
does), then a search that keeps the best result: a branch-and-bound over placement orders for small
problems (exact: placing every buffer at its lowest free offset, in the order of the offsets of an
optimal packing, reproduces that packing or a lower one, so it suffices to search orders whose
offsets do not decrease) and a seeded local search over orders otherwise. Both have deterministic
work budgets, so the plan, and the artifact, are the same on every run.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from compiler.ir import Graph, Node, Value
from compiler.ops import kernel, shape
from passes.base import PassContext, register_pass

ALIGNMENT = {"llvm": 64, "cuda": 256}
EXACT_MAX_BUFFERS = 64          # branch-and-bound on problems up to this many buffers
EXACT_NODE_BUDGET = 100_000     # placements the exact search may try
LOCAL_SEARCH_EVALS = 400        # orders the local search may evaluate


@dataclass(frozen=True)
class Buffer:
    """One arena buffer: the values stored in it (aliases and in-place results share one), its size
    (rounded up to the alignment) and its live range [start, end] in node indices."""

    values: tuple[str, ...]
    size: int
    start: int
    end: int

    def overlaps(self, other: Buffer) -> bool:
        return self.start <= other.end and other.start <= self.end


@dataclass(frozen=True)
class MemoryPlan:
    buffers: tuple[Buffer, ...]
    offsets: tuple[int, ...]          # per buffer, a multiple of `alignment`
    arena_bytes: int
    lower_bound_bytes: int
    alignment: int
    planner: str                      # which method gave the kept placement
    optimal: bool                     # proven minimal (equals the bound, or the exact search finished)
    greedy_bytes: int                 # the best greedy placement, before the search
    search_seconds: float = field(default=0.0, compare=False)

    def offset_of(self) -> dict[str, int]:
        """value name -> byte offset in the arena."""
        return {v: o for b, o in zip(self.buffers, self.offsets) for v in b.values}

    def to_json(self) -> dict[str, Any]:
        """What the artifact's manifest records (deterministic: no timings)."""
        return {"arena_bytes": self.arena_bytes, "lower_bound_bytes": self.lower_bound_bytes,
                "planner": self.planner, "optimal": self.optimal, "alignment": self.alignment,
                "buffers": len(self.buffers), "greedy_bytes": self.greedy_bytes}

    def __str__(self) -> str:
        ratio = self.arena_bytes / self.lower_bound_bytes if self.lower_bound_bytes else 1.0
        return (f"arena {self.arena_bytes} bytes for {len(self.buffers)} buffers, lower bound "
                f"{self.lower_bound_bytes} ({ratio:.4f}x), greedy {self.greedy_bytes}; {self.planner}"
                f"{', proven optimal' if self.optimal else ''}")


# -- liveness -------------------------------------------------------------------------------------

def _in_place_operands(n: Node) -> list[int]:
    """Operand indices the node may overwrite with its (single) output when they die at it."""
    from passes.fusion import ELEMENTWISE
    if len(n.outputs) != 1:
        return []
    out = n.outputs[0].type
    same = [i for i, v in enumerate(n.inputs)
            if v.type.shape == out.shape and v.type.nbytes == out.nbytes]
    if n.op in ELEMENTWISE:
        return same
    if n.op is kernel.fused:
        body = n.attrs["body"]
        return [i for i in same if _reaches_output_elementwise(body, body.inputs[i])]
    return []


def _reaches_output_elementwise(body: Graph, v: Value) -> bool:
    """Every body op downstream of `v` is elementwise on v's elements: elementwise ops of its shape,
    or, for a blocked v, an unpack of it, elementwise ops of the unpacked shape and a pack back to the
    same block (no anchor, broadcast or other layout reads it)."""
    from compiler.ops import layout
    from passes.fusion import ELEMENTWISE
    frontier, logical, seen = {id(v)}, v.type.shape, False
    for n in body.nodes:
        if not any(id(x) in frontier for x in n.inputs):
            continue
        if n.op is layout.unpack and n.inputs[0] is v and len(logical) == 5:
            logical = n.outputs[0].type.shape
        elif n.op is layout.pack and n.outputs[0].type.shape == v.type.shape:
            pass
        elif n.op not in ELEMENTWISE or any(o.type.shape != logical for o in n.outputs):
            return False
        frontier.update(id(o) for o in n.outputs)
        seen = True
    return seen and any(id(o) in frontier for o in body.outputs)


def buffers_of(g: Graph, alignment: int = 1) -> list[Buffer]:
    """The arena buffers of `g` with their live ranges, after aliasing and in-place sharing."""
    parent: dict[int, int] = {}
    by_id: dict[int, Value] = {}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: int, b: int) -> None:
        parent[find(b)] = find(a)

    birth: dict[int, int] = {}
    last: dict[int, int] = {}
    for t, n in enumerate(g.nodes):
        for v in n.inputs:
            last[id(v)] = t
        for v in n.outputs:
            parent[id(v)], by_id[id(v)], birth[id(v)] = id(v), v, t
            last.setdefault(id(v), t)
    pinned = {id(v) for v in g.outputs}             # graph outputs are not arena buffers
    for n in g.nodes:                                # views first: a reshape shares its input's bytes
        if n.op is shape.reshape and id(n.inputs[0]) in parent:
            union(id(n.inputs[0]), id(n.outputs[0]))
        elif n.op is shape.reshape:
            pinned.add(id(n.outputs[0]))             # a view of a graph input or a constant
    group_end: dict[int, int] = {}
    group_pinned: set[int] = set()
    for x in parent:
        r = find(x)
        group_end[r] = max(group_end.get(r, -1), last[x])
        if x in pinned:
            group_pinned.add(r)
    for t, n in enumerate(g.nodes):
        if n.op is shape.reshape:
            continue
        for i in _in_place_operands(n):
            src, out = n.inputs[i], n.outputs[0]
            if id(src) not in parent:
                continue
            rs, ro = find(id(src)), find(id(out))
            if rs == ro or group_end[rs] != t or rs in group_pinned or ro in group_pinned:
                continue
            union(id(src), id(out))
            group_end[rs] = max(group_end[rs], group_end.pop(ro))
            break
    groups: dict[int, list[Value]] = {}
    for x in parent:
        groups.setdefault(find(x), []).append(by_id[x])
    out = []
    for r, vals in groups.items():
        if r in group_pinned or any(id(v) in pinned for v in vals):
            continue
        size = max(v.type.nbytes for v in vals)
        names = tuple(v.name for v in sorted(vals, key=lambda v: (birth[id(v)], v.name)))
        out.append(Buffer(names, _align(size, alignment), min(birth[id(v)] for v in vals),
                          max(last[id(v)] for v in vals)))
    out.sort(key=lambda b: (b.start, b.values[0]))
    return out


def _align(n: int, a: int) -> int:
    return max(a, -(-n // a) * a) if a > 1 else n


def live_bytes(buffers: list[Buffer]) -> list[int]:
    """Bytes live at each node time."""
    horizon = max((b.end for b in buffers), default=-1) + 1
    delta = [0] * (horizon + 1)
    for b in buffers:
        delta[b.start] += b.size
        delta[b.end + 1] -= b.size
    out, cur = [], 0
    for d in delta[:horizon]:
        cur += d
        out.append(cur)
    return out


def lower_bound(buffers: list[Buffer]) -> int:
    return max(live_bytes(buffers), default=0)


# -- placement ------------------------------------------------------------------------------------

def conflicts(buffers: list[Buffer]) -> list[list[int]]:
    """For each buffer, the buffers whose live ranges overlap its own."""
    order = sorted(range(len(buffers)), key=lambda i: buffers[i].start)
    out: list[list[int]] = [[] for _ in buffers]
    active: list[int] = []
    for i in order:
        active = [j for j in active if buffers[j].end >= buffers[i].start]
        for j in active:
            out[i].append(j)
            out[j].append(i)
        active.append(i)
    return out


def place(order: list[int], sizes: list[int], conf: list[list[int]], fit: str) -> tuple[list[int], int]:
    """Place buffers in `order`, each in the smallest free gap among the buffers it conflicts with
    ("best") or the lowest ("first"); (offsets, arena bytes)."""
    off = [-1] * len(sizes)
    top = 0
    for i in order:
        s = sizes[i]
        busy = sorted((off[j], off[j] + sizes[j]) for j in conf[i] if off[j] >= 0)
        cur, chosen, gap = 0, -1, None
        for a, b in busy:
            if a - cur >= s:
                if fit == "first":
                    chosen = cur
                    break
                if gap is None or a - cur < gap:
                    chosen, gap = cur, a - cur
            cur = max(cur, b)
        off[i] = cur if chosen < 0 else chosen
        top = max(top, off[i] + s)
    return off, top


def greedy_orders(buffers: list[Buffer], conf: list[list[int]]) -> dict[str, list[int]]:
    """The orderings XLA's heap simulator tries, largest first, ties by start time."""
    idx = range(len(buffers))
    life = [b.end - b.start + 1 for b in buffers]
    degree = [sum(buffers[j].size for j in conf[i]) for i in idx]
    keys = {
        "size": lambda i: (-buffers[i].size, -life[i], buffers[i].start),
        "lifetime": lambda i: (-life[i], -buffers[i].size, buffers[i].start),
        "area": lambda i: (-buffers[i].size * life[i], buffers[i].start),
        "conflict": lambda i: (-degree[i], -buffers[i].size, buffers[i].start),
        "start": lambda i: (buffers[i].start, -buffers[i].size),
    }
    return {name: sorted(idx, key=lambda i, k=k: (k(i), i)) for name, k in keys.items()}


@dataclass
class _Best:
    height: int
    offsets: list[int]
    planner: str


def _greedy(buffers: list[Buffer], conf: list[list[int]]) -> _Best:
    sizes = [b.size for b in buffers]
    best = None
    for name, order in greedy_orders(buffers, conf).items():
        for fit in ("best", "first"):
            off, h = place(order, sizes, conf, fit)
            if best is None or h < best.height:
                best = _Best(h, off, f"greedy {fit}-fit by {name}")
    return best


def exact_search(buffers: list[Buffer], conf: list[list[int]], best: _Best, bound: int,
                 budget: int = EXACT_NODE_BUDGET) -> bool:
    """Branch and bound over lowest-fit placement orders with non-decreasing (offset, index); improves
    `best` in place. True when the search finished (best is then optimal)."""
    n, sizes = len(buffers), [b.size for b in buffers]
    horizon = max(b.end for b in buffers) + 1
    off = [-1] * n
    rem_live = [0] * horizon               # bytes of unplaced buffers live at each time
    for b in buffers:
        for t in range(b.start, b.end + 1):
            rem_live[t] += b.size
    tried = 0

    def lowest(i: int) -> int:
        cur = 0
        for a, b in sorted((off[j], off[j] + sizes[j]) for j in conf[i] if off[j] >= 0):
            if a - cur >= sizes[i]:
                return cur
            cur = max(cur, b)
        return cur

    def floor_bound(last: int) -> int:
        # every unplaced buffer goes at or above `last`; at each time they and the placed bytes above
        # `last` are disjoint, so the arena is at least last + both
        above = [0] * horizon
        for j in range(n):
            if off[j] >= 0 and off[j] + sizes[j] > last:
                part = off[j] + sizes[j] - max(off[j], last)
                for t in range(buffers[j].start, buffers[j].end + 1):
                    above[t] += part
        return max((last + rem_live[t] + above[t] for t in range(horizon) if rem_live[t]), default=0)

    def dfs(placed: int, last: tuple[int, int], height: int) -> bool:
        nonlocal tried
        if placed == n:
            if height < best.height:
                best.height, best.offsets, best.planner = height, list(off), "exact branch-and-bound"
            return True
        if best.height <= bound:
            return True
        cands = []
        for i in range(n):
            if off[i] < 0:
                o = lowest(i)
                if (o, i) > last and max(height, o + sizes[i]) < best.height:
                    cands.append((o, -sizes[i], i))
        cands.sort()
        for o, _, i in cands:
            if tried >= budget:
                return False
            tried += 1
            off[i] = o
            for t in range(buffers[i].start, buffers[i].end + 1):
                rem_live[t] -= sizes[i]
            h = max(height, o + sizes[i])
            ok = True
            if h < best.height and floor_bound(o) < best.height:
                ok = dfs(placed + 1, (o, i), h)
            for t in range(buffers[i].start, buffers[i].end + 1):
                rem_live[t] += sizes[i]
            off[i] = -1
            if not ok:
                return False
        return True

    return dfs(0, (-1, -1), 0)


def local_search(buffers: list[Buffer], conf: list[list[int]], best: _Best, bound: int,
                 evals: int = LOCAL_SEARCH_EVALS, seed: int = 0) -> None:
    """Seeded search over placement orders: move a buffer at the peak, or a random one, earlier, and
    keep the order when the arena does not grow. Improves `best` in place."""
    rng = random.Random(seed)
    sizes = [b.size for b in buffers]
    order = sorted(range(len(buffers)), key=lambda i: best.offsets[i])
    cur_h = place(order, sizes, conf, "first")[1]
    for k in range(evals):
        if best.height <= bound:
            return
        cand = list(order)
        offs = place(cand, sizes, conf, "first")[0]
        peak = [i for i in range(len(sizes)) if offs[i] + sizes[i] == cur_h]
        i = rng.choice(peak) if peak and rng.random() < 0.7 else rng.randrange(len(cand))
        pos = cand.index(i)
        cand.pop(pos)
        cand.insert(rng.randrange(pos + 1), i)
        fit = "first" if k % 2 == 0 else "best"
        off, h = place(cand, sizes, conf, fit)
        if h <= cur_h:
            order, cur_h = cand, h
            if h < best.height:
                best.height, best.offsets, best.planner = h, off, "local search over orders"


def plan_buffers(buffers: list[Buffer], alignment: int = 1, *, exact_budget: int = EXACT_NODE_BUDGET,
                 local_evals: int = LOCAL_SEARCH_EVALS) -> MemoryPlan:
    """Offsets for `buffers` (sizes already aligned): the best greedy placement, then the search."""
    t0 = time.perf_counter()
    bound = lower_bound(buffers)
    if not buffers:
        return MemoryPlan((), (), 0, 0, alignment, "empty", True, 0)
    conf = conflicts(buffers)
    best = _greedy(buffers, conf)
    greedy = best.height
    proven = best.height <= bound
    if not proven and len(buffers) <= EXACT_MAX_BUFFERS:
        proven = exact_search(buffers, conf, best, bound, exact_budget)
    if not proven:
        local_search(buffers, conf, best, bound, local_evals)
        proven = best.height <= bound
    return MemoryPlan(tuple(buffers), tuple(best.offsets), best.height, bound, alignment, best.planner,
                      proven, greedy, time.perf_counter() - t0)


def plan(g: Graph, alignment: int = 64, **search: int) -> MemoryPlan:
    """The arena plan of the final IR `g`."""
    return plan_buffers(buffers_of(g, alignment), alignment, **search)


@register_pass("plan_memory")
def plan_memory(g: Graph, ctx: PassContext) -> Graph:
    """Liveness and arena offsets of every intermediate buffer (an analysis: ctx.results['memory'])."""
    kind = getattr(ctx.target, "kind", "llvm")
    ctx.results["memory"] = plan(g, ALIGNMENT.get(kind, 64))
    return g
