"""--accuracy-budget in the user's units for --quantize mixed: top-1 points lost on labelled calibration data
("0.5pt") or the minimum cosine of the final output with FP32 ("cos0.99", "cos=0.99"), besides the plain
fraction F of the outputs' mean square that the ILP of passes/mixed_precision.py bounds directly ("0.01").

The ILP keeps working on the per-layer measured perturbations Omega_i(c): sum_i Omega_i(c_i) <= F x P. A points
or cosine budget is met by searching F (`search_plan`): plan_mixed measures the layers once; each candidate F is
one ILP solve (fewest multiplies, then least perturbation: the accuracy-budget objective), and each new plan is
built into the integer graph the compile would make (the caller's `build`: the plan's weight grids, annotate,
dyadic, the shift/add and LUT rewrites, ...) and run by the reference interpreter on every calibration batch.
Loss is measured end to end against the FP32 graph on the same batches (activation quantization included):

- points: 100 x (top-1 accuracy of FP32 - top-1 accuracy of the plan), argmax over the last axis of the first
  output, against `labels` (one class index per output row, batches in order);
- cosine: per graph output, cos(plan, FP32) over all calibration samples flattened together; the smallest one;
- metric: the user's own loss (`accuracy_metric(ref, got)`, lower is better, on one calibration batch's outputs:
  FP32's and the plan's), its largest value over the calibration batches ("metric0.05": at most 0.05). A
  detector's class scores, for instance, which a cosine over its whole head output does not see.

Search: F_hi is the plan with the fewest multiplies any F allows; if it meets the budget it is taken. Else F_lo,
the least-perturbing plan (all INT8 without other budgets), must meet it (or InfeasibleBudget says by how much
it does not), and F is bisected geometrically between them (`max_solves` ILP solves in all). The plan kept is the
one with the most savings by the ILP objective (fewest multiplies, then least summed Omega) among the measured
plans within the budget. Larger F admits more perturbation, so the measured loss tends to grow with F; it need
not be monotone, which is why every measured plan is a candidate rather than only the last bisection point.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from compiler import interp
from compiler.diagnostics import InvalidInput
from compiler.ir import Graph
from passes.base import steps
from passes.mixed_precision import InfeasibleBudget, MixedPlan, plan_mixed, solve_bits
from passes.quantize import batch_args
from passes.sensitivity import float_outputs

KINDS = ("points", "cosine", "metric")
_POINTS = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(?:pts?|points?)", re.I)
_COSINE = re.compile(r"cos(?:ine)?\s*=?\s*(\d+(?:\.\d*)?|\.\d+)", re.I)
_METRIC = re.compile(r"metric\s*(?:<=|=)?\s*(\d+(?:\.\d*)?(?:e-?\d+)?|\.\d+)", re.I)
FORMS = ("F (a fraction of the outputs' mean square, e.g. 0.01), Npt (top-1 points lost on the labelled "
         "calibration data, e.g. 0.5pt), cosC (the final output's minimum cosine with FP32, e.g. cos0.99) or "
         "metricM (your accuracy metric at most M on every calibration batch, e.g. metric0.05)")
Metric = Callable[[list, list], float]       # (FP32's outputs, the plan's outputs) on one batch -> loss


@dataclass(frozen=True)
class AccuracyTarget:
    """A points, cosine or metric accuracy budget; `labels` (int64, one class index per calibration sample) for
    points, `metric` (the user's loss on one batch) for metric."""

    kind: str                           # "points" | "cosine" | "metric"
    value: float
    labels: np.ndarray | None = field(default=None, compare=False, repr=False)
    metric: Metric | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return {"points": f"{self.value:g}pt", "cosine": f"cos{self.value:g}"}.get(self.kind, f"metric{self.value:g}")

    @property
    def unit(self) -> str:
        return {"points": "points lost", "cosine": "cosine"}.get(self.kind, metric_name(self.metric))

    def met(self, measured: float) -> bool:
        return measured >= self.value - 1e-12 if self.kind == "cosine" else measured <= self.value + 1e-9

    def metric_loss(self, ref: Sequence[Sequence[np.ndarray]], got: Sequence[Sequence[np.ndarray]]) -> float:
        """The metric's largest value over the batches (ref[i], got[i]: FP32's and the plan's outputs on batch i).
        InvalidInput when it raises or returns anything but a finite number."""
        worst = -math.inf
        for r, o in zip(ref, got):
            try:
                value = float(self.metric(list(r), list(o)))
            except Exception as e:          # the user's code: say whose and what
                raise InvalidInput(f"accuracy metric {metric_name(self.metric)} raised {type(e).__name__}: {e}",
                                   hint="it takes (FP32 outputs, quantized outputs) of one calibration batch, "
                                        "each a list of numpy arrays, and returns a float (lower is better)") from None
            if not math.isfinite(value):
                raise InvalidInput(f"accuracy metric {metric_name(self.metric)} returned {value}",
                                   hint="return a finite float, lower is better")
            worst = max(worst, value)
        return worst


def metric_name(metric: Any) -> str:
    return getattr(metric, "__name__", None) or type(metric).__name__


def load_metric(spec: str) -> Metric:
    """The function FUNCTION of the Python file FILE.py named by `spec` ("FILE.py:FUNCTION", --accuracy-metric).
    InvalidInput naming the file for a missing file, a file that fails to import, or no such function."""
    import importlib.util
    from pathlib import Path
    file, sep, name = spec.rpartition(":")
    hint = "--accuracy-metric FILE.py:FUNCTION, e.g. metrics.py:class_score_error"
    if not sep or not file or not name.isidentifier():
        raise InvalidInput(f"--accuracy-metric {spec!r} is not FILE.py:FUNCTION", hint=hint)
    path = Path(file)
    if not path.is_file():
        raise InvalidInput(f"{file}: no such file (--accuracy-metric)", hint=hint)
    module_spec = importlib.util.spec_from_file_location(f"_accuracy_metric_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        raise InvalidInput(f"{file}: importing it raised {type(e).__name__}: {e} (--accuracy-metric)") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise InvalidInput(f"{file} has no function {name} (--accuracy-metric)", hint=hint)
    return fn


def parse_accuracy_budget(value: Any, labels: Any = None, flag: str = "accuracy_budget",
                          metric: Metric | None = None) -> float | AccuracyTarget | None:
    """A budget as given (a number, "0.01", "0.5pt", "cos0.99", "cos=0.99", "metric0.05", or an AccuracyTarget)
    -> the float fraction or an AccuracyTarget carrying `labels` / `metric`. InvalidInput names `flag` for a
    malformed value, a points budget without labels and a metric budget without a metric."""
    if value is None:
        return None
    if isinstance(value, AccuracyTarget):
        target = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return _fraction(float(value), value, flag)
    elif isinstance(value, str):
        text = value.strip()
        points, cosine, user = _POINTS.fullmatch(text), _COSINE.fullmatch(text), _METRIC.fullmatch(text)
        if user:
            target = AccuracyTarget("metric", float(user.group(1)))
        elif points:
            target = AccuracyTarget("points", float(points.group(1)))
            if target.value >= 100:
                raise InvalidInput(f"{flag} {value!r}: top-1 points lost must be below 100", hint=f"use {FORMS}")
        elif cosine:
            target = AccuracyTarget("cosine", float(cosine.group(1)))
            if not 0 < target.value <= 1:
                raise InvalidInput(f"{flag} {value!r}: a cosine budget is in (0, 1], e.g. cos0.99",
                                   hint=f"use {FORMS}")
        else:
            try:
                number = float(text)
            except ValueError:
                raise InvalidInput(f"{flag} {value!r} is not an accuracy budget", hint=f"use {FORMS}") from None
            return _fraction(number, value, flag)
    else:
        raise InvalidInput(f"{flag} {value!r} is not an accuracy budget", hint=f"use {FORMS}")
    if target.kind == "metric":
        metric = metric if metric is not None else target.metric
        if metric is None:
            raise InvalidInput(f"{flag} {str(target)!r} bounds your accuracy metric, which was not given",
                               hint="pass --accuracy-metric FILE.py:FUNCTION (CLI) or accuracy_metric= (API)")
        if not callable(metric):
            raise InvalidInput(f"accuracy metric {metric!r} is not callable")
        return replace(target, metric=metric)
    if target.kind == "points":
        if labels is None:
            labels = target.labels
        if labels is None:
            raise InvalidInput(f"{flag} {str(target)!r} counts top-1 points lost on the calibration data, which "
                               "needs labels",
                               hint="add a `labels` array (one class index per sample) to the calibration .npz, "
                                    "or pass labels= (API); cosC needs none")
        return replace(target, labels=_int_labels(labels, flag))
    return target


def _fraction(number: float, raw: Any, flag: str) -> float:
    if not (number > 0 and math.isfinite(number)):
        raise InvalidInput(f"{flag} {raw!r}: a fraction of the outputs' mean square must be positive and finite",
                           hint=f"use {FORMS}")
    return number


def _int_labels(labels: Any, flag: str) -> np.ndarray:
    parts = labels if isinstance(labels, (list, tuple)) else [labels]
    arr = np.concatenate([np.ravel(np.asarray(p)) for p in parts]) if parts else np.zeros(0)
    if arr.size == 0 or arr.dtype.kind not in "iuf" or (arr.dtype.kind == "f" and (arr != np.rint(arr)).any()) \
            or arr.min() < 0:
        raise InvalidInput(f"{flag}: labels must be non-negative class indices (one integer per calibration "
                           f"sample), got {arr.size} values of dtype {arr.dtype}")
    return arr.astype(np.int64)


# -- measuring a plan ---------------------------------------------------------------------------
def _top1(outs: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    return np.concatenate([np.asarray(o[0]).reshape(-1, np.shape(o[0])[-1]).argmax(-1) for o in outs])


def _cosine(ref: Sequence[Sequence[np.ndarray]], got: Sequence[Sequence[np.ndarray]]) -> float:
    cos = []
    for k in range(len(ref[0])):
        a = np.concatenate([np.ravel(r[k]).astype(np.float64) for r in ref])
        b = np.concatenate([np.ravel(o[k]).astype(np.float64) for o in got])
        denom = np.linalg.norm(a) * np.linalg.norm(b)
        cos.append(float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b)))
    return min(cos)


@dataclass
class Trial:
    """One candidate of the search: the perturbation bound F (None: the fewest-multiplies plan), the plan's
    multiplies and summed Omega, the measured loss (points lost, or cosine) and whether it meets the budget."""

    fraction: float
    multiplies: float
    omega: float
    measured: float
    met: bool
    bits: dict


@dataclass
class BudgetSearch:
    """What the search measured: the FP32 reference (top-1 accuracy % or cosine 1), the chosen plan's loss and
    accuracy, the calibration samples it was measured on, and every trial."""

    target: AccuracyTarget
    fp32_accuracy: float | None
    accuracy: float | None               # the chosen plan's top-1 % (points budgets)
    measured: float                      # the chosen plan's points lost, or its cosine
    samples: int
    trials: list[Trial] = field(default_factory=list)
    solves: int = 0

    def __str__(self) -> str:
        if self.target.kind == "points":
            head = (f"accuracy budget {self.target}: {self.measured:.3f} top-1 points lost on {self.samples} "
                    f"labelled calibration samples (FP32 {self.fp32_accuracy:.2f}%, plan {self.accuracy:.2f}%)")
        elif self.target.kind == "cosine":
            head = (f"accuracy budget {self.target}: the final output's cosine with FP32 {self.measured:.5f} "
                    f"on {self.samples} calibration samples")
        else:
            head = (f"accuracy budget {self.target}: {self.target.unit} at most {self.measured:.5g} "
                    f"on {self.samples} calibration samples")
        unit = self.target.unit
        lines = [head + f"; searched the perturbation bound F: {self.solves} ILP solves, "
                        f"{len(self.trials)} plans built and measured (integer graph, interpreter)"]
        for t in self.trials:
            bits = "/".join(str(b) for b in t.bits.values())
            lines.append(f"  F {t.fraction:<10.4g} W {bits:<28} multiplies {t.multiplies:<11.6g} {unit} "
                         f"{t.measured:<9.4g} {'within' if t.met else 'over'}")
        return "\n".join(lines)


@dataclass
class SearchedPlan(MixedPlan):
    """A MixedPlan chosen by `search_plan`; `search` holds the measured loss. Its `fractions["accuracy"]` is the
    perturbation bound F the ILP solved under."""

    search: BudgetSearch | None = None

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.search}" if self.search is not None else super().__str__()


