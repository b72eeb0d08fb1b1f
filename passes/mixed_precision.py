"""HAWQV3 mixed precision (ALGORITHMS.md §1.5): per layer 4- or 8-bit weights chosen by an
integer linear program, then the ordinary calibrate -> annotate -> dyadic driver.

Layers. A *layer* is a conv or matmul-by-a-constant node that the quantize pass makes integer
(`passes.quantize.integer_capable`); its weight is what gets 4 or 8 bits. Activations stay 8-bit.

Sensitivity (the ILP objective, HAWQ's form). For layer i and bit width b

    Omega_i(b) = s_i * ||Q_b(W_i) - W_i||^2

with Q_b the symmetric per-output-channel weight quantizer the quantize pass uses
(`weight_spec`, grid [-(2^(b-1)-1), 2^(b-1)-1]) and s_i a per-parameter curvature:

- "hessian" (optional, needs the torch model with gradients): s_i = Tr(H_i) / params_i, the
  Hutchinson estimate of the loss Hessian's trace over layer i's weight (Rademacher probes),
  exactly HAWQ's Tr-bar(H_i). The trace is taken w.r.t. the torch weight before BatchNorm folding
  (an approximation when BN is folded into the layer). See `hutchinson_sensitivity`.
- "perturbation" (default, needs only the graph and calibration data): quantize only layer i's
  weight to 4 bits (everything else float), run the reference interpreter, and measure the mean
  squared change of the model outputs, d_i. Then s_i = d_i / ||Q_4(W_i) - W_i||^2: the
  Gauss-Newton (second order) model of the output error, E||dy||^2 ~ s_i ||dW||^2 for an
  isotropic weight perturbation, so Omega_i(4) = d_i (measured) and
  Omega_i(8) = d_i * ||Q_8(W_i)-W_i||^2 / ||Q_4(W_i)-W_i||^2 (extrapolated).

Costs, per layer and bit width b (activations a = 8 bits):
- size:    weight bytes, params_i * b / 8  (int4 is stored in int8 containers at run time;
           the size is the packed int4 size, as in HAWQ);
- bops:    MACs_i * b * a (MACs of one run of the graph, at its static batch size);
- latency: seconds from a callable latency(layer, bits). The default is the learned cost model
           (`costmodel_latency`: `costmodel.policy.predict_layer_latency`, the XGBoost model's
           prediction for the int8 VNNI kernel that runs the layer, with the tile the policy picks
           for it). On x86 4-bit weights are stored in int8 containers and run through the same
           kernels, so the predicted 4-bit latency equals the 8-bit one and a latency budget below
           1.0 x INT8 is infeasible (said so, InvalidInput). Only when no model can answer (no
           xgboost / model file, DYC_COSTMODEL=off, a layer no measured kernel covers) does it fall
           back to `proportional_latency` (MACs * b / 8 ns, a placeholder), and the plan's
           `latency_source` and its printed report say which was used.

ILP (`solve_bits`, scipy.optimize.milp). Binary x_i (1 = 8-bit, 0 = 4-bit):

    minimize    sum_i Omega_i(4) + x_i (Omega_i(8) - Omega_i(4))
    subject to  sum_i cost_i(4) + x_i (cost_i(8) - cost_i(4)) <= L_k     for each budget kind k
                x_first = x_last = 1                                        (kept 8-bit)
                x_a = x_b                                                   for each tie (a, b)

Budgets are given (API/CLI) as a fraction f of the all-INT8 cost: L_k = f * cost_k(all 8).
HAWQ's r (L = cost(all 4) + r (cost(all 8) - cost(all 4))) is reported in the plan; for size and
BOPs f = (1 + r) / 2. Default ties: weight layers that read the same activation tensor (a
ResNet transition block's 1x1 downsample conv and its first 3x3 conv: HAWQ's x4 = x6, ...) and
layers sharing one weight constant.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from compiler import interp
from compiler.diagnostics import InvalidInput, Unsupported
from compiler.ir import Graph, Node, Value
from compiler.ops import linalg
from compiler.types import DType, TensorType
from passes.base import steps
from passes.quantize import (
    QuantConfig,
    batch_args,
    const_weight_matmul,
    integer_capable,
    quantize_array,
    weight_spec,
)

BITS = (4, 8)
KINDS = ("size", "bops", "latency")
ACT_BITS = 8

LatencyFn = Callable[["Layer", int], float]


# -- layers ---------------------------------------------------------------------------------
@dataclass
class Layer:
    """One weight layer as the ILP sees it. `omega[b]` is the objective term at b bits,
    `latency[b]` seconds at b bits (filled by `measure_costs`), `fixed` forces a bit width."""

    name: str
    params: int
    macs: int = 0
    omega: dict[int, float] = field(default_factory=dict)
    latency: dict[int, float] = field(default_factory=dict)
    fixed: int | None = None
    sensitivity: float = 0.0                             # s_i (per-parameter curvature)
    delta: dict[int, float] = field(default_factory=dict)  # ||Q_b(W) - W||^2
    weight: str = ""                                     # the weight constant's name
    input: str = ""                                      # the activation it reads
    kernel: dict[str, Any] = field(default_factory=dict)  # kind, x_shape, w_shape, strides, pads, groups, dilations
    latency_note: str = ""                               # how latency[] was obtained

    def cost(self, kind: str, bits: int) -> float:
        if kind == "size":
            return self.params * bits / 8
        if kind == "bops":
            return float(self.macs) * bits * ACT_BITS
        if kind == "latency":
            if bits not in self.latency:
                raise InvalidInput(f"layer '{self.name}' has no {bits}-bit latency",
                                   hint="fill Layer.latency (measure_costs(layers, latency=...))")
            return self.latency[bits]
        raise Unsupported(f"budget kind {kind!r}", hint=f"one of {KINDS}")


def _weight_axis(n: Node) -> int:
    return 0 if n.op is linalg.conv else 1


def weight_layers(g: Graph) -> list[Node]:
    """The nodes whose constant weight the quantize pass quantizes (conv, matmul by a constant
    matrix), in graph order."""
    return [n for n in g.nodes if integer_capable(n) and (
        (n.op is linalg.conv and n.inputs[1].is_const) or const_weight_matmul(n))]


def _macs(n: Node) -> int:
    w, out = n.inputs[1].type.shape, n.outputs[0].type.shape
    if n.op is linalg.conv:            # every output element reduces over C/groups * prod(kernel)
        return int(np.prod(out)) * int(np.prod(w[1:]))
    return int(np.prod(out)) * int(w[0])    # matmul: (..., K) x (K, N)


def layer_names(nodes: Sequence[Node]) -> list[str]:
    """Node names, made unique (a torch Linear gives its matmul and bias add one name)."""
    names, seen = [], set()
    for n in nodes:
        name, i = n.name or n.outputs[0].name, 0
        while name in seen:
            i += 1
            name = f"{n.name}_{i}"
        seen.add(name)
        names.append(name)
    return names


def fake_quant(w: np.ndarray, axis: int, bits: int) -> np.ndarray:
    """Q_b(W): W through the quantize pass's symmetric per-channel grid and back to float."""
    spec = weight_spec(w, axis, bits)
    q = quantize_array(w, spec).astype(np.float64)
    s = np.asarray(spec.scale, np.float64)
    shp = [1] * w.ndim
    shp[axis % w.ndim] = -1
    return (q * s.reshape(shp)).astype(w.dtype)


