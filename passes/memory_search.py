"""The offset search behind plan_memory: greedy placements in several orders, an exact CP-SAT model for
small problems, and a Monte-Carlo tree search over placement orders (mallocGame) for large ones.

A problem is a list of items with `.size`, `.start` and `.end` (inclusive node times); a placement gives
each an offset so that no two items live at the same time share a byte, and its height (the arena) is
the highest offset + size. Every search here is deterministic, so the plan, and the artifact, are the
same on every run: CP-SAT runs one worker under a deterministic time limit, the tree search a fixed
number of rollouts from a fixed seed.
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Protocol

from passes.base import steps


class Interval(Protocol):
    size: int
    start: int
    end: int


@dataclass
class Placement:
    """Offsets per item, the arena they need and which method found them."""

    height: int
    offsets: list[int]
    planner: str


# -- greedy ---------------------------------------------------------------------------------------

def conflicts(items: Sequence[Interval]) -> list[list[int]]:
    """For each item, the items whose live ranges overlap its own."""
    order = sorted(range(len(items)), key=lambda i: items[i].start)
    out: list[list[int]] = [[] for _ in items]
    active: list[int] = []
    for i in order:
        active = [j for j in active if items[j].end >= items[i].start]
        for j in active:
            out[i].append(j)
            out[j].append(i)
        active.append(i)
    return out


def lowest_gap(size: int, busy: list[tuple[int, int]], fit: str = "first") -> int:
    """The offset for `size` bytes among the sorted busy [a, b) ranges: the lowest gap that holds it
    ("first"), the smallest such gap ("best"), or the top of the busy ranges when none does."""
    cur, chosen, gap = 0, -1, None
    for a, b in busy:
        if a - cur >= size:
            if fit == "first":
                return cur
            if gap is None or a - cur < gap:
                chosen, gap = cur, a - cur
        cur = max(cur, b)
    return cur if chosen < 0 else chosen


def place(order: Sequence[int], sizes: Sequence[int], conf: list[list[int]], fit: str,
          fixed: dict[int, int] | None = None) -> tuple[list[int], int]:
    """Place items in `order`, each in a gap among the already placed items it conflicts with (see
    lowest_gap); items in `fixed` keep their given offsets. (offsets, height)."""
    off = [-1] * len(sizes)
    for i, o in (fixed or {}).items():
        off[i] = o
    top = max((o + sizes[i] for i, o in (fixed or {}).items()), default=0)
    for i in order:
        if off[i] >= 0:
            continue
        busy = sorted((off[j], off[j] + sizes[j]) for j in conf[i] if off[j] >= 0)
        off[i] = lowest_gap(sizes[i], busy, fit)
        top = max(top, off[i] + sizes[i])
    return off, top


def greedy_orders(items: Sequence[Interval], conf: list[list[int]]) -> dict[str, list[int]]:
    """The orderings XLA's heap simulator tries, largest first, ties by start time."""
    idx = range(len(items))
    life = [b.end - b.start + 1 for b in items]
    degree = [sum(items[j].size for j in conf[i]) for i in idx]
    keys = {
        "size": lambda i: (-items[i].size, -life[i], items[i].start),
        "lifetime": lambda i: (-life[i], -items[i].size, items[i].start),
        "area": lambda i: (-items[i].size * life[i], items[i].start),
        "conflict": lambda i: (-degree[i], -items[i].size, items[i].start),
        "start": lambda i: (items[i].start, -items[i].size),
    }
    return {name: sorted(idx, key=lambda i, k=k: (k(i), i)) for name, k in keys.items()}


def greedy(items: Sequence[Interval], conf: list[list[int]]) -> Placement:
    """The lowest of best-fit and first-fit placements in every greedy order."""
    sizes = [b.size for b in items]
    best = Placement(sum(sizes) + 1, [], "")
    for name, order in greedy_orders(items, conf).items():
        for fit in ("best", "first"):
            off, h = place(order, sizes, conf, fit)
            if h < best.height:
                best = Placement(h, off, f"greedy {fit}-fit by {name}")
    return best


# -- exact: CP-SAT --------------------------------------------------------------------------------

def live_cliques(items: Sequence[Interval]) -> list[list[int]]:
    """The maximal sets of items live at one time (for intervals, pairwise overlap means a common time):
    the live set just before each time at which some item dies."""
    ends = sorted({b.end for b in items})
    return [[i for i, b in enumerate(items) if b.start <= t <= b.end] for t in ends]


