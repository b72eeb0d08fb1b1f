"""HAWQV3 mixed precision (ALGORITHMS.md §1.5) over weight realizations: per layer one realization chosen by an
integer linear program, then the ordinary calibrate -> annotate -> dyadic driver and, for the layers that chose
them, the rewrites --lut and --shiftadd use (passes/lut.py, passes/shiftadd.py: their passes read the plan).

Layers. A *layer* is a conv or matmul-by-a-constant node that the quantize pass makes integer
(`passes.quantize.integer_capable`); its weight is what gets realized. Activations stay 8-bit.

Choices (`Layer.choices`, a `Choice`). 8 / 4: the int8 / int4 weight grid (symmetric per output channel, the
quantize pass's); int4 linear layers run the int4 VNNI matmul (weights two per byte, tvm_kernels/qmatmul_int4.py),
int4 convs the int8 kernels (int4 in int8 containers). With realizations (`plan_mixed(...,
realizations=)`; --quantize mixed offers REALIZATIONS): "lut4" / "lut2", a linear layer as q.lut_matmul with
b-bit group weights requantized from its int8 weight (T-MAC, packed bit-planes); "pow2x2" / "pow2x1", the int8
weight as per-channel sums of 2 / 1 signed powers of two (shift/add). A linear layer that can take LUT weights
has lut<b> instead of 4 (its 4-bit form is then the packed one); a conv keeps 4 (there is no packed conv kernel).
pow2x<t> is offered only where the shift kernel runs it (`pow2_kernel` "shift": --shiftadd-kernel shift, or
auto on a CPU without VNNI): on a multiplying kernel it costs what int8 costs in every budget and perturbs
more, so int8 dominates it and it is not worth measuring.

Sensitivity (the ILP's perturbation term, HAWQ's form). Omega_i(c) for layer i and choice c:

- "perturbation" (default, needs only the graph and calibration data): replace only layer i's weight W_i by
  choice c's weight as float (everything else float), run the reference interpreter, and measure the mean
  squared change of the model outputs, d_i(c). Choice c's weight: Q_4(W) for 4 (the quantize pass's grid
  `weight_spec`, [-7, 7]); s8 * S * u * (codes - z) for lut<b> (`passes.lut.lut_weight` on the int8 weight,
  the group scale bound for the widest activation range; the int8 tables' rounding is an activation error and
  not included); s8 * alpha * v for pow2x<t> (`passes.shiftadd.fit_node` on the layer's float input; without
  the bias correction the rewrite adds, so an upper estimate). Omega_i(c) = d_i(c) for those; int8 is
  extrapolated, as HAWQ's Gauss-Newton model: s_i = d_i(4) / ||Q_4(W_i) - W_i||^2 (E||dy||^2 ~ s_i ||dW||^2
  for an isotropic weight perturbation) and Omega_i(8) = s_i ||Q_8(W_i) - W_i||^2.
- "hessian" (optional, needs the torch model with gradients): s_i = Tr(H_i) / params_i, the Hutchinson estimate
  of the loss Hessian's trace over layer i's weight (Rademacher probes), exactly HAWQ's Tr-bar(H_i), and
  Omega_i(c) = s_i ||W_c - W_i||^2. The trace is taken w.r.t. the torch weight before BatchNorm folding (an
  approximation when BN is folded into the layer). See `passes.sensitivity.hutchinson_sensitivity`.

Costs, per layer and choice (activations a = 8 bits):
- size:     bytes of the stored weight: params for int8 and pow2x<t> (int8 codes), params / 2 for int4 (HAWQ's
            packed size: what the artifact stores for a linear layer; a conv's int4 sits in int8 containers), and for
            lut<b> what the artifact stores:
            the b bit-planes plus the int16 group scales and uint8 zeros (`passes.lut.packed_bytes`);
- bops:     MACs_i * b_w * a (b_w = 8, 4, b, 8);
- latency:  seconds from a callable latency(layer, choice). The default is the learned cost model
            (`costmodel_latency`: the XGBoost model's prediction for the int8 VNNI kernel that runs the layer,
            with the tile the policy picks for it). 4-bit weights run through the same int8 kernels on x86, so
            their predicted latency is the 8-bit one. pow2x<t> on the shift kernel is the measured shift-kernel
            model's prediction (costmodel/shiftadd.py; where it has none, the int8 prediction times t). The
            model has no LUT kernel: lut<b> is the int8 prediction times b / 8, the proportional model below
            anchored on the predicted int8 latency; pow2x<t> on the VNNI kernel is the int8 prediction.
            Only when no model can answer (no xgboost / model file, DYC_COSTMODEL=off, a layer no measured
            kernel covers) is every latency `proportional_latency` (MACs * b / 8 ns, a placeholder).
            The plan's `latency_source` and its printed report say which was used, per choice;
- accuracy: Omega_i(c);
- multiplies: MACs run by a multiplying kernel: MACs_i for 8 / 4 and for pow2x<t> on the VNNI kernel (or a
            GPU's), 0 for lut<b> (table lookups and adds) and pow2x<t> on the shift kernel.

ILP (`solve_bits`, scipy.optimize.milp). Binary x_ic (layer i takes choice c), sum_c x_ic = 1:

    minimize    sum_ic Omega_i(c) x_ic                                   (HAWQ), or with an accuracy budget
                sum_ic multiplies_i(c) x_ic, then sum Omega among the plans with that minimum
    subject to  sum_ic cost_k(i, c) x_ic <= L_k         for each budget kind k (size, bops, latency, accuracy)
                x_first,8 = x_last,8 = 1                                   (kept int8)
                x_a,c = x_b,c                                              for each tie (a, b), every c

Budgets are given (API/CLI) as fractions: size, bops and latency of the all-INT8 cost, L_k = f * cost_k(all 8);
accuracy of the float outputs' mean square P on the calibration data, sum_i Omega_i(c_i) <= f * P (f = 0.01: the
weights' predicted output SQNR >= 20 dB; activation quantization is not in it). HAWQ's r (L = cost(all 4) +
r (cost(all 8) - cost(all 4))) is reported where every layer has 4 bits; for size and BOPs f = (1 + r) / 2.
Default ties: weight layers that read the same activation tensor (a ResNet transition block's 1x1 downsample
conv and its first 3x3 conv: HAWQ's x4 = x6, ...) and layers sharing one weight constant.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from compiler.diagnostics import InvalidInput, Unsupported
from compiler.ir import Graph, Node, Value
from compiler.ops import linalg
from compiler.types import DType
from passes.quantize import (
    QuantConfig,
    batch_args,
    const_weight_matmul,
    integer_capable,
    quantize_array,
    spec_of,
    weight_spec,
)
from passes.sensitivity import float_outputs, output_perturbations, output_power

BITS = (4, 8)
KINDS = ("size", "bops", "latency", "accuracy")
OBJECTIVES = ("perturbation", "multiplies")
ACT_BITS = 8
REALIZATIONS = ("lut4", "lut2", "pow2x2", "pow2x1")   # what --quantize mixed offers besides the int8 / int4 grids

Choice = int | str        # 8 / 4: int8 / int4 grid; "lut1".."lut4": q.lut_matmul; "pow2x1", "pow2x2": shift/add
LatencyFn = Callable[["Layer", Choice], float]
_REALIZATION = re.compile(r"lut[1-4]|pow2x[12]")


def lut_bits(c: Choice) -> int:
    """b for "lut<b>", else 0."""
    return int(c[3:]) if isinstance(c, str) and c.startswith("lut") else 0


def pow2_terms(c: Choice) -> int:
    """t for "pow2x<t>", else 0."""
    return int(c[5:]) if isinstance(c, str) and c.startswith("pow2x") else 0


def weight_bits(c: Choice) -> int:
    """The bit width of the stored weight codes (8 for power-of-two codes in int8)."""
    return c if isinstance(c, int) else lut_bits(c) or 8


def _label(c: Choice) -> str:
    return f"{c} bits" if isinstance(c, int) else repr(c)


def check_choice(c: Choice) -> None:
    if c in BITS or (isinstance(c, str) and _REALIZATION.fullmatch(c)):
        return
    raise Unsupported(f"weight realization {c!r}", hint="8, 4, 'lut1'..'lut4', 'pow2x1' or 'pow2x2'")


# -- layers ---------------------------------------------------------------------------------
@dataclass
class Layer:
    """One weight layer as the ILP sees it. `choices` are its candidate realizations, `omega[c]` the objective
    term of choice c, `latency[c]` seconds (filled by `measure_costs`), `fixed` forces a choice."""

    name: str
    params: int
    macs: int = 0
    omega: dict[Choice, float] = field(default_factory=dict)
    latency: dict[Choice, float] = field(default_factory=dict)
    fixed: Choice | None = None
    sensitivity: float = 0.0                             # s_i (per-parameter curvature)
    delta: dict[Choice, float] = field(default_factory=dict)  # ||W_c - W||^2
    weight: str = ""                                     # the weight constant's name
    input: str = ""                                      # the activation it reads
    kernel: dict[str, Any] = field(default_factory=dict)  # kind, x_shape, w_shape, strides, pads, ...
    latency_note: str = ""                               # how latency[] was obtained
    choices: tuple[Choice, ...] = (8, 4)
    lut_group: int = 128                                 # rows per LUT weight group
    pow2_kernel: str = ""                                # what runs pow2x<t>: "shift" (no multiply), "vnni", ""

    def cost(self, kind: str, choice: Choice) -> float:
        if kind == "size":
            return self.weight_bytes(choice)
        if kind == "bops":
            return float(self.macs) * weight_bits(choice) * ACT_BITS
        if kind == "latency":
            if choice not in self.latency:
                raise InvalidInput(f"layer '{self.name}' has no {_label(choice)} latency",
                                   hint="fill Layer.latency (measure_costs(layers, latency=...))")
            return self.latency[choice]
        if kind == "accuracy":
            if choice not in self.omega:
                raise InvalidInput(f"layer '{self.name}' has no perturbation for {_label(choice)}")
            return self.omega[choice]
        if kind == "multiplies":
            return 0.0 if self.multiplication_free(choice) else float(self.macs)
        raise Unsupported(f"budget kind {kind!r}", hint=f"one of {KINDS}")

    def weight_bytes(self, choice: Choice) -> float:
        b = lut_bits(choice)
        if b:
            from passes.lut import packed_bytes
            k, n = self.kernel.get("w_shape", (self.params, 1))
            return float(packed_bytes(int(k), int(n), b, self.lut_group))
        return self.params * (4 if choice == 4 else 8) / 8

    def multiplication_free(self, choice: Choice) -> bool:
        return bool(lut_bits(choice)) or (bool(pow2_terms(choice)) and self.pow2_kernel == "shift")
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


def _choices(n: Node, realizations: Sequence[Choice], lut_group: int, pow2_kernel: str) -> tuple[Choice, ...]:
    """8; lut<b> for a linear layer with a 2-D weight short enough for its int32 accumulator (else 4: int4 in
    int8 containers); every pow2x<t> asked for when the shift kernel runs them (else int8 dominates them)."""
    from passes.lut import lut_fits
    linear = n.op is linalg.matmul and n.inputs[1].type.rank == 2
    luts = [c for c in realizations if lut_bits(c) and linear and
            lut_fits(n.inputs[1].type.shape[0], lut_bits(c), lut_group)]
    pow2 = [c for c in realizations if pow2_terms(c) and pow2_kernel == "shift" and (linear or n.op is linalg.conv)]
    return (8, *(luts or [4]), *pow2)


# -- sensitivity ----------------------------------------------------------------------------
def perturbation_sensitivity(g: Graph, batches: Sequence[Any], nodes: Sequence[Node],
                             bits: int = 4) -> list[float]:
    """d_i = mean squared change of the graph outputs (over the batches, averaged over the
    outputs) when only layer i's weight is replaced by Q_bits(W_i). `g` is float."""
    return output_perturbations(g, batches, [(n, fake_quant(n.inputs[1].const, _weight_axis(n), bits))
                                             for n in nodes])