def _delta(w: np.ndarray, axis: int, bits: int) -> float:
    return float(np.sum((fake_quant(w, axis, bits).astype(np.float64) - w) ** 2))


def default_ties(g: Graph, nodes: Sequence[Node], names: Sequence[str]) -> list[tuple[str, ...]]:
    """Layers that read one activation tensor (downsample + first conv of a ResNet transition
    block) or share one weight constant must get the same bits."""
    by_key: dict[tuple[str, int], list[str]] = {}
    for n, name in zip(nodes, names):
        by_key.setdefault(("in", id(n.inputs[0])), []).append(name)
        by_key.setdefault(("w", id(n.inputs[1])), []).append(name)
    return [tuple(v) for v in by_key.values() if len(v) > 1]


# -- sensitivity ----------------------------------------------------------------------------
def _run_all(g: Graph, batches: Sequence[Any]) -> list[list[np.ndarray]]:
    return [[np.asarray(o, np.float64) for o in interp.run(g, *batch_args(g, b))] for b in batches]


def perturbation_sensitivity(g: Graph, batches: Sequence[Any], nodes: Sequence[Node],
                             bits: int = 4) -> list[float]:
    """d_i = mean squared change of the graph outputs (over the batches, averaged over the
    outputs) when only layer i's weight is replaced by Q_bits(W_i). `g` is float."""
    ref = _run_all(g, batches)
    out = []
    with steps(len(nodes), "layer sensitivity") as bar:
        for n in nodes:
            idx = g.nodes.index(n)
            probe = g.clone()
            pn = probe.nodes[idx]
            w = pn.inputs[1]
            pn.inputs[1] = Value(w.name, TensorType(w.type.shape, w.type.dtype),
                                 fake_quant(w.const, _weight_axis(n), bits))
            got = _run_all(probe, batches)
            errs = [float(np.mean((a - b) ** 2)) for ra, ga in zip(ref, got) for a, b in zip(ra, ga)]
            out.append(float(np.mean(errs)))
            bar.update(len(out), n.name)
    return out