def _solve(model, time_limit: float):
    """(solver, status) of CP-SAT on `model` with one worker and a deterministic time limit (no wall
    clock): the same result on every run and machine, so equal inputs give equal artifacts."""
    from ortools.sat.python import cp_model
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    solver.parameters.max_deterministic_time = time_limit
    return solver, solver.solve(model)


def cpsat(items: Sequence[Interval], incumbent: Placement, bound: int,
          time_limit: float) -> tuple[Placement, bool]:
    """Minimize the arena exactly: offsets are variables, live ranges fixed, one no-overlap-2D over
    (address, time) plus a no-overlap per maximal live set (redundant, it propagates better); the
    incumbent is the hint and the upper bound. (the best placement, True when proven optimal)."""
    from ortools.sat.python import cp_model
    unit = reduce(math.gcd, (b.size for b in items))     # offsets of lowest-fit packings are sums of sizes
    m = cp_model.CpModel()
    cap = incumbent.height // unit
    top = m.new_int_var(-(-bound // unit), cap, "top")
    offs, xs, ys = [], [], []
    for i, b in enumerate(items):
        s = b.size // unit
        o = m.new_int_var(0, cap - s, f"o{i}")
        xs.append(m.new_fixed_size_interval_var(o, s, f"x{i}"))
        ys.append(m.new_fixed_size_interval_var(b.start, b.end - b.start + 1, f"t{i}"))
        m.add(o + s <= top)
        m.add_hint(o, incumbent.offsets[i] // unit)
        offs.append(o)
    m.add_no_overlap_2d(xs, ys)
    for clique in live_cliques(items):
        if len(clique) > 1:
            m.add_no_overlap([xs[i] for i in clique])
    m.minimize(top)
    solver, status = _solve(m, time_limit)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return incumbent, False
    height = int(solver.value(top)) * unit
    proven = status == cp_model.OPTIMAL
    if height < incumbent.height:
        return Placement(height, [int(solver.value(o)) * unit for o in offs], "cp-sat"), proven
    return incumbent, proven


# -- large: Monte-Carlo tree search over placement orders (mallocGame) -----------------------------

@dataclass
class _Node:
    """A prefix of the placement order; children by the next item placed."""

    children: dict[int, _Node] = field(default_factory=dict)
    visits: int = 0
    best: float = 0.0            # the best normalized reward of any rollout through this node


def offset_order(p: Placement, sizes: Sequence[int]) -> list[int]:
    """Items by offset: lowest-fit placement in this order reproduces `p` or a lower one (each item's
    old offset stays free of the items before it, which can only have moved down)."""
    return sorted(range(len(sizes)), key=lambda i: (p.offsets[i], -sizes[i], i))


def _descend(root: _Node, prior: list[int], width: int, explore: float,
             rng: random.Random) -> tuple[list[int], list[_Node]]:
    """Selection and expansion: follow the UCT child among the `width` next items of `prior` until a
    node has an untried one; expand it. (the order so far, the nodes on the path)."""
    node, order, path, placed = root, [], [root], set()
    while len(order) < len(prior):
        cands = [i for i in prior if i not in placed][:width]
        untried = [i for i in cands if i not in node.children]
        if untried:
            i = untried[0] if not node.children else rng.choice(untried)
            node.children[i] = _Node()
            order.append(i)
            path.append(node.children[i])
            return order, path
        log_n = math.log(node.visits + 1)
        i = max(cands, key=lambda c: node.children[c].best
                + explore * math.sqrt(log_n / (node.children[c].visits + 1)))
        node = node.children[i]
        order.append(i)
        path.append(node)
        placed.add(i)
    return order, path


def _rollout(order: list[int], prior: list[int], rng: random.Random) -> list[int]:
    """The default policy: complete `order` with the rest of `prior`, each position jittered by
    Gaussian noise of a scale drawn per rollout (0: the prior itself)."""
    chosen = set(order)
    rest = [i for i in prior if i not in chosen]
    sigma = rng.choice((0.0, 0.7, 2.0, 6.0))
    keyed = sorted((k + rng.gauss(0.0, sigma), k, i) for k, i in enumerate(rest))
    return order + [i for _, _, i in keyed]


def _peak_move(prior: list[int], offsets: list[int], sizes: Sequence[int], height: int,
               rng: random.Random) -> list[int]:
    """A local move of the incumbent: one item, at the peak (mostly) or any, moved earlier in its order
    (placed before the items that pushed it up)."""
    peak = [k for k, i in enumerate(prior) if offsets[i] + sizes[i] == height]
    pos = rng.choice(peak) if peak and rng.random() < 0.7 else rng.randrange(len(prior))
    out = list(prior)
    out.insert(rng.randrange(pos + 1), out.pop(pos))
    return out


def tree_search(items: Sequence[Interval], conf: list[list[int]], incumbent: Placement, bound: int,
                rollouts: int, seed: int = 0, width: int = 3, explore: float = 0.4) -> Placement:
    """mallocGame's framing: placement as a one-player game whose moves choose the next item (placed at
    its lowest free offset), played from the incumbent's order with UCT over the `width` next items and
    noisy rollouts. Every other rollout is instead a local move of the incumbent's order (a peak item
    placed earlier), accepted when the arena does not grow; an accepted order restarts the game from
    it. Keeps the best placement of `rollouts` rollouts."""
    rng = random.Random(seed)
    sizes = [b.size for b in items]
    best = incumbent
    prior, off_prior, h_prior = offset_order(best, sizes), best.offsets, best.height
    root = _Node()
    with steps(rollouts, "memory search") as bar:
        for r in range(rollouts):
            if best.height <= bound:
                break
            fit = "first" if r % 4 < 2 else "best"
            if r % 2:
                order = _peak_move(prior, off_prior, sizes, h_prior, rng)
                off, h = place(order, sizes, conf, fit)
                if h <= h_prior:
                    prior, off_prior, h_prior, root = order, off, h, _Node()
            else:
                order, path = _descend(root, prior, width, explore, rng)
                off, h = place(_rollout(order, prior, rng), sizes, conf, fit)
                reward = (h_prior - h) / max(h_prior - bound, 1) + 1.0   # 1 at the incumbent, 2 at the bound
                for node in path:
                    node.visits += 1
                    node.best = max(node.best, reward)
                if h < h_prior:
                    prior, off_prior, h_prior, root = offset_order(Placement(h, off, ""), sizes), off, h, _Node()
            if h < best.height:
                best = Placement(h, off, "tree search over placement orders")
            bar.update(r + 1)
    return best


# -- the whole search -----------------------------------------------------------------------------

@dataclass(frozen=True)
class SearchLimits:
    """exact_max: CP-SAT for problems up to this many items; time_limit: its deterministic time
    (about seconds) for the offsets; fast_time_limit: the same for the fast-tier selection (small by
    default: that mapping is a prediction the executable does not act on yet, so it gets less of the
    compile time); rollouts: the tree search's games; seed: its random seed."""

    exact_max: int = 200
    time_limit: float = 2.0
    fast_time_limit: float = 0.25
    rollouts: int = 300
    seed: int = 0


def search(items: Sequence[Interval], bound: int, limits: SearchLimits = SearchLimits()
           ) -> tuple[Placement, int, bool]:
    """(the best placement found, the best greedy height, proven optimal). Greedy first; stop at the
    bound; else CP-SAT on small problems, then, unless it proved optimality, the tree search."""
    conf = conflicts(items)
    best = greedy(items, conf)
    first = best.height
    if best.height <= bound:
        return best, first, True
    if len(items) <= limits.exact_max and limits.time_limit > 0:
        best, proven = cpsat(items, best, bound, limits.time_limit)
        if proven:
            return best, first, True
    best = tree_search(items, conf, best, bound, limits.rollouts, limits.seed)
    return best, first, best.height <= bound


# -- two-level mapping: which items live in the fast region [0, capacity) ---------------------------

@dataclass
class Selection:
    """The items in the fast region, their offsets there, their total benefit and who chose them."""

    chosen: list[int]
    offsets: dict[int, int]
    benefit: float
    planner: str
    optimal: bool = False


def _select(order: Sequence[int], items: Sequence[Interval], conf: list[list[int]], capacity: int,
            benefit: Sequence[float]) -> Selection:
    """Take items in `order` while each fits at its lowest free offset below `capacity` among the items
    already taken that live at the same time."""
    off: dict[int, int] = {}
    for i in order:
        busy = sorted((off[j], off[j] + items[j].size) for j in conf[i] if j in off)
        o = lowest_gap(items[i].size, busy, "first")
        if o + items[i].size <= capacity:
            off[i] = o
    chosen = sorted(off)
    return Selection(chosen, off, sum(benefit[i] for i in chosen), "greedy by benefit over size")


def _select_cpsat(items: Sequence[Interval], cands: list[int], capacity: int, benefit: Sequence[float],
                  incumbent: Selection, time_limit: float) -> Selection:
    """The most benefit that packs into the fast region, exactly: optional intervals in a
    no-overlap-2D over (address, time), the greedy selection as the hint."""
    from ortools.sat.python import cp_model
    unit = reduce(math.gcd, (items[i].size for i in cands), capacity)
    scale = 1e6 / max(max(benefit[i] for i in cands), 1e-9)      # integer objective, 6 digits
    m = cp_model.CpModel()
    xs, ys, use, offs = [], [], {}, {}
    for i in cands:
        s, b = items[i].size // unit, items[i]
        use[i] = m.new_bool_var(f"in{i}")
        offs[i] = m.new_int_var(0, capacity // unit - s, f"o{i}")
        xs.append(m.new_optional_fixed_size_interval_var(offs[i], s, use[i], f"x{i}"))
        ys.append(m.new_optional_fixed_size_interval_var(b.start, b.end - b.start + 1, use[i], f"t{i}"))
        m.add_hint(use[i], i in incumbent.offsets)
        m.add_hint(offs[i], incumbent.offsets.get(i, 0) // unit)
    m.add_no_overlap_2d(xs, ys)
    m.maximize(sum(round(benefit[i] * scale) * use[i] for i in cands))
    solver, status = _solve(m, time_limit)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return incumbent
    off = {i: int(solver.value(offs[i])) * unit for i in cands if solver.value(use[i])}
    total = sum(benefit[i] for i in off)
    if total <= incumbent.benefit:
        incumbent.optimal = status == cp_model.OPTIMAL
        return incumbent
    return Selection(sorted(off), off, total, "cp-sat", status == cp_model.OPTIMAL)


def select_fast(items: Sequence[Interval], benefit: Sequence[float], capacity: int,
                limits: SearchLimits = SearchLimits()) -> Selection:
    """XLA memory-space-assignment style: the items to keep in [0, capacity), greedily by benefit over
    size (shorter-lived first on ties), then improved by CP-SAT on small problems or by randomized
    rollouts over the selection order on large ones. Keeps the highest total benefit."""
    conf = conflicts(items)
    cands = [i for i, b in enumerate(items) if b.size <= capacity and benefit[i] > 0]
    density = sorted(cands, key=lambda i: (-benefit[i] / items[i].size,
                                           items[i].end - items[i].start, i))
    best = _select(density, items, conf, capacity, benefit)
    if len(best.chosen) == len(cands):            # every candidate fits: nothing to improve
        best.optimal = True
        return best
    if len(cands) <= limits.exact_max and limits.fast_time_limit > 0:
        return _select_cpsat(items, cands, capacity, benefit, best, limits.fast_time_limit)
    rng = random.Random(limits.seed)
    for _ in range(limits.rollouts):
        sigma = rng.choice((0.7, 2.0, 6.0))
        order = [i for _, i in sorted((k + rng.gauss(0.0, sigma), i) for k, i in enumerate(density))]
        cand = _select(order, items, conf, capacity, benefit)
        if cand.benefit > best.benefit:
            best = Selection(cand.chosen, cand.offsets, cand.benefit, "rollouts over the selection order")
    return best


def place_around(items: Sequence[Interval], fixed: dict[int, int]) -> Placement:
    """The lowest greedy placement of every item with the `fixed` ones kept at their offsets."""
    conf = conflicts(items)
    sizes = [b.size for b in items]
    best = Placement(sum(sizes) + max((o for o in fixed.values()), default=0) + 1, [], "")
    for name, order in greedy_orders(items, conf).items():
        for fit in ("best", "first"):
            off, h = place(order, sizes, conf, fit, fixed)
            if h < best.height:
                best = Placement(h, off, f"greedy {fit}-fit by {name} around the fast region")
    return best