def realized_weight(n: Node, choice: Choice, xs: list[np.ndarray] | None = None, lut_group: int = 128,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """Layer n's float weight as `choice` makes it (see the module docstring); `xs`, the layer's float input per
    batch, fits the power-of-two weights."""
    w, axis = n.inputs[1].const, _weight_axis(n)
    if choice in BITS:
        return fake_quant(w, axis, int(choice))
    spec = weight_spec(w, axis, 8)
    w8 = quantize_array(w, spec).astype(np.int64)
    shape = [1] * w.ndim
    shape[axis] = -1
    s8 = np.asarray(spec.scale, np.float64).reshape(shape)
    if lut_bits(choice):
        from passes.lut import lut_weight
        return (lut_weight(w8, lut_bits(choice), lut_group) * s8).astype(w.dtype)
    from passes.shiftadd import fit_node
    conv = n.op is linalg.conv
    mat = w8.reshape(w8.shape[0], -1).T if conv else w8
    v, alpha, _, _ = fit_node(n, mat, n.attrs["groups"] if conv else 1, xs or [], pow2_terms(choice),
                              rng or np.random.default_rng(0))
    eff = v * alpha
    return ((eff.T.reshape(w.shape) if conv else eff) * s8).astype(w.dtype)


def _realized_weights(g: Graph, batches: Sequence[Any], nodes: Sequence[Node],
                      layers: Sequence[Layer]) -> list[dict[Choice, np.ndarray]]:
    """Per layer, the float weight of 4 (for s_i) and of every choice but 8."""
    from passes.shiftadd import layer_inputs
    fit = [n for n, layer in zip(nodes, layers) if any(pow2_terms(c) for c in layer.choices)]
    xs = layer_inputs(g, [batch_args(g, b) for b in batches], fit) if fit else {}
    rng = np.random.default_rng(0)
    return [{c: realized_weight(n, c, xs.get(id(n)), layer.lut_group, rng)
             for c in dict.fromkeys((4, *layer.choices)) if c != 8} for n, layer in zip(nodes, layers)]


# -- costs ----------------------------------------------------------------------------------
def _latency_ratio(layer: Layer, choice: Choice) -> float:
    """The proportional model's latency of `choice` relative to int8: b / 8 for b-bit weights (T-MAC's LUT cost
    is linear in b); a power-of-two layer on the shift kernel one pass per term, on a multiplying kernel 1."""
    if pow2_terms(choice):
        return float(pow2_terms(choice)) if layer.pow2_kernel == "shift" else 1.0
    return weight_bits(choice) / 8


def proportional_latency(layer: Layer, bits: Choice) -> float:
    """PLACEHOLDER latency model: 1 ns per 8-bit MAC, linear in the weight bits (MACs * b / 8; a shift kernel
    MACs * terms). Only the explicit fallback when the cost model cannot answer (see `measure_costs`)."""
    return layer.macs * _latency_ratio(layer, bits) * 1e-9


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

    def fn(layer: Layer, bits: Choice) -> float:
        k = layer.kernel
        if not k:
            raise policy.LatencyUnavailable(f"layer '{layer.name}' has no kernel shape")
        extra = {key: k[key] for key in ("strides", "pads", "groups", "dilations") if key in k}
        sec, note = policy.predict_layer_latency(k["kind"], k["x_shape"], k["w_shape"], bits, target, **extra)
        parts = [t for t in layer.latency_note.split("; ") if t]
        layer.latency_note = "; ".join(parts + [t for t in note.split("; ") if t not in parts])
        return sec
    return fn



def _anchored(layer: Layer, choice: Choice, int8: float, target: Any = None) -> tuple[float, str]:
    """A realization's latency and the note that says how: pow2x<t> on the shift kernel from the measured
    shift-kernel model (costmodel/shiftadd.py), else from the layer's predicted int8 latency."""
    r = _latency_ratio(layer, choice)
    if lut_bits(choice):
        return int8 * r, (f"{choice}: {r:g} x the int8 prediction (no LUT kernel in the cost model: "
                          "proportional)")
    if layer.pow2_kernel == "shift":
        from costmodel import shiftadd as cs
        from costmodel.policy import LatencyUnavailable
        k = layer.kernel
        extra = {key: k[key] for key in ("strides", "pads", "groups", "dilations") if key in k}
        try:
            sec, _ = cs.predict_layer_latency(k["kind"], k["x_shape"], k["w_shape"], pow2_terms(choice),
                                              None if target is None else str(target), **extra)
            return sec, f"{choice}: the shift kernel's measured model (costmodel/shiftadd.py)"
        except (LatencyUnavailable, KeyError):
            return int8 * r, (f"{choice}: {r:g} x the int8 prediction (no shift-kernel prediction for this "
                              "layer: a pass per term)")
    return int8, f"{choice}: the int8 kernel's prediction (power-of-two codes in int8)"


def measure_costs(layers: Sequence[Layer], latency: LatencyFn | None = None, target: Any = None) -> str:
    """Fill every layer's latency[c] for c in its choices; returns where they came from. With `latency`
    given, from it ("given"). By default from the cost model (`costmodel_latency`; a realization it has no
    kernel for from the layer's int8 prediction, `_anchored`); if it cannot answer for some layer, every
    layer falls back to `proportional_latency` (one unit for the whole ILP), and the returned source says so
    and why."""
    if latency is not None:
        for layer in layers:
            layer.latency = {c: float(latency(layer, c)) for c in layer.choices}
        return "given"
    try:
        from costmodel.policy import LatencyUnavailable
    except Exception as e:  # noqa: BLE001 - the cost model package itself is unusable
        return _fallback(layers, f"cost model unavailable: {type(e).__name__}: {e}")
    fn = costmodel_latency(target)
    for layer in layers:
        layer.latency_note = ""
    try:
        got = [{b: float(fn(layer, b)) for b in (8, *(c for c in layer.choices if c in BITS))}
               for layer in layers]
    except LatencyUnavailable as e:
        return _fallback(layers, str(e))
    for layer, lat in zip(layers, got):
        for c in layer.choices:
            if c not in BITS:
                lat[c], note = _anchored(layer, c, lat[8], target)
                layer.latency_note += ("; " if layer.latency_note else "") + note
        layer.latency = {c: lat[c] for c in layer.choices}
    notes = sorted({t for layer in layers for t in layer.latency_note.split("; ") if t})
    return "cost model (predicted: " + "; ".join(notes) + ")" if notes else "cost model (predicted)"


def _fallback(layers: Sequence[Layer], reason: str) -> str:
    for layer in layers:
        layer.latency = {c: proportional_latency(layer, c) for c in layer.choices}
        layer.latency_note = PROPORTIONAL_SOURCE
    return f"{PROPORTIONAL_SOURCE}, because the cost model cannot answer: {reason}"


def _check_latency_budget(layers: Sequence[Layer], fraction: float, source: str) -> None:
    """A latency budget below all-INT8 needs some layer with a choice faster than its int8 kernel."""
    if fraction >= 1.0 or any(min(layer.latency.values()) < layer.latency[8] for layer in layers):
        return
    raise InfeasibleBudget(
        f"latency budget {fraction:g} x INT8 cannot be met: no layer has a choice faster than its int8 kernel "
        f"(4-bit conv weights run through the int8 kernels; int4 linear layers gain only at few rows; "
        f"latencies from {source}), so every plan has the all-INT8 latency",
        hint="use --size-budget (size_budget=) to trade accuracy for weight size, or a latency budget >= 1.0")


def total_cost(layers: Sequence[Layer], bits: Mapping[str, Choice], kind: str) -> float:
    return float(sum(layer.cost(kind, bits[layer.name]) for layer in layers))


def budget_limit(layers: Sequence[Layer], kind: str, fraction: float, power: float | None = None) -> float:
    """L = fraction * cost(all 8-bit), the budget the API's size_budget= / latency_budget= mean; for the
    accuracy budget L = fraction * the outputs' mean square `power`."""
    if not fraction > 0:
        raise InvalidInput(f"{kind} budget must be a positive fraction of the INT8 {kind}, got {fraction}")
    if kind == "accuracy":
        if not power:
            raise InvalidInput("the accuracy budget is a fraction of the outputs' mean square, measured "
                               "with the perturbation sensitivity; it is unknown here",
                               hint="drop sensitivity=")
        return fraction * power
    return fraction * sum(layer.cost(kind, 8) for layer in layers)


# -- the ILP --------------------------------------------------------------------------------
class InfeasibleBudget(InvalidInput):
    """No assignment of the layers' choices meets the budget(s) (exit code 2)."""

    kind = "infeasible budget"


def solve_bits(layers: Sequence[Layer], budget: float | Mapping[str, float], kind: str = "size",
               ties: Iterable[Sequence[str]] = (), keep_first_last: bool = True,
               objective: str | None = None) -> dict[str, Choice]:
    """The HAWQV3 ILP over realizations: one of `layer.choices` per layer (8 / 4 bits, "lut<b>", "pow2x<t>")
    subject to sum cost_kind <= budget (absolute units: bytes, BOPs, seconds, perturbation). `budget` may be a
    mapping {kind: limit} for several constraints at once. `objective`: "perturbation" (sum Omega, HAWQ's) or
    "multiplies" (MACs run by a multiplying kernel, then sum Omega among the plans with the fewest); default
    "multiplies" when the budgets hold "accuracy", else "perturbation". layers[0] and layers[-1] stay int8
    (keep_first_last), a layer with `fixed` keeps that choice, every tie group shares its choice.
    Raises InfeasibleBudget naming the smallest reachable cost of each budget that cannot be met."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    layers = list(layers)
    if not layers:
        return {}
    budgets = dict(budget) if isinstance(budget, Mapping) else {kind: float(budget)}
    objective = objective or ("multiplies" if "accuracy" in budgets else "perturbation")
    if objective not in OBJECTIVES:
        raise Unsupported(f"ILP objective {objective!r}", hint=f"one of {OBJECTIVES}")
    idx = {layer.name: i for i, layer in enumerate(layers)}
    if len(idx) != len(layers):
        raise InvalidInput("layer names must be unique")
    cols = [(i, c) for i, layer in enumerate(layers) for c in layer.choices]   # x_ic, one binary each
    col = {key: j for j, key in enumerate(cols)}
    m, owner = len(cols), np.array([i for i, _ in cols])
    lb, ub = np.zeros(m), np.ones(m)
    for i, layer in enumerate(layers):
        for c in layer.choices:
            check_choice(c)
        keep = layer.fixed
        if keep is not None and keep not in layer.choices:
            raise Unsupported(f"layer '{layer.name}': {_label(keep)} is not among its choices {layer.choices}",
                              hint="4 or 8, or a realization the layer can take")
        if keep_first_last and i in (0, len(layers) - 1):
            if keep not in (None, 8) or 8 not in layer.choices:
                raise InfeasibleBudget(f"layer '{layer.name}' is fixed at {_label(keep)}, but the first "
                                       "and last layers stay 8-bit", hint="keep_first_last=False")
            keep = 8
        if keep is not None:
            for c in layer.choices:
                ub[col[i, c]] = 1.0 if c == keep else 0.0

    one_hot = []                       # sum_c x_ic = 1
    for i, layer in enumerate(layers):
        r = np.zeros(m)
        r[[col[i, c] for c in layer.choices]] = 1.0
        one_hot.append(r)
    tie_rows = []                      # x_ac = x_bc for every choice of either
    for group in ties:
        group = list(group)
        missing = [t for t in group if t not in idx]
        if missing:
            raise InvalidInput(f"tie group {group} names unknown layer(s) {missing}",
                               hint=f"layers: {', '.join(idx)}")
        for a, b in pairwise(group):
            ia, ib = idx[a], idx[b]
            for c in dict.fromkeys((*layers[ia].choices, *layers[ib].choices)):
                r = np.zeros(m)
                if (ia, c) in col:
                    r[col[ia, c]] = 1.0
                if (ib, c) in col:
                    r[col[ib, c]] -= 1.0
                tie_rows.append(r)
    rows = [(r, 1.0, 1.0) for r in one_hot] + [(r, 0.0, 0.0) for r in tie_rows]
    for k, limit in budgets.items():   # each layer's cheapest choice as the base keeps the rows well scaled
        cost = _costs(layers, cols, k)
        base = np.array([min(layer.cost(k, c) for c in layer.choices) for layer in layers])
        rows.append((cost - base[owner], -np.inf, float(limit) - base.sum()))

    def solve(c: np.ndarray, extra: list = ()):
        cons = []
        for r, lv, hv in [*rows, *extra]:    # one row per constraint, each scaled to max |a| = 1
            s = np.abs(r).max()
            if s > 0:
                cons.append(LinearConstraint(r[None] / s, lv / s, hv / s))
            elif lv > 0 or hv < 0:           # 0 outside [lo, hi]: no assignment can help
                return None
        if np.abs(c).max() > 0:
            c = c / np.abs(c).max()          # units do not matter; keep the solver well scaled
        res = milp(c, integrality=np.ones(m), bounds=Bounds(lb, ub), constraints=cons,
                   options={"mip_rel_gap": 0.0})     # tiny problems: solve to proven optimality
        if res.status == 2 or res.x is None:
            return None
        if not res.success:
            raise Unsupported(f"the mixed-precision ILP did not solve: {res.message}")
        return res.x

    omega = _costs(layers, cols, "accuracy")
    extra = []
    if objective == "multiplies":      # lexicographic: the fewest multiplies, then the least perturbation
        mult = _costs(layers, cols, "multiplies")
        x = solve(mult)
        if x is None:
            _raise_infeasible(layers, budgets, cols, lb, ub, one_hot + tie_rows)
        best = float(mult @ (x > 0.5))
        extra = [(mult, -np.inf, best * (1 + 1e-9) + 0.5)]
    x = solve(omega, extra)
    if x is None:
        _raise_infeasible(layers, budgets, cols, lb, ub, one_hot + tie_rows)
    bits = {layers[i].name: c for (i, c), v in zip(cols, x) if v > 0.5}
    for k, limit in budgets.items():      # milp's tolerance must not let a plan exceed a budget
        used = total_cost(layers, bits, k)
        if used > limit * (1 + 1e-9) + 1e-12:
            _raise_infeasible(layers, budgets, cols, lb, ub, one_hot + tie_rows)
    return bits


def _costs(layers: Sequence[Layer], cols: Sequence[tuple[int, Choice]], kind: str) -> np.ndarray:
    return np.array([layers[i].cost(kind, c) for i, c in cols], np.float64)


def _raise_infeasible(layers, budgets, cols, lb, ub, eq_rows) -> None:
    """Explain which budget cannot be met: the cheapest reachable cost of each kind."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    n_eq = len(eq_rows) - len(layers)
    cons = [LinearConstraint(np.array(eq_rows), [1.0] * len(layers) + [0.0] * n_eq,
                             [1.0] * len(layers) + [0.0] * n_eq)]
    parts = []
    for k, limit in budgets.items():
        cost = _costs(layers, cols, k)
        r = milp(cost, integrality=np.ones(len(cols)), bounds=Bounds(lb, ub), constraints=cons)
        if not r.success:
            raise InfeasibleBudget("the tie groups contradict the fixed choices (first/last layer "
                                   "8-bit, Layer.fixed)", hint=f"ties: {n_eq} equalities")
        best = float(r.fun)
        all8 = float(sum(layer.cost(k, 8) for layer in layers)) or float("nan")
        if best > limit * (1 + 1e-9):
            parts.append(f"{k} budget {limit:.6g} is below the smallest reachable {k} {best:.6g} "
                         f"({best / all8:.3f} of all-INT8 {all8:.6g}; every free layer at its cheapest "
                         f"choice, first/last and fixed layers as fixed)")
    msg = "; ".join(parts) or f"the {' and '.join(budgets)} budgets cannot be met together"
    raise InfeasibleBudget(f"no assignment of the layers' weight choices meets the budget: {msg}",
                           hint="raise the budget fraction (--size-budget, --latency-budget, "
                                "--accuracy-budget)")


# -- the plan -------------------------------------------------------------------------------
@dataclass
class MixedPlan:
    """What the ILP chose: per layer the choice (`bits`: 8 / 4, or "lut<b>" / "pow2x<t>"), sensitivity and
    costs; per budget kind the limit, the plan's total and the all-8 total. `output_power`: the float outputs'
    mean square (the accuracy budget's unit); `minimized`: the ILP's objective."""

    layers: list[Layer]
    bits: dict[str, Choice]
    budgets: dict[str, float]                     # kind -> absolute limit
    fractions: dict[str, float]                   # kind -> the fraction asked for
    method: str = "perturbation"
    ties: list[tuple[str, ...]] = field(default_factory=list)
    latency_source: str = ""                      # where Layer.latency came from (measure_costs)
    output_power: float = 0.0
    minimized: str = "perturbation"
    lut_group: int = 128
    pow2_kernel: str = ""

    def total(self, kind: str, bits: Mapping[str, Choice] | Choice | None = None) -> float:
        if isinstance(bits, (int, str)):
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

    def chosen(self, prefix: str) -> list[str]:
        """The realizations the plan uses that start with `prefix` ("lut", "pow2x"), sorted."""
        return sorted({c for c in self.bits.values() if isinstance(c, str) and c.startswith(prefix)})

    def selects(self, choice: Choice) -> Callable[[Node], bool]:
        """Whether an integer-graph node is a layer the plan gave `choice`: its weight stands for
        (QuantSpec.source) the float weight of such a layer (`with_weight_bits` names them)."""
        weights = {layer.weight for layer in self.layers if self.bits[layer.name] == choice}

        def pick(n: Node) -> bool:
            s = spec_of(n.inputs[1]) if len(n.inputs) > 1 and n.inputs[1].is_const else None
            return s is not None and s.source in weights
        return pick

    def rows(self) -> list[dict]:
        return [{"layer": layer.name, "bits": self.bits[layer.name], "params": layer.params,
                 "macs": layer.macs, "sensitivity": layer.sensitivity,
                 "omega4": layer.omega.get(4), "omega8": layer.omega[8], "omega": dict(layer.omega),
                 "bytes": layer.cost("size", self.bits[layer.name]),
                 "latency_s": layer.latency.get(self.bits[layer.name]),
                 "multiplication_free": layer.multiplication_free(self.bits[layer.name]),
                 "choices": layer.choices, "fixed": layer.fixed is not None} for layer in self.layers]

    def __str__(self) -> str:
        head = f"{'layer':<28} {'choice':>6} {'params':>9} {'MACs':>11} {'s_i':>10} " \
               f"{'Omega':>10} {'Omega(8)':>10} {'bytes':>9}"
        objective = "multiplies, then perturbation" if self.minimized == "multiplies" else "perturbation"
        lines = [f"mixed precision plan (sensitivity: {self.method}; minimized: {objective})", head,
                 "-" * len(head)]
        for r in self.rows():
            tag = "*" if r["fixed"] else " "
            lines.append(f"{r['layer']:<28} {r['bits']!s:>5}{tag} {r['params']:>9} {r['macs']:>11} "
                         f"{r['sensitivity']:>10.3g} {r['omega'][r['bits']]:>10.3g} {r['omega8']:>10.3g} "
                         f"{r['bytes']:>9.0f}")
        lines.append("(* kept 8-bit: first/last layer)")
        if any(c not in BITS for layer in self.layers for c in layer.choices):
            pow2 = "pow2x<t> = t-term shift/add on the shift kernel" if self.pow2_kernel == "shift" else \
                f"no shift/add (its kernel here, {self.pow2_kernel or 'a multiply'}, makes int8 dominate it)"
            lines.append(f"choices: 8 / 4 = int8 / int4 grid (int8 kernels), lut<b> = q.lut_matmul b-bit, {pow2}")
        if self.ties:
            lines.append("tied: " + "; ".join(" = ".join(t) for t in self.ties))
        has4 = all(4 in layer.choices for layer in self.layers)
        for k in KINDS[:3]:
            t8, used = self.total(k, 8), self.total(k)
            line = f"{k:>8}: {used:.6g} = {used / t8:.3f} of all-INT8 {t8:.6g}" if t8 else f"{k:>8}: {used:.6g}"
            if has4 and t8 > self.total(k, 4):
                t4 = self.total(k, 4)
                line += f" (HAWQ r = {(used - t4) / (t8 - t4):.3f})"
            lines.append(line + self._budget(k, f"{self.fractions.get(k, 0):.3f} x INT8"))
        if self.output_power > 0:
            used, t8 = self.total("accuracy"), self.total("accuracy", 8)
            lines.append(f"accuracy: sum Omega {used:.4g} = {used / self.output_power:.4g} x the outputs' mean "
                         f"square {self.output_power:.4g} (all-INT8 {t8 / self.output_power:.4g})" +
                         self._budget("accuracy", f"{self.fractions.get('accuracy', 0):g} x it"))
        used, t8 = self.total("multiplies"), self.total("multiplies", 8)
        if t8:
            lines.append(f"multiplies: {used:.6g} MACs by a multiplying kernel = {used / t8:.3f} of all-INT8")
        if self.latency_source:
            lines.append(f"latency: {self.latency_source}")
        lines.append(f"objective sum Omega = {self.objective:.4g}")
        return "\n".join(lines)

    def _budget(self, kind: str, fraction: str) -> str:
        if kind not in self.budgets:
            return ""
        ok = self.total(kind) <= self.budgets[kind] * (1 + 1e-9)
        return f"; budget {self.budgets[kind]:.6g} = {fraction} {'met' if ok else 'EXCEEDED'}"


def plan_mixed(g: Graph, batches: Sequence[Any], size_budget: float | None = None,
               latency_budget: float | None = None, bops_budget: float | None = None, *,
               accuracy_budget: float | None = None, realizations: Iterable[Choice] = (),
               latency: LatencyFn | None = None, sensitivity: Mapping[str, float] | None = None,
               ties: Iterable[Sequence[str]] | None = None, keep_8bit: Iterable[str] = (),
               sensitivity_batches: int = 4, target: Any = None, lut_group: int = 128,
               pow2_kernel: str = "") -> MixedPlan:
    """Layers, sensitivities, costs and the ILP solution for a canonicalized float graph.
    `realizations` (e.g. REALIZATIONS) adds LUT / shift-add choices to the int8 / int4 grids; `pow2_kernel` is
    what would run a pow2x<t> layer ("shift", "vnni", "": the target's multiply; shift/add is a choice only
    on "shift"). `accuracy_budget` (a fraction
    of the outputs' mean square) bounds the summed perturbation and makes the ILP minimize multiplies.
    `sensitivity` ({layer name: s_i}, e.g. from `hutchinson_sensitivity` + `match_torch_weights`)
    replaces the output-perturbation estimate. `ties` replaces the default tie groups. `latency`
    (default: the cost model's prediction for `target`, None = the host) gives the latencies."""
    fractions = {k: f for k, f in (("size", size_budget), ("latency", latency_budget),
                                   ("bops", bops_budget), ("accuracy", accuracy_budget)) if f is not None}
    if not fractions:
        raise InvalidInput("quantize='mixed' needs a budget: size_budget, latency_budget, bops_budget or "
                           "accuracy_budget (a fraction of the all-INT8 cost, e.g. 0.7; accuracy: of the "
                           "outputs' mean square, e.g. 0.01)")
    realizations = tuple(realizations)
    for c in realizations:
        check_choice(c)
    if "accuracy" in fractions and sensitivity is not None:
        raise InvalidInput("accuracy_budget bounds the measured output perturbation; it cannot be used with a "
                           "Hessian sensitivity", hint="drop sensitivity= (or accuracy_budget=)")
    nodes = weight_layers(g)
    if not nodes:
        raise Unsupported("mixed precision found no conv / matmul-by-constant layer to quantize")
    names = layer_names(nodes)
    keep = set(keep_8bit)
    unknown = keep - set(names)
    if unknown:
        raise InvalidInput(f"keep_8bit names unknown layer(s) {sorted(unknown)}",
                           hint=f"layers: {', '.join(names)}")
    layers = [Layer(name, int(n.inputs[1].const.size), _macs(n), fixed=8 if name in keep else None,
                    weight=n.inputs[1].name, input=n.inputs[0].name, kernel=_kernel_info(n),
                    choices=_choices(n, realizations, lut_group, pow2_kernel), lut_group=lut_group,
                    pow2_kernel=pow2_kernel)
              for n, name in zip(nodes, names)]
    batches = list(batches)[:max(1, sensitivity_batches)]
    realized = _realized_weights(g, batches, nodes, layers)
    for n, layer, ws in zip(nodes, layers, realized):
        w = n.inputs[1].const.astype(np.float64)
        layer.delta = {8: _delta(n.inputs[1].const, _weight_axis(n), 8),
                       **{c: float(np.sum((wc.astype(np.float64) - w) ** 2)) for c, wc in ws.items()}}
    power = 0.0
    if sensitivity is None:
        method = "perturbation"
        ref = float_outputs(g, batches)
        power = output_power(ref)
        probes = [(n, c, wc) for n, ws in zip(nodes, realized) for c, wc in ws.items()]
        d = dict(zip(((id(n), c) for n, c, _ in probes),
                     output_perturbations(g, batches, [(n, wc) for n, _, wc in probes], ref)))
        for n, layer in zip(nodes, layers):
            layer.sensitivity = d[id(n), 4] / layer.delta[4] if layer.delta[4] > 0 else 0.0
            layer.omega = {c: d[id(n), c] for c in layer.delta if c != 8}
            layer.omega[8] = layer.sensitivity * layer.delta[8]
    else:
        method = "hessian"
        missing = [name for name in names if name not in sensitivity]
        if missing:
            raise InvalidInput(f"sensitivity lacks layer(s) {missing}", hint=f"layers: {', '.join(names)}")
        for layer in layers:
            layer.sensitivity = float(sensitivity[layer.name])
            layer.omega = {c: layer.sensitivity * dc for c, dc in layer.delta.items()}
    source = measure_costs(layers, latency, target)
    if "latency" in fractions:
        _check_latency_budget(layers, fractions["latency"], source)
    tie_groups = default_ties(g, nodes, names) if ties is None else [tuple(t) for t in ties]
    budgets = {k: budget_limit(layers, k, f, power) for k, f in fractions.items()}
    objective = "multiplies" if "accuracy" in budgets else "perturbation"
    bits = solve_bits(layers, budgets, ties=tie_groups, objective=objective)
    return MixedPlan(layers, bits, budgets, fractions, method, tie_groups, source, power, objective, lut_group,
                     pow2_kernel)


# -- the driver -----------------------------------------------------------------------------
def with_weight_bits(g: Graph, plan: MixedPlan, config: QuantConfig) -> Graph:
    """A copy of g whose layer weights carry the plan's grids: 4 bits for the int4 choice, 8 for the rest (LUT
    and shift/add requantize the int8 weight after the integer rewrite); annotate keeps a grid a weight already
    has. Each grid's `source` names its float weight, which is how `MixedPlan.selects` finds the layer later."""
    from passes.quantize import with_quant
    ag = g.clone()
    nodes = weight_layers(ag)
    for n, name in zip(nodes, layer_names(nodes)):
        w = n.inputs[1]
        bits = 4 if plan.bits[name] == 4 else 8
        spec = weight_spec(w.const, _weight_axis(n) if config.per_channel else None, bits, w.name)
        n.inputs[1] = Value(w.name, with_quant(w.type, spec), w.const)
    return ag


def check_bits(ig: Graph, plan: MixedPlan) -> None:
    """The integer graph holds exactly as many int4 weight tensors, q.lut_matmul of each width and power-of-two
    coded layers as the plan asked for (a guard against a rewrite dropping or skipping a planned layer)."""
    from collections import Counter

    from compiler.ops import lut, quant
    got: Counter = Counter()
    for n in ig.walk():
        if n.op is lut.lut_matmul:
            got[f"lut{n.attrs['bits']}"] += 1
        elif n.op in (quant.conv, quant.matmul) and len(n.inputs) > 1 and n.inputs[1].is_const:
            if n.attrs.get("weight_code"):
                got[n.attrs["weight_code"]] += 1
            elif n.inputs[1].type.dtype is DType.I4:
                got[4] += 1
    want = Counter(c for c in plan.bits.values() if c != 8)
    if got != want:
        def show(cnt: Counter) -> str:
            return ", ".join(f"{v} x {c}" for c, v in sorted(cnt.items(), key=str)) or "none"
        raise Unsupported(f"the integer graph has {show(got)} non-int8 weight layers; the plan asked for "
                          f"{show(want)}",
                          hint="a planned layer could not be rewritten (its accumulator feeds an op other "
                               "than a requantize or dequantize); keep it int8 with keep_8bit=")