def search_plan(g: Graph, batches: Sequence[Any], budget: AccuracyTarget, build: Callable[[MixedPlan], Graph],
                *, max_solves: int = 8, **plan_kwargs: Any) -> SearchedPlan:
    """The plan with the most savings (fewest multiplies, then least summed Omega) whose integer graph,
    `build(plan)`, run on `batches` loses at most `budget` against the float graph `g` (see the module
    docstring). `plan_kwargs` go to `plan_mixed` (size_budget, latency_budget, realizations, pow2_kernel, ...).
    Raises InfeasibleBudget when even the least-perturbing plan misses the budget, InvalidInput when the labels
    do not match the calibration data."""
    if plan_kwargs.get("sensitivity") is not None:
        raise InvalidInput(f"accuracy budget {budget} is searched over measured perturbations; it cannot be "
                           "used with a Hessian sensitivity", hint="drop sensitivity=")
    batches = list(batches)
    ref = float_outputs(g, batches)
    fp32_acc = None
    if budget.kind == "points":
        if budget.labels is None:
            raise InvalidInput(f"accuracy budget {budget} needs labels")
        rows = _top1(ref).size
        if budget.labels.size != rows:
            raise InvalidInput(f"{budget.labels.size} labels for {rows} calibration samples "
                               f"({len(batches)} batches)", hint="one class index per calibration sample, in order")
        fp32_acc = float(np.mean(_top1(ref) == budget.labels)) * 100

    def accuracy(outs) -> float:
        return float(np.mean(_top1(outs) == budget.labels)) * 100

    def measure(plan: MixedPlan) -> tuple[float, float | None]:
        ig = build(plan)
        outs = [[np.asarray(o, np.float64) for o in interp.run(ig, *batch_args(ig, b))] for b in batches]
        if budget.kind == "points":
            acc = accuracy(outs)
            return fp32_acc - acc, acc
        return (_cosine(ref, outs) if budget.kind == "cosine" else budget.metric_loss(ref, outs)), None

    first = plan_mixed(g, batches, accuracy_budget=math.inf, **plan_kwargs)   # the fewest multiplies: any F
    layers, power = first.layers, first.output_power
    others = {k: v for k, v in first.budgets.items() if k != "accuracy"}
    search = BudgetSearch(budget, fp32_acc, None, math.nan, _top1(ref).size if budget.kind == "points" else
                          sum(int(np.shape(batch_args(g, b)[0])[0]) for b in batches))
    measured: dict[tuple, tuple[MixedPlan, float, float | None]] = {}

    def plan_at(fraction: float) -> MixedPlan:
        bits = solve_bits(layers, {**others, "accuracy": fraction * power}, ties=first.ties, objective="multiplies")
        search.solves += 1
        return replace(first, bits=bits, budgets={**others, "accuracy": fraction * power},
                       fractions={**first.fractions, "accuracy": fraction})

    def trial(plan: MixedPlan, bar) -> bool:
        key = _key(plan)
        if key not in measured:
            loss, acc = measure(plan)
            measured[key] = (plan, loss, acc)
            search.trials.append(Trial(plan.fractions["accuracy"], plan.total("multiplies"),
                                       plan.total("accuracy"), loss, budget.met(loss), dict(plan.bits)))
        bar.update(search.solves, f"F={plan.fractions['accuracy']:.3g}: {budget.kind} {measured[key][1]:.4g}")
        return budget.met(measured[key][1])

    least = solve_bits(layers, others, ties=first.ties, objective="perturbation")
    f_lo = max(sum(la.omega[least[la.name]] for la in layers) / power, 1e-12) * (1 + 1e-6)
    f_hi = max(first.total("accuracy") / power * (1 + 1e-6), f_lo)
    with steps(max_solves, f"accuracy budget {budget}") as bar:
        if not trial(plan_at(f_hi), bar):
            lo_plan = plan_at(f_lo)
            if not trial(lo_plan, bar):
                loss = measured[_key(lo_plan)][1]
                what = f"loses {loss:.3f} top-1 points" if budget.kind == "points" else \
                    f"has {budget.unit} {loss:.5g}"
                raise InfeasibleBudget(
                    f"accuracy budget {budget} cannot be met: the least-perturbing plan "
                    f"({'/'.join(map(str, lo_plan.bits.values()))}) {what} on the calibration data",
                    hint="raise the budget (more points, a lower cosine), or give more / more representative "
                         "calibration data")
            lo, hi = f_lo, f_hi
            while search.solves < max_solves and hi / lo > 1.001:
                mid = math.sqrt(lo * hi)
                if trial(plan_at(mid), bar):
                    lo = mid
                else:
                    hi = mid
    ok = [v for v in measured.values() if budget.met(v[1])]
    plan, loss, acc = min(ok, key=lambda v: (v[0].total("multiplies"), v[0].total("accuracy")))
    search.measured, search.accuracy = loss, acc
    return SearchedPlan(**{f.name: getattr(plan, f.name) for f in fields(MixedPlan)}, search=search)


def _key(plan: MixedPlan) -> tuple:
    return tuple(sorted((k, str(c)) for k, c in plan.bits.items()))
