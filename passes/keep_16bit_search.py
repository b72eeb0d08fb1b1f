"""--keep-16bit auto[:BUDGET]: the fewest conv / matmul layers whose activations stay on int16 grids for an
accuracy budget (QuantConfig.keep_16bit: HAWQV3's mixed precision applied to the activations). Run by the
annotate pass (passes/quantize_pipeline.py) on its calibration statistics.

Candidates. Every integer conv / matmul layer, except those whose int32 accumulator range analysis cannot bound
at 16 bits (passes/range_analysis.py: |x| <= 32767 times the real weights' per-channel sums), found on the graph
with all of them kept.

Order, measured. Each layer's weight is the larger of two measurements on the first RANK_BATCHES calibration
batches (the network's own amplification of its rounding, which its SQNR alone does not show):
- its gain: from the all-8-bit graph, the loss that keeping it alone removes;
- its drop: from the graph with every candidate kept, the loss that putting it alone back to 8 bits adds.
The gain finds the layers whose rounding the rest of the network amplifies (MobileNetV3's early ones). It misses
a layer whose error only shows once the others are wide, such as the last one, whose output grid rounds the result
itself: on MobileNetV3-Large, ordered by gain alone, the bisection needed 52 of 64 layers, the 52nd lifting the
worst crop from 0.985 to 0.995; with both measurements, 24. The drop sees such a layer, and little else: a value is on an int16 grid when any layer that reads or writes it is kept, so
an inner layer put back to 8 bits keeps its values wide through its neighbours. 2 builds and runs per layer.

Search. Keeping the k layers of most gain, k is bisected over [0, candidates]: each k is built into the integer
graph the compile would make (the caller's `build`) and run by the reference interpreter on every calibration
batch, its loss measured end to end against the FP32 graph (cosC: the worst calibration sample's cosine with
FP32, `worst_sample_cosine`, stricter than --accuracy-budget's cosine of all samples flattened together; Npt: top-1
points lost, with labels, as passes/accuracy_budget.py counts them; metricM: the user's accuracy metric, its
worst calibration batch, as there). The smallest measured k that meets the budget is taken (more 16-bit layers tend to help but need not monotonically, so every
measured k is a candidate). `InfeasibleBudget` when every candidate kept is still short of the budget.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from compiler.ir import Graph
from passes.accuracy_budget import AccuracyTarget, parse_accuracy_budget
from passes.base import steps
from passes.mixed_precision import InfeasibleBudget
from passes.sensitivity import float_outputs

AUTO = "auto"
DEFAULT_BUDGET = "cos0.99"


def auto_budget(names: Sequence[str], labels: Any = None, metric: Any = None) -> AccuracyTarget | None:
    """The budget of keep_16bit = ["auto"] or ["auto:BUDGET"] (an accuracy_budget string: cos0.99, 0.5pt,
    metric0.05 with `metric`), None for a plain list of names. InvalidInput (via parse_accuracy_budget) for a
    malformed budget."""
    autos = [x for x in names if x == AUTO or x.startswith(AUTO + ":")]
    if not autos:
        return None
    from compiler.diagnostics import InvalidInput
    if len(names) != 1:
        raise InvalidInput(f"--keep-16bit {','.join(names)}: 'auto' chooses the layers itself and takes no names",
                           hint="use --keep-16bit auto[:cos0.99] alone, or a list of layer names")
    budget = autos[0].partition(":")[2] or DEFAULT_BUDGET
    target = parse_accuracy_budget(budget, labels, flag="--keep-16bit auto", metric=metric)
    if not isinstance(target, AccuracyTarget):
        raise InvalidInput(f"--keep-16bit {autos[0]}: the budget is a cosine (cos0.99), top-1 points (0.5pt) "
                           "or your metric's bound (metric0.05)")
    return target


@dataclass
class Keep16Search:
    """What the search measured: the chosen layers, their loss (cosine or points), every (k, loss) tried, the
    candidates, most sensitive first, and the layers left out because their 16-bit accumulator could overflow."""

    target: AccuracyTarget
    layers: tuple[str, ...]
    measured: float
    trials: list[tuple[int, float]] = field(default_factory=list)
    order: tuple[str, ...] = ()
    overflowing: tuple[str, ...] = ()
    graph_order: tuple[str, ...] = ()          # every integer layer, in graph order

    def positions(self) -> list[int]:
        """Where the kept layers sit among all the integer layers (0: the first)."""
        return sorted(self.graph_order.index(x) for x in self.layers)

    def __str__(self) -> str:
        unit = self.target.unit
        tried = ", ".join(f"{k}: {m:.6f}" for k, m in sorted(self.trials))
        skip = f"; not candidates (int32 could overflow at 16 bits): {', '.join(self.overflowing)}" \
            if self.overflowing else ""
        return (f"--keep-16bit auto ({self.target}): {len(self.layers)} of {len(self.order)} layers at 16 bits, "
                f"{unit} {self.measured:.6f} on the calibration data (layers kept: {unit}: {tried}){skip}")


def layer_name(name: str, layers: Sequence[str]) -> str | None:
    """The float layer an integer node was made from: its name, or the longest layer name it starts with."""
    if name in layers:
        return name
    hits = [x for x in layers if name.startswith(x)]
    return max(hits, key=len) if hits else None


RANK_BATCHES = 4


def worst_sample_cosine(ref: Sequence[Sequence[Any]], got: Sequence[Sequence[Any]]) -> float:
    """The smallest cosine with FP32 of any calibration sample (a row of a batch's output), over every output:
    the budget holds sample by sample, not only on average (MobileNetV3-Large met cos0.99 over all 8 calibration
    crops flattened together, yet its worst evaluation photograph measured 0.984)."""
    import numpy as np
    worst = 1.0
    for r_outs, g_outs in zip(ref, got):
        for r, o in zip(r_outs, g_outs):
            r = np.asarray(r, np.float64).reshape(np.shape(r)[0] if np.ndim(r) > 1 else 1, -1)
            o = np.asarray(o, np.float64).reshape(r.shape)
            for a, b in zip(r, o):
                den = np.linalg.norm(a) * np.linalg.norm(b)
                worst = min(worst, float(a @ b / den) if den > 0 else float(np.array_equal(a, b)))
    return worst


def search_keep_16bit(g: Graph, batches: Sequence[Any], target: AccuracyTarget, layers: Sequence[str],
                      build: Callable[[tuple[str, ...]], Graph],
                      overflowing: Callable[[Graph], set[str]]) -> Keep16Search:
    """The search of the module docstring over float graph `g`'s `layers` (graph order). `build(names)` is the
    integer graph with those layers kept at 16 bits; `overflowing(graph)` names its nodes whose accumulators range
    analysis cannot bound."""
    import numpy as np

    from compiler import interp
    from passes.accuracy_budget import _top1
    from passes.quantize import batch_args

    ref = float_outputs(g, batches)

    def loss(qg: Graph, upto: int | None = None) -> float:
        bs = batches[:upto] if upto else batches
        got = [[np.asarray(o, np.float64) for o in interp.run(qg, *batch_args(qg, b))] for b in bs]
        if target.kind == "cosine":
            return worst_sample_cosine(ref[:len(got)], got)
        if target.kind == "metric":
            return target.metric_loss(ref[:len(got)], got)
        labels = target.labels[:sum(len(o[0]) for o in got)]
        return 100.0 * (float(np.mean(_top1(ref[:len(got)]) == labels)) - float(np.mean(_top1(got) == labels)))

    def worse(a: float, b: float) -> float:
        """How much loss a is worse than loss b."""
        return b - a if target.kind == "cosine" else a - b

    reused: dict[frozenset, Graph] = {}         # the all-8-bit and all-kept graphs, measured more than once

    def built(keep: tuple[str, ...]) -> Graph:
        key = frozenset(keep)
        if key in reused:
            return reused[key]
        qg = build(keep)
        if not keep or key == frozenset(layers) or key == frozenset(cands):
            reused[key] = qg
        return qg

    cands: list[str] = list(layers)
    trials: dict[int, float] = {0: loss(built(()))}
    if target.met(trials[0]):
        return Keep16Search(target, (), trials[0], [(0, trials[0])], tuple(layers), (), tuple(layers))
    bad = {x for x in (layer_name(m, layers) for m in overflowing(built(tuple(layers)))) if x is not None}
    cands = [x for x in layers if x not in bad]
    n = len(cands)
    if n == 0:
        raise InfeasibleBudget(f"--keep-16bit auto: no layer can be kept at 16 bits (every int32 accumulator could "
                               f"overflow); all 8-bit measures {trials[0]:.4f}, short of {target}")
    rank_on = min(RANK_BATCHES, len(batches))
    with steps(2 * n, "keep-16bit: each layer's gain and loss") as bar:
        base, full = loss(built(()), rank_on), loss(built(tuple(cands)), rank_on)
        weight = {}
        for i, x in enumerate(cands):
            gain = worse(base, loss(build((x,)), rank_on))
            drop = worse(loss(build(tuple(c for c in cands if c != x)), rank_on), full)
            weight[x] = max(gain, drop)
            bar.update(2 * i + 2, x)
    order = sorted(cands, key=lambda x: -weight[x])
    with steps(n.bit_length() + 1, "keep-16bit: how many layers") as bar:
        def measure(k: int) -> float:
            if k not in trials:
                trials[k] = loss(built(tuple(order[:k])))
                bar.update(len(trials) - 1, f"{k} layers at 16 bits: {trials[k]:.4f}")
            return trials[k]

        if not target.met(measure(n)):
            raise InfeasibleBudget(
                f"--keep-16bit auto: {target} is out of reach: every candidate layer ({n}) at 16 bits measures "
                f"{trials[n]:.6f} on the calibration data (all 8-bit: {trials[0]:.6f})")
        lo, hi = 0, n          # lo fails, hi meets
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if target.met(measure(mid)):
                hi = mid
            else:
                lo = mid
    k = min(k for k, m in trials.items() if target.met(m))
    return Keep16Search(target, tuple(order[:k]), trials[k], sorted(trials.items()), tuple(order),
                        tuple(x for x in layers if x in bad), tuple(layers))