def hutchinson_sensitivity(model: Any, loss_fn: Callable[[Any], Any], batches: Iterable[Any],
                           probes: int = 8, seed: int = 0) -> dict[str, float]:
    """HAWQ's Tr-bar(H): per conv/linear weight of a torch model, the Hutchinson estimate of
    Tr(H) / params, H the Hessian of `loss_fn(batch)` (a scalar torch loss, computed with
    `model`) w.r.t. that weight: E_v[v^T H v] over Rademacher v, `probes` per batch, averaged
    over the batches. Returns {parameter name: trace / params} in module registration order."""
    import torch
    weights = [(f"{mn}.weight" if mn else "weight", m.weight) for mn, m in model.named_modules()
               if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear))]
    if not weights:
        raise Unsupported("the model has no Conv/Linear weights to estimate a Hessian trace for")
    params = [w for _, w in weights]
    gen = torch.Generator().manual_seed(seed)
    total = [0.0] * len(params)
    count = 0
    for batch in batches:
        loss = loss_fn(batch)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        for _ in range(probes):
            vs = [torch.randint(0, 2, p.shape, generator=gen).to(p.dtype) * 2 - 1 for p in params]
            hv = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)
            for i, (h, v) in enumerate(zip(hv, vs)):
                total[i] += float((h * v).sum())
        count += probes
    if count == 0:
        raise InvalidInput("hutchinson_sensitivity needs at least one batch")
    return {name: total[i] / count / p.numel() for i, (name, p) in enumerate(weights)}


def match_torch_weights(model: Any, nodes: Sequence[Node], names: Sequence[str],
                        traces: Mapping[str, float]) -> dict[str, float]:
    """Pair the torch weights of `hutchinson_sensitivity` (registration order) with the graph's
    weight layers (graph order), checking shapes (a Linear weight (out, in) is the matmul
    constant (in, out)). {layer name: s_i}; raises InvalidInput when they do not line up."""
    tw = list(traces.items())
    if len(tw) != len(nodes):
        raise InvalidInput(f"{len(tw)} torch Conv/Linear weights but {len(nodes)} weight layers in "
                           "the graph", hint="pass sensitivity={layer name: s_i} explicitly")
    out = {}
    for n, name, (pname, t) in zip(nodes, names, tw):
        ts = tuple(model.get_parameter(pname).shape)
        gs = tuple(n.inputs[1].type.shape)
        if ts != gs and ts[::-1] != gs:
            raise InvalidInput(f"torch weight '{pname}' {ts} does not match layer '{name}' {gs}",
                               hint="modules are registered in another order than they run; pass "
                                    "sensitivity={layer name: s_i} explicitly")
        out[name] = float(t)
    return out


# -- costs ----------------------------------------------------------------------------------
def proportional_latency(layer: Layer, bits: int) -> float:
    """PLACEHOLDER latency model: 1 ns per 8-bit MAC, linear in the weight bits (MACs * b / 8).
    Only the explicit fallback when the cost model cannot answer (see `measure_costs`)."""
    return layer.macs * bits / 8 * 1e-9


PROPORTIONAL_SOURCE = "proportional placeholder (MACs x bits / 8 ns)"


def _kernel_info(n: Node) -> dict[str, Any]:
    a = n.attrs
    info: dict[str, Any] = {"kind": "conv" if n.op is linalg.conv else "matmul",
                            "x_shape": tuple(n.inputs[0].type.shape), "w_shape": tuple(n.inputs[1].type.shape)}
    if n.op is linalg.conv:
        info.update(strides=tuple(a["strides"]), pads=tuple(a["pads"]), groups=int(a["groups"]),
                    dilations=tuple(a["dilations"]))
    return info


