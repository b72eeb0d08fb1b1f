"""plan_memory: every intermediate buffer of the final IR at an offset in one arena, and which of them
a fast tier (the per-core L2) keeps.

Liveness runs over the final node order (time t = index of a top-level node; a node's inputs and
outputs are all live at its time). Graph inputs, graph outputs and constants are not arena buffers.
Two rules let values share a buffer:

  alias    `nn.reshape`'s output is a view of its input (same bytes, row-major);
  in-place an elementwise node (passes.fusion.ELEMENTWISE: relu, add, requant, cast, q.table, ...)
           writes into an input of its output's shape and byte size that dies at it; a `k.fused` node
           does the same with an operand that reaches its output only through such elementwise body
           ops (a residual add's other operand), never with what its anchor reads.

The lower bound is the most bytes live at any time. Offsets come from passes.memory_search: greedy
placements in several orders, then CP-SAT (proves optimality) on small problems or a tree search over
placement orders on large ones. The two-level mapping picks, by bytes accessed over size, the
short-lived buffers that fit together in a fast region of the arena's lowest bytes (reused first,
so they land on cache-warm lines) and reports the DRAM traffic that saves by that estimate.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.ir import Graph, Node, Value
from compiler.ops import kernel, shape
from passes.base import PassContext, register_pass
from passes.memory_search import SearchLimits, place_around, search, select_fast

ALIGNMENT = {"llvm": 64, "cuda": 256}
FALLBACK_FAST_BYTES = 1 << 20   # the fast tier when the machine does not say its L2 size


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
class FastTier:
    """The two-level mapping: which buffers a fast region [0, capacity_bytes) of the arena holds, the
    offsets of every buffer with them placed there first, and the predicted DRAM traffic saved (every
    access to a fast-tier buffer counted as a cache hit: an estimate, not a measurement)."""

    capacity_bytes: int
    chosen: tuple[int, ...]           # buffer indices in the fast region
    offsets: tuple[int, ...]          # per buffer, with the chosen ones below capacity_bytes
    arena_bytes: int                  # the arena of this placement (>= the size-only plan's)
    traffic_bytes: int                # bytes all arena buffers are read and written, per run
    saved_bytes: int                  # of those, the fast-tier buffers' share
    planner: str
    optimal: bool                     # CP-SAT proved no packing into the region saves more

    def to_json(self) -> dict[str, Any]:
        return {"capacity_bytes": self.capacity_bytes, "chosen": list(self.chosen),
                "offsets": list(self.offsets), "arena_bytes": self.arena_bytes,
                "traffic_bytes": self.traffic_bytes, "saved_bytes": self.saved_bytes,
                "planner": self.planner, "optimal": self.optimal}


@dataclass(frozen=True)
class MemoryPlan:
    buffers: tuple[Buffer, ...]
    offsets: tuple[int, ...]          # per buffer, a multiple of `alignment`
    arena_bytes: int
    lower_bound_bytes: int
    alignment: int
    planner: str                      # which method gave the kept placement
    optimal: bool                     # proven minimal (equals the bound, or CP-SAT proved it)
    greedy_bytes: int                 # the best greedy placement, before the search
    fast_tier: FastTier | None = None
    search_seconds: float = field(default=0.0, compare=False)

    @property
    def ratio(self) -> float:
        """Arena over the live-bytes lower bound (1.0 when it is reached)."""
        return self.arena_bytes / self.lower_bound_bytes if self.lower_bound_bytes else 1.0

    def offset_of(self) -> dict[str, int]:
        """value name -> byte offset in the arena."""
        return {v: o for b, o in zip(self.buffers, self.offsets) for v in b.values}

    def to_json(self) -> dict[str, Any]:
        """What the artifact's manifest records (deterministic: no timings). `timeline` is one
        [start, end, offset, bytes] per buffer, what memory_timeline draws."""
        out = {"arena_bytes": self.arena_bytes, "lower_bound_bytes": self.lower_bound_bytes,
               "ratio": round(self.ratio, 4), "planner": self.planner, "optimal": self.optimal,
               "alignment": self.alignment, "buffers": len(self.buffers),
               "greedy_bytes": self.greedy_bytes,
               "timeline": [[b.start, b.end, o, b.size] for b, o in zip(self.buffers, self.offsets)]}
        if self.fast_tier is not None:
            out["fast_tier"] = self.fast_tier.to_json()
        return out

    def __str__(self) -> str:
        tier = self.fast_tier
        fast = (f"; fast tier {tier.capacity_bytes} bytes: {len(tier.chosen)} buffers, predicted DRAM "
                f"traffic saved {tier.saved_bytes} of {tier.traffic_bytes} bytes" if tier else "")
        return (f"arena {self.arena_bytes} bytes for {len(self.buffers)} buffers, lower bound "
                f"{self.lower_bound_bytes} ({self.ratio:.4f}x), greedy {self.greedy_bytes}; {self.planner}"
                f"{', proven optimal' if self.optimal else ''}{fast}")


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

def plan_buffers(buffers: list[Buffer], alignment: int = 1, limits: SearchLimits = SearchLimits(),
                 *, benefit: list[float] | None = None, fast_bytes: int | None = None) -> MemoryPlan:
    """Offsets for `buffers` (sizes already aligned): the best greedy placement, then the search
    (passes.memory_search). With `benefit` (bytes accessed per buffer) and `fast_bytes`, also the
    two-level mapping."""
    t0 = time.perf_counter()
    bound = lower_bound(buffers)
    if not buffers:
        return MemoryPlan((), (), 0, 0, alignment, "empty", True, 0)
    best, greedy_bytes, proven = search(buffers, bound, limits)
    tier = None
    if benefit is not None and fast_bytes:
        tier = fast_tier(buffers, benefit, fast_bytes - fast_bytes % max(alignment, 1), limits)
    return MemoryPlan(tuple(buffers), tuple(best.offsets), best.height, bound, alignment, best.planner,
                      proven, greedy_bytes, tier, time.perf_counter() - t0)


def fast_tier(buffers: list[Buffer], benefit: list[float], capacity: int,
              limits: SearchLimits = SearchLimits()) -> FastTier:
    """The buffers the fast region [0, capacity) keeps (passes.memory_search.select_fast) and the
    arena with them placed there first, every other buffer around them."""
    sel = select_fast(buffers, benefit, capacity, limits)
    placed = place_around(buffers, sel.offsets)
    return FastTier(capacity, tuple(sel.chosen), tuple(placed.offsets), placed.height,
                    int(sum(benefit)), int(sel.benefit), sel.planner, sel.optimal)


def access_bytes(g: Graph, buffers: list[Buffer]) -> list[float]:
    """Per buffer, the bytes the kernels touching it move per run: each value written once by its
    producer and read once by each node that takes it (the benefit of keeping it in the fast tier)."""
    reads: dict[str, int] = {}
    nbytes: dict[str, int] = {}
    for n in g.nodes:
        for v in n.inputs:
            reads[v.name] = reads.get(v.name, 0) + 1
        for v in n.outputs:
            nbytes[v.name] = v.type.nbytes
    return [float(sum(nbytes.get(v, 0) * (1 + reads.get(v, 0)) for v in b.values)) for b in buffers]


def l2_bytes(root: str = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """This machine's per-core L2 (data or unified) cache in bytes, from sysfs; 1 MiB when unknown."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    for index in sorted(Path(root).glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if level == "2" and kind in ("Unified", "Data") and size:
            return int(size.rstrip("KMG")) * units.get(size[-1], 1)
    return FALLBACK_FAST_BYTES


def plan(g: Graph, alignment: int = 64, limits: SearchLimits = SearchLimits(), *,
         fast_bytes: int | None = None) -> MemoryPlan:
    """The arena plan of the final IR `g`; with `fast_bytes`, also the two-level mapping."""
    bufs = buffers_of(g, alignment)
    benefit = access_bytes(g, bufs) if fast_bytes else None
    return plan_buffers(bufs, alignment, limits, benefit=benefit, fast_bytes=fast_bytes)


@register_pass("plan_memory")
def plan_memory(g: Graph, ctx: PassContext) -> Graph:
    """Liveness, arena offsets of every intermediate buffer and, on the CPU, the fast-tier (per-core L2)
    mapping (an analysis: ctx.results['memory'])."""
    kind = getattr(ctx.target, "kind", "llvm")
    fast = l2_bytes() if kind == "llvm" else None
    ctx.results["memory"] = plan(g, ALIGNMENT.get(kind, 64), fast_bytes=fast)
    return g