def costmodel_latency(target: Any = None) -> LatencyFn:
    """latency(layer, bits) from the learned cost model (`costmodel.policy.predict_layer_latency`) for
    `target` (None: the host). Raises `costmodel.policy.LatencyUnavailable` when it cannot answer (no
    model, a layer without kernel info or a kernel outside the model's data); sets layer.latency_note."""
    from costmodel import policy

    def fn(layer: Layer, bits: int) -> float:
        k = layer.kernel
        if not k:
            raise policy.LatencyUnavailable(f"layer '{layer.name}' has no kernel shape")
        extra = {key: k[key] for key in ("strides", "pads", "groups", "dilations") if key in k}
        sec, note = policy.predict_layer_latency(k["kind"], k["x_shape"], k["w_shape"], bits, target, **extra)
        parts = [t for t in layer.latency_note.split("; ") if t]
        layer.latency_note = "; ".join(parts + [t for t in note.split("; ") if t not in parts])
        return sec
    return fn


def measure_costs(layers: Sequence[Layer], latency: LatencyFn | None = None, target: Any = None) -> str:
    """Fill every layer's latency[4], latency[8]; returns where they came from. With `latency` given,
    from it ("given"). By default from the cost model (`costmodel_latency`); if it cannot answer for
    some layer, every layer falls back to `proportional_latency` (one unit for the whole ILP), and the
    returned source says so and why."""
    if latency is not None:
        for layer in layers:
            layer.latency = {b: float(latency(layer, b)) for b in BITS}
        return "given"
    try:
        from costmodel.policy import LatencyUnavailable
    except Exception as e:  # noqa: BLE001 - the cost model package itself is unusable
        return _fallback(layers, f"cost model unavailable: {type(e).__name__}: {e}")
    fn = costmodel_latency(target)
    for layer in layers:
        layer.latency_note = ""
    try:
        got = [{b: float(fn(layer, b)) for b in BITS} for layer in layers]
    except LatencyUnavailable as e:
        return _fallback(layers, str(e))
    for layer, lat in zip(layers, got):
        layer.latency = lat
    notes = sorted({t for layer in layers for t in layer.latency_note.split("; ") if t})
    return "cost model (predicted: " + "; ".join(notes) + ")" if notes else "cost model (predicted)"


def _fallback(layers: Sequence[Layer], reason: str) -> str:
    for layer in layers:
        layer.latency = {b: proportional_latency(layer, b) for b in BITS}
        layer.latency_note = PROPORTIONAL_SOURCE
    return f"{PROPORTIONAL_SOURCE}, because the cost model cannot answer: {reason}"


def _check_latency_budget(layers: Sequence[Layer], fraction: float, source: str) -> None:
    """A latency budget below all-INT8 needs some layer whose 4-bit kernel is faster than its 8-bit one."""
    if fraction >= 1.0 or any(layer.latency[4] < layer.latency[8] for layer in layers):
        return
    raise InfeasibleBudget(
        f"latency budget {fraction:g} x INT8 cannot be met: no 4-bit kernel is faster than the 8-bit one on "
        f"this target (4-bit weights are stored in int8 containers and run through the same int8 kernels; "
        f"latencies from {source}), so every 4/8-bit plan has the all-INT8 latency",
        hint="use --size-budget (size_budget=) to trade accuracy for weight size, or a latency budget >= 1.0")


def total_cost(layers: Sequence[Layer], bits: Mapping[str, int], kind: str) -> float:
    return float(sum(layer.cost(kind, bits[layer.name]) for layer in layers))


def budget_limit(layers: Sequence[Layer], kind: str, fraction: float) -> float:
    """L = fraction * cost(all 8-bit), the budget the API's size_budget= / latency_budget= mean."""
    if not fraction > 0:
        raise InvalidInput(f"{kind} budget must be a positive fraction of the INT8 {kind}, got {fraction}")
    return fraction * sum(layer.cost(kind, 8) for layer in layers)


# -- the ILP --------------------------------------------------------------------------------
class InfeasibleBudget(InvalidInput):
    """No 4/8-bit assignment meets the budget(s) (exit code 2)."""

    kind = "infeasible budget"


def solve_bits(layers: Sequence[Layer], budget: float | Mapping[str, float], kind: str = "size",
               ties: Iterable[Sequence[str]] = (), keep_first_last: bool = True) -> dict[str, int]:
    """The HAWQV3 ILP: bits (4 or 8) per layer minimizing sum Omega_i(bits_i) subject to
    sum cost_kind(bits_i) <= budget (absolute units: bytes, BOPs, seconds). `budget` may be a
    mapping {kind: limit} for several constraints at once. layers[0] and layers[-1] stay 8-bit
    (keep_first_last), a layer with `fixed` keeps that width, every tie group shares its width.
    Raises InfeasibleBudget naming the smallest reachable cost."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    layers = list(layers)
    if not layers:
        return {}
    budgets = dict(budget) if isinstance(budget, Mapping) else {kind: float(budget)}
    idx = {layer.name: i for i, layer in enumerate(layers)}
    if len(idx) != len(layers):
        raise InvalidInput("layer names must be unique")
    n = len(layers)
    lb, ub = np.zeros(n), np.ones(n)
    for i, layer in enumerate(layers):
        if layer.fixed is not None:
            if layer.fixed not in BITS:
                raise Unsupported(f"layer '{layer.name}': {layer.fixed}-bit weights", hint="4 or 8")
            lb[i] = ub[i] = 1.0 if layer.fixed == 8 else 0.0
    if keep_first_last:
        for i in {0, n - 1}:
            if ub[i] == 0:
                raise InfeasibleBudget(f"layer '{layers[i].name}' is fixed at 4 bits, but the first "
                                       "and last layers stay 8-bit", hint="keep_first_last=False")
            lb[i] = ub[i] = 1.0

    rows, lo, hi = [], [], []
    tie_rows = []
    for group in ties:
        group = list(group)
        missing = [t for t in group if t not in idx]
        if missing:
            raise InvalidInput(f"tie group {group} names unknown layer(s) {missing}",
                               hint=f"layers: {', '.join(idx)}")
        for a, b in pairwise(group):
            r = np.zeros(n)
            r[idx[a]], r[idx[b]] = 1.0, -1.0
            tie_rows.append(r)
    for r in tie_rows:
        rows.append(r)
        lo.append(0.0)
        hi.append(0.0)
    for k, limit in budgets.items():
        c4 = np.array([layer.cost(k, 4) for layer in layers])
        c8 = np.array([layer.cost(k, 8) for layer in layers])
        rows.append(c8 - c4)
        lo.append(-np.inf)
        hi.append(float(limit) - c4.sum())

    o4 = np.array([layer.omega[4] for layer in layers], np.float64)
    o8 = np.array([layer.omega[8] for layer in layers], np.float64)
    c = o8 - o4                        # negative: 8 bits lowers the perturbation
    if np.abs(c).max() > 0:
        c = c / np.abs(c).max()        # units do not matter; keep the solver well scaled
    cons = []
    for r, lv, hv in zip(rows, lo, hi):    # one row per constraint, each scaled to max |a| = 1
        m = np.abs(r).max()
        if m > 0:
            cons.append(LinearConstraint(r[None] / m, lv / m, hv / m))
        elif hv < 0:                   # 0 <= negative limit: no assignment can help
            _raise_infeasible(layers, budgets, lb, ub, tie_rows)
    res = milp(c, integrality=np.ones(n), bounds=Bounds(lb, ub), constraints=cons,
               options={"mip_rel_gap": 0.0})     # tiny problems: solve to proven optimality
    if res.status == 2 or res.x is None:
        _raise_infeasible(layers, budgets, lb, ub, tie_rows)
    if not res.success:
        raise Unsupported(f"the mixed-precision ILP did not solve: {res.message}")
    bits = {layer.name: 8 if res.x[i] > 0.5 else 4 for i, layer in enumerate(layers)}
    for k, limit in budgets.items():      # milp's tolerance must not let a plan exceed a budget
        used = total_cost(layers, bits, k)
        if used > limit * (1 + 1e-9) + 1e-12:
            _raise_infeasible(layers, budgets, lb, ub, tie_rows)
    return bits


def _raise_infeasible(layers, budgets, lb, ub, tie_rows) -> None:
    """Explain which budget cannot be met: the cheapest reachable cost of each kind."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    n = len(layers)
    parts = []
    for k, limit in budgets.items():
        c4 = np.array([layer.cost(k, 4) for layer in layers])
        c8 = np.array([layer.cost(k, 8) for layer in layers])
        cons = [LinearConstraint(np.array(tie_rows), 0, 0)] if tie_rows else []
        r = milp(c8 - c4, integrality=np.ones(n), bounds=Bounds(lb, ub), constraints=cons)
        if not r.success:
            raise InfeasibleBudget("the tie groups contradict the fixed bit widths (first/last layer "
                                   "8-bit, Layer.fixed)", hint=f"ties: {len(tie_rows)} equalities")
        best = float(c4.sum() + r.fun)
        all8 = float(c8.sum())
        if best > limit * (1 + 1e-9):
            parts.append(f"{k} budget {limit:.6g} is below the smallest reachable {k} {best:.6g} "
                         f"({best / all8:.3f} of all-INT8 {all8:.6g}; every free layer at 4 bits, "
                         f"first/last and fixed layers at 8)")
    msg = "; ".join(parts) or "the budgets cannot be met together"
    raise InfeasibleBudget(f"no 4/8-bit assignment meets the budget: {msg}",
                           hint="raise the budget fraction")


# -- the plan -------------------------------------------------------------------------------
@dataclass
class MixedPlan:
    """What the ILP chose: per layer bits, sensitivity and costs; per budget kind the limit,
    the plan's total and the all-8 / all-4 totals."""

    layers: list[Layer]
    bits: dict[str, int]
    budgets: dict[str, float]                     # kind -> absolute limit
    fractions: dict[str, float]                   # kind -> the fraction asked for
    method: str = "perturbation"
    ties: list[tuple[str, ...]] = field(default_factory=list)
    latency_source: str = ""                      # where Layer.latency came from (measure_costs)

    def total(self, kind: str, bits: Mapping[str, int] | int | None = None) -> float:
        if isinstance(bits, int):
            bits = {layer.name: bits for layer in self.layers}
        return total_cost(self.layers, bits or self.bits, kind)

    @property
    def objective(self) -> float:
        return float(sum(layer.omega[self.bits[layer.name]] for layer in self.layers))

    @property
    def weight_bytes(self) -> float:
        return self.total("size")

    def meets_budget(self) -> bool:
        return all(self.total(k) <= limit * (1 + 1e-9) for k, limit in self.budgets.items())

    def rows(self) -> list[dict]:
        return [{"layer": layer.name, "bits": self.bits[layer.name], "params": layer.params,
                 "macs": layer.macs, "sensitivity": layer.sensitivity,
                 "omega4": layer.omega[4], "omega8": layer.omega[8],
                 "bytes": layer.cost("size", self.bits[layer.name]),
                 "latency_s": layer.latency.get(self.bits[layer.name]),
                 "fixed": layer.fixed is not None} for layer in self.layers]

    def __str__(self) -> str:
        head = f"{'layer':<28} {'bits':>4} {'params':>9} {'MACs':>11} {'s_i':>10} " \
               f"{'Omega(4)':>10} {'Omega(8)':>10} {'bytes':>9}"
        lines = [f"mixed precision plan (sensitivity: {self.method})", head, "-" * len(head)]
        for r in self.rows():
            tag = "*" if r["fixed"] else " "
            lines.append(f"{r['layer']:<28} {r['bits']:>3}{tag} {r['params']:>9} {r['macs']:>11} "
                         f"{r['sensitivity']:>10.3g} {r['omega4']:>10.3g} {r['omega8']:>10.3g} "
                         f"{r['bytes']:>9.0f}")
        lines.append("(* kept 8-bit: first/last layer)")
        if self.ties:
            lines.append("tied: " + "; ".join(" = ".join(t) for t in self.ties))
        for k in KINDS:
            t8, t4, used = self.total(k, 8), self.total(k, 4), self.total(k)
            r = (used - t4) / (t8 - t4) if t8 > t4 else 0.0
            line = f"{k:>8}: {used:.6g} = {used / t8:.3f} of all-INT8 {t8:.6g} (HAWQ r = {r:.3f})"
            if k in self.budgets:
                line += f"; budget {self.budgets[k]:.6g} = {self.fractions[k]:.3f} x INT8 " \
                        f"{'met' if self.total(k) <= self.budgets[k] * (1 + 1e-9) else 'EXCEEDED'}"
            lines.append(line)
        if self.latency_source:
            lines.append(f"latency: {self.latency_source}")
        lines.append(f"objective sum Omega = {self.objective:.4g}")
        return "\n".join(lines)


def plan_mixed(g: Graph, batches: Sequence[Any], size_budget: float | None = None,
               latency_budget: float | None = None, bops_budget: float | None = None, *,
               latency: LatencyFn | None = None, sensitivity: Mapping[str, float] | None = None,
               ties: Iterable[Sequence[str]] | None = None, keep_8bit: Iterable[str] = (),
               sensitivity_batches: int = 4, target: Any = None) -> MixedPlan:
    """Layers, sensitivities, costs and the ILP solution for a canonicalized float graph.
    `sensitivity` ({layer name: s_i}, e.g. from `hutchinson_sensitivity` + `match_torch_weights`)
    replaces the output-perturbation estimate. `ties` replaces the default tie groups. `latency`
    (default: the cost model's prediction for `target`, None = the host) gives the latencies."""
    fractions = {k: f for k, f in (("size", size_budget), ("latency", latency_budget),
                                   ("bops", bops_budget)) if f is not None}
    if not fractions:
        raise InvalidInput("quantize='mixed' needs a budget: size_budget, latency_budget or "
                           "bops_budget (a fraction of the all-INT8 cost, e.g. 0.7)")
    nodes = weight_layers(g)
    if not nodes:
        raise Unsupported("mixed precision found no conv / matmul-by-constant layer to quantize")
    names = layer_names(nodes)
    keep = set(keep_8bit)
    unknown = keep - set(names)
    if unknown:
        raise InvalidInput(f"keep_8bit names unknown layer(s) {sorted(unknown)}",
                           hint=f"layers: {', '.join(names)}")
    layers = []
    for n, name in zip(nodes, names):
        w, axis = n.inputs[1].const, _weight_axis(n)
        layers.append(Layer(name, int(w.size), _macs(n), delta={b: _delta(w, axis, b) for b in BITS},
                            fixed=8 if name in keep else None, weight=n.inputs[1].name,
                            input=n.inputs[0].name, kernel=_kernel_info(n)))
    if sensitivity is None:
        method = "perturbation"
        d = perturbation_sensitivity(g, list(batches)[:max(1, sensitivity_batches)], nodes, 4)
        for layer, di in zip(layers, d):
            layer.sensitivity = di / layer.delta[4] if layer.delta[4] > 0 else 0.0
    else:
        method = "hessian"
        missing = [name for name in names if name not in sensitivity]
        if missing:
            raise InvalidInput(f"sensitivity lacks layer(s) {missing}", hint=f"layers: {', '.join(names)}")
        for layer in layers:
            layer.sensitivity = float(sensitivity[layer.name])
    for layer in layers:
        layer.omega = {b: layer.sensitivity * layer.delta[b] for b in BITS}
    source = measure_costs(layers, latency, target)
    if "latency" in fractions:
        _check_latency_budget(layers, fractions["latency"], source)
    tie_groups = default_ties(g, nodes, names) if ties is None else [tuple(t) for t in ties]
    budgets = {k: budget_limit(layers, k, f) for k, f in fractions.items()}
    bits = solve_bits(layers, budgets, ties=tie_groups)
    return MixedPlan(layers, bits, budgets, fractions, method, tie_groups, source)


# -- the driver -----------------------------------------------------------------------------
def with_weight_bits(g: Graph, plan: MixedPlan, config: QuantConfig) -> Graph:
    """A copy of g whose layer weights carry the plan's 4- or 8-bit grids (annotate keeps a grid a
    weight already has)."""
    from passes.quantize import with_quant
    ag = g.clone()
    nodes = weight_layers(ag)
    for n, name in zip(nodes, layer_names(nodes)):
        w = n.inputs[1]
        spec = weight_spec(w.const, _weight_axis(n) if config.per_channel else None, plan.bits[name], w.name)
        n.inputs[1] = Value(w.name, with_quant(w.type, spec), w.const)
    return ag


def check_bits(ig: Graph, plan: MixedPlan) -> None:
    """The integer graph holds exactly as many int4 weight tensors as the plan has 4-bit layers
    (a guard against a rewrite dropping the per-layer grids)."""
    from compiler.ops import quant
    n4 = sum(1 for n in ig.nodes if n.op in (quant.conv, quant.matmul)
             for v in n.inputs[1:2] if v.is_const and v.type.dtype is DType.I4)
    want = sum(1 for b in plan.bits.values() if b == 4)
    if n4 != want:
        raise Unsupported(f"the integer graph has {n4} int4 weight tensors; the plan asked for {want}")

