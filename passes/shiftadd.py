"""shiftadd: post-training shift/add reparameterization of the int8 weights (DeepShift, ShiftAddViT's shift layers).

After the int8 rewrite (passes/dyadic.py) every q.conv / q.matmul with a constant per-channel weight gets, per
output channel c, weights that are sums of `terms` signed powers of two (1 or 2 terms, exponents 0..7):

    s8_c * w8[k, c]  ~=  s_c * v[k, c],   v[k, c] = sum_t sign_t * 2^p_t in [-127, 127],   s_c = alpha_c * s8_c

so the integer weight still fits int8 and the op's meaning (integer accumulation) is unchanged: the interpreter
stays the oracle, and the VNNI kernels can run the new weights as they are. The per-channel factor alpha_c moves
into the accumulator's scale: the bias is re-expressed at the new scale and every consumer's dyadic requant
(or dequantize) is recomputed for it, as passes/dyadic.py does.

How alpha and v are chosen: against the layer's OUTPUT on the calibration data, not the weight error. With X the
layer's integer inputs (zero point removed, im2col rows for a conv) and G = X^T X / rows, the output error of
channel c is d_c^T G d_c with d_c = w8_c - alpha_c v_c. Per channel: a few candidate scales (the largest weight
at the top level, times 2^(-1/2 .. 1) in eighths of an octave), each rounded to the nearest level and its alpha
refitted by least squares; the best one is then improved greedily weight by weight (round down or up, whichever
lowers the output error, a coordinate descent over the rows of G), alpha refitted again. The bias absorbs the
mean of the remaining error (bias correction). Each rewritten op carries `weight_code` ("pow2x1" / "pow2x2")
and `realization`, the kernel that runs it ("vnni" or "shift"; with --shiftadd-kernel auto per layer the one
predicted faster, `kernel_choice`: the learned model's int8 VNNI latency against the measured shift-kernel
model of costmodel/shiftadd.py).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew, linalg, quant as q
from compiler.ops.quant import INT_RANGE, dyadic
from compiler.types import DType
from passes.base import register_pass
from passes.quantize import spec_of, with_quant

CODES = {1: "pow2x1", 2: "pow2x2"}
REALIZATIONS = ("vnni", "shift")
MAX_EXP = 7                       # 2^7 - 2^0 = 127: two terms reach the whole symmetric int8 range
SCALE_STEPS = np.arange(-4, 9) / 8.0          # candidate alphas: alpha0 * 2^step
SWEEPS = 3                        # greedy passes over the weights (each followed by an alpha refit)
MAX_ROWS = 32768                  # calibration rows per layer kept for G (a fixed-seed subsample beyond)
I32_MIN, I32_MAX = INT_RANGE[DType.I32]


# -- the level sets ------------------------------------------------------------------------------------------------
def levels(terms: int) -> np.ndarray:
    """Sorted integers in [-127, 127] that are 0 or a sum of `terms` signed powers of two 2^0..2^7."""
    pows = [s << p for p in range(MAX_EXP + 1) for s in (1, -1)]
    vals = {0, *pows}
    if terms == 2:
        vals |= {a + b for a in pows for b in pows}
    elif terms != 1:
        raise ValueError(f"shift/add takes 1 or 2 terms, got {terms}")
    return np.array(sorted(v for v in vals if -127 <= v <= 127), np.int64)


def is_pow2_code(w: np.ndarray, terms: int) -> bool:
    """Every entry of w is on the `terms`-term level set."""
    return bool(np.isin(np.asarray(w, np.int64), levels(terms)).all())


def _nearest(r: np.ndarray, lv: np.ndarray) -> np.ndarray:
    i = np.clip(np.searchsorted(lv, r), 1, len(lv) - 1)
    lo, hi = lv[i - 1], lv[i]
    return np.where(r - lo <= hi - r, lo, hi).astype(np.float64)


def _neighbours(r: np.ndarray, lv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The levels just below and above r (both the end level outside the range)."""
    i = np.clip(np.searchsorted(lv, r, side="right"), 1, len(lv) - 1)
    return lv[i - 1].astype(np.float64), lv[i].astype(np.float64)


# -- the fit -------------------------------------------------------------------------------------------------------
def _refit(w: np.ndarray, v: np.ndarray, gram: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Least-squares alpha per channel: argmin_a (w - a v)^T G (w - a v) = v^T G w / v^T G v."""
    gv = gram @ v
    num, den = (gv * w).sum(0), (gv * v).sum(0)
    ok = (den > 0) & (num > 0)
    return np.where(ok, num / np.where(ok, den, 1.0), alpha)


def _error(w: np.ndarray, v: np.ndarray, alpha: np.ndarray, gram: np.ndarray) -> np.ndarray:
    d = w - alpha * v
    return ((gram @ d) * d).sum(0)


def _greedy(w: np.ndarray, v: np.ndarray, alpha: np.ndarray, gram: np.ndarray, lv: np.ndarray) -> np.ndarray:
    """One pass over the weights: each takes the level just below or above w / alpha (or keeps its own) that
    lowers the channel's output error most; all channels at once."""
    v = v.copy()
    gd = gram @ (w - alpha * v)                       # (F, C): G d, kept current
    diag = np.diag(gram)
    for i in range(w.shape[0]):
        lo, hi = _neighbours(w[i] / alpha, lv)
        best, gain = v[i], np.zeros_like(alpha)
        for cand in (lo, hi):
            delta = cand - v[i]
            change = -2.0 * alpha * delta * gd[i] + (alpha * delta) ** 2 * diag[i]
            take = change < gain - 1e-12
            best, gain = np.where(take, cand, best), np.where(take, change, gain)
        step = best - v[i]
        if step.any():
            gd -= np.outer(gram[:, i], alpha * step)
            v[i] = best
    return v


def fit_layer(w: np.ndarray, gram: np.ndarray, terms: int, sweeps: int = SWEEPS) -> tuple[np.ndarray, np.ndarray]:
    """w (F, C) int weights of C output channels, gram (F, F) = X^T X / rows of the layer's inputs ->
    (v (F, C) int64 on the level set, alpha (C,)) with s8 * w ~= s8 * alpha * v in output error."""
    lv = levels(terms)
    w = np.asarray(w, np.float64)
    amax = np.abs(w).max(0)
    live = amax > 0
    base = np.where(live, amax, 1.0) / lv[-1]
    best_v, best_a, best_e = np.zeros_like(w), np.ones_like(base), np.full(base.shape, np.inf)
    for step in SCALE_STEPS:
        alpha = base * 2.0 ** step
        v = _nearest(w / alpha, lv)
        alpha = _refit(w, v, gram, alpha)
        e = _error(w, v, alpha, gram)
        take = e < best_e
        best_v[:, take], best_a[take], best_e[take] = v[:, take], alpha[take], e[take]
    v, alpha = best_v, best_a
    for _ in range(sweeps):
        v = _greedy(w, v, alpha, gram, lv)
        alpha = _refit(w, v, gram, alpha)
    v[:, ~live], alpha[~live] = 0.0, 1.0
    return v.astype(np.int64), alpha


def output_error(w: np.ndarray, v: np.ndarray, alpha: np.ndarray, gram: np.ndarray) -> float:
    """Relative output error of the layer: ||X (w - alpha v)|| / ||X w|| over all channels."""
    w = np.asarray(w, np.float64)
    den = float(((gram @ w) * w).sum())
    return float(np.sqrt(_error(w, v, alpha, gram).sum() / den)) if den > 0 else 0.0


# -- the layers and their calibration inputs -------------------------------------------------------------------------
def _eligible(n: Node) -> bool:
    """A q.conv / q.matmul with a constant int8 weight quantized per output channel (zero point 0)."""
    if n.op not in (q.conv, q.matmul) or n.attrs["weight_code"] or len(n.inputs) < 2:
        return False
    w = n.inputs[1]
    s = spec_of(w) if w.is_const else None
    if s is None or w.type.dtype is not DType.I8 or any(z for z in s.zero_point):
        return False
    return n.op is q.conv or (w.type.rank == 2 and n.attrs["b_zero_point"] == 0)


def layer_inputs(g: Graph, batches: Iterable[Sequence[np.ndarray]], nodes: list[Node]) -> dict[int, list]:
    """The data input of each node in `nodes` on every calibration batch (the interpreter's loop, keeping them)."""
    want = {id(n): n for n in nodes}
    seen: dict[int, list] = {k: [] for k in want}
    for batch in batches:
        env: dict[int, np.ndarray] = {id(v): np.asarray(a) for v, a in zip(g.inputs, batch)}
        for n in g.nodes:
            ins = [v.const if v.is_const else env[id(v)] for v in n.inputs]
            if id(n) in want:
                seen[id(n)].append(ins[0])
            for v, o in zip(n.outputs, n.op.reference(ins, n.attrs)):
                env[id(v)] = np.asarray(o)
    return seen


def _rows(n: Node, x: np.ndarray) -> np.ndarray:
    """The layer's input rows with the zero point removed: im2col (ci/g * kh * kw columns per group, groups
    side by side) for a conv, the last axis for a matmul. A float linalg conv / matmul (no zero point) too."""
    if n.op in (q.matmul, linalg.matmul):
        return x.reshape(-1, x.shape[-1]).astype(np.float64) - n.attrs.get("a_zero_point", 0)
    a = n.attrs
    kh, kw = n.inputs[1].type.shape[2:]
    pt, pl, pb, pr = a["pads"]
    sh, sw = a["strides"]
    dh, dw = a["dilations"]
    xp = np.pad(x.astype(np.float64) - a.get("x_zero_point", 0), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh, ow = n.outputs[0].type.shape[2:]
    cols = [xp[:, :, r * dh: r * dh + sh * (oh - 1) + 1: sh, s * dw: s * dw + sw * (ow - 1) + 1: sw]
            for r in range(kh) for s in range(kw)]
    p = np.stack(cols, axis=2).reshape(x.shape[0], x.shape[1], kh * kw, oh, ow)
    return p.transpose(0, 3, 4, 1, 2).reshape(-1, x.shape[1] * kh * kw)


def _gram(n: Node, xs: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    rows = np.concatenate([_rows(n, x) for x in xs])
    if len(rows) > MAX_ROWS:
        rows = rows[rng.choice(len(rows), MAX_ROWS, replace=False)]
    return rows.T @ rows / len(rows), rows.mean(0)


def _weight_matrix(n: Node) -> tuple[np.ndarray, int]:
    """(F, C) weights of the layer and its number of groups (columns of group i: the i-th block of C)."""
    w = np.asarray(n.inputs[1].const, np.int64)
    if n.op is q.matmul:
        return w, 1
    return w.reshape(w.shape[0], -1).T, n.attrs["groups"]


# -- the rewrite -----------------------------------------------------------------------------------------------------
def layer_shape(n: Node) -> tuple[str, tuple[int, ...], tuple[int, ...], dict[str, Any]]:
    """(kind, x shape, w shape, conv attributes) of a q.conv / q.matmul, as the cost models take a layer."""
    x, w = tuple(n.inputs[0].type.shape), tuple(n.inputs[1].type.shape)
    if n.op is q.conv:
        a = n.attrs
        return "conv", x, w, {"strides": tuple(a["strides"]), "pads": tuple(a["pads"]),
                              "groups": int(a["groups"]), "dilations": tuple(a["dilations"])}
    return "matmul", x, w, {}


def predict_kernels(n: Node, terms: int, target: Any = None) -> dict[str, Any]:
    """The two kernels' predicted seconds for layer `n` with `terms`-term weights: {"vnni_s": the learned
    model's int8 VNNI prediction (`costmodel.policy.predict_layer_latency`), "shift_s": the measured
    shift-kernel model's (`costmodel.shiftadd.predict_layer_latency`), "note": why one is None, or ""}."""
    from costmodel import policy, shiftadd as cs
    kind, x, w, conv = layer_shape(n)
    tgt = None if target is None else str(target)
    out: dict[str, Any] = {"vnni_s": None, "shift_s": None, "note": ""}
    notes = []
    for key, predict, arg in (("vnni_s", policy.predict_layer_latency, 8),
                              ("shift_s", cs.predict_layer_latency, terms)):
        try:
            out[key] = float(predict(kind, x, w, arg, tgt, **conv)[0])
        except policy.LatencyUnavailable as e:
            notes.append(f"no {key[:-2]} prediction: {e}")
    out["note"] = "; ".join(notes)
    return out


def kernel_choice(target: Any, node: Node | None = None, terms: int = 2) -> dict[str, Any]:
    """{"realization", "vnni_s", "shift_s", "why"}: which kernel runs a power-of-two layer and why.

    "" for a target other than the CPU (the GPU lowers the op as it is); "shift" on a CPU without VNNI (the
    VNNI kernel cannot run there). Otherwise, per layer, the faster of the two predictions: the int8 VNNI
    kernel fed the power-of-two weights (the learned cost model) against the shift-and-add kernel
    (compiler/backends/tvm_kernels/shiftadd.py; the measured model of costmodel/shiftadd.py), both at the
    models' one thread. Where either cannot predict (no layer given, a grouped or dilated conv, no model):
    "vnni", what benchmarks/shiftadd_vs_vnni.py and the shift model's data measured faster on every layer
    shape (on a Zen 4 core 1.2-39x against 1 term, 1.2-63x against 2, median 8x and 13x: one vpdpbusd does
    64 multiply-accumulates, the shift loop 16 lanes of shift, xor and add per term)."""
    pred: dict[str, Any] = {"vnni_s": None, "shift_s": None, "note": ""}
    if target is None or getattr(target, "kind", "llvm") != "llvm":
        return {"realization": "", **pred, "why": "not a CPU target: the op is lowered as it is"}
    from costmodel.features import target_info
    ti = target_info(str(target))
    if node is not None:
        pred = predict_kernels(node, terms, target)
    vnni_s, shift_s = pred["vnni_s"], pred["shift_s"]
    base = {"vnni_s": vnni_s, "shift_s": shift_s}
    if not ti.vnni:
        return {"realization": "shift", **base, "why": f"{ti.mcpu} has no VNNI: the shift kernel"}
    if vnni_s is None or shift_s is None:
        why = pred["note"] or "no layer to predict"
        return {"realization": "vnni", **base, "why": f"{why}; VNNI, measured faster on every layer shape"}
    pick = "shift" if shift_s < vnni_s else "vnni"
    return {"realization": pick, **base,
            "why": f"predicted: shift {shift_s * 1e3:.4g} ms vs VNNI {vnni_s * 1e3:.4g} ms"}


def choose_realization(target: Any, node: Node | None = None, terms: int = 2) -> str:
    """The kernel that runs a power-of-two layer ("vnni", "shift" or ""): `kernel_choice`'s realization --
    per layer the faster predicted kernel on a VNNI CPU; without `node` the rule for a layer the models
    cannot price ("vnni" there, "shift" on a CPU without VNNI, "" off the CPU)."""
    return kernel_choice(target, node, terms)["realization"]


class _Layer:
    """One eligible node and the values its scale reaches: the bias constant and the accumulator consumers."""

    def __init__(self, g: Graph, n: Node, uses: dict):
        self.node, self.bias_node, self.bias_index = n, None, None
        self.axis = 1 if n.op is q.conv else n.outputs[0].type.rank - 1
        carrier = n.outputs[0]
        if n.op is q.conv and len(n.inputs) > 2:
            self.bias_node, self.bias_index = n, 2
        elif n.op is q.matmul:
            users = uses.get(carrier, [])
            if len(users) == 1 and users[0][0].op is ew.add:
                add = users[0][0]
                other = add.inputs[1 - users[0][1]]
                if other.is_const and other.type.dtype is DType.I32:
                    self.bias_node, self.bias_index = add, 1 - users[0][1]
                    carrier = add.outputs[0]
        self.carriers = [n.outputs[0]] + ([carrier] if carrier is not n.outputs[0] else [])
        self.consumers = [u for u, _ in uses.get(carrier, [])]
        self.ok = carrier not in g.outputs and bool(self.consumers) and all(
            (u.op is q.requant and u.attrs["in_zero_point"] == 0) or u.op is q.dequantize for u in self.consumers)


def _scaled(v: Value, scales: Sequence[float], axis: int) -> None:
    s = spec_of(v)
    if s is not None:
        v.type = with_quant(v.type, dataclasses.replace(s, scale=tuple(float(np.float32(x)) for x in scales),
                                                        zero_point=(0,) * len(scales), axis=axis))


def _rescaled_consumer(u: Node, alpha: np.ndarray, axis: int) -> Node:
    c = len(alpha)
    if u.op is q.dequantize:
        s = np.broadcast_to(np.asarray(u.attrs["scale"], np.float64), (c,)) * alpha
        attrs = {**u.attrs, "scale": tuple(float(np.float32(x)) for x in s), "zero_point": (0,) * c, "axis": axis}
        return Node(u.op, u.inputs, attrs, u.outputs, u.name, u.loc)
    m = np.broadcast_to(np.asarray(u.attrs["multiplier"], np.float64), (c,))
    sh = np.broadcast_to(np.asarray(u.attrs["shift"], np.float64), (c,))
    pairs = [dyadic(mi / 2.0 ** ci * a) for mi, ci, a in zip(m, sh, alpha)]
    if len(set(pairs)) == 1:
        pairs = pairs[:1]
    attrs = {**u.attrs, "multiplier": tuple(p[0] for p in pairs), "shift": tuple(p[1] for p in pairs),
             "axis": axis if len(pairs) > 1 else u.attrs["axis"]}
    return Node(u.op, u.inputs, attrs, u.outputs, u.name, u.loc)


def fit_node(n: Node, w: np.ndarray, groups: int, xs: list[np.ndarray], terms: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """The fit of one layer: w (F, C) int weights (`groups` blocks of columns), xs its data input per batch ->
    (v (F, C) on the level set, alpha (C,), relative output error, mean output error per channel (the bias
    correction)). `n` may be the integer node or its float original (linalg conv / matmul)."""
    per = w.shape[1] // groups
    v, alpha = np.zeros_like(w), np.ones(w.shape[1])
    rel, mean_err = [], np.zeros(w.shape[1])
    for gi in range(groups):
        cols = slice(gi * per, (gi + 1) * per)
        gram, mu = _gram(n, [_group_input(n, x, gi, groups) for x in xs], rng)
        v[:, cols], alpha[cols] = fit_layer(w[:, cols], gram, terms)
        rel.append(output_error(w[:, cols], v[:, cols], alpha[cols], gram))
        mean_err[cols] = mu @ (w[:, cols] - alpha[cols] * v[:, cols])
    return v, alpha, float(np.mean(rel)), mean_err


def shiftadd_rewrite(g: Graph, batches: Iterable[Sequence[np.ndarray]], terms: int, realization: str = "",
                     report: list | None = None, select: Callable[[Node], bool] | None = None,
                     target: Any = None) -> Graph:
    """Every eligible q.conv / q.matmul of the integer graph `g` (those `select` accepts, when given) with
    `terms`-term power-of-two weights fitted to its output on `batches` (graph inputs per batch); `realization`
    is written on each ("vnni" / "shift" / ""; "auto": per layer `kernel_choice` for `target`). Per layer,
    `report` (when given) gets {name, code, realization, channels, output_error (relative), vnni_s, shift_s
    (the two kernels' predicted seconds, None where not predicted; with a CPU target or "auto"), why}."""
    if terms not in CODES:
        raise ValueError(f"shift/add takes 1 or 2 terms, got {terms}")
    g = g.clone()
    uses = g.uses()
    picked = [n for n in g.nodes if _eligible(n) and (select is None or select(n))]
    layers = [lay for lay in (_Layer(g, n, uses) for n in picked) if lay.ok]
    inputs = layer_inputs(g, list(batches), [lay.node for lay in layers])
    rng = np.random.default_rng(0)
    replace: dict[int, Node] = {}
    for lay in layers:
        n = lay.node
        w, groups = _weight_matrix(n)
        v, alpha, rel, mean_err = fit_node(n, w, groups, inputs[id(n)], terms, rng)
        choice = {"realization": realization, "vnni_s": None, "shift_s": None, "why": "given"}
        if realization == "auto":
            choice = kernel_choice(target, n, terms)
        elif report is not None and target is not None and getattr(target, "kind", "llvm") == "llvm":
            choice.update(predict_kernels(n, terms, target))
            choice.pop("note")
        _rewrite_layer(g, lay, v, alpha, mean_err, terms, choice["realization"], replace)
        if report is not None:
            report.append({"name": n.name, "code": CODES[terms], "channels": int(w.shape[1]), "output_error": rel,
                           **choice})
    g.nodes = [replace.get(id(n), n) for n in g.nodes]
    return g


def _group_input(n: Node, x: np.ndarray, gi: int, groups: int) -> np.ndarray:
    if groups == 1:
        return x
    c = x.shape[1] // groups
    return x[:, gi * c:(gi + 1) * c]


def _rewrite_layer(g: Graph, lay: _Layer, v: np.ndarray, alpha: np.ndarray, mean_err: np.ndarray, terms: int,
                   realization: str, replace: dict[int, Node]) -> None:
    n = lay.node
    w_old = n.inputs[1]
    ws = spec_of(w_old)
    c = len(alpha)
    s8 = np.broadcast_to(np.asarray(ws.scale, np.float64), (c,))
    wv = v.T.reshape(w_old.type.shape) if n.op is q.conv else v
    w_new = g.const(wv.astype(np.int8), w_old.name + "_pow2")
    w_new.type = with_quant(w_new.type, dataclasses.replace(ws, scale=tuple(float(np.float32(x)) for x in s8 * alpha),
                                                            axis=0 if n.op is q.conv else 1))
    attrs = {**n.attrs, "weight_code": CODES[terms], "realization": realization}
    ins = [n.inputs[0], w_new, *n.inputs[2:]]
    if lay.bias_node is not None:
        b_old = lay.bias_node.inputs[lay.bias_index]
        b = np.asarray(b_old.const, np.float64)
        b_new = np.clip(np.rint((b.reshape(-1) + mean_err) / alpha), I32_MIN, I32_MAX).astype(np.int32)
        bv = g.const(b_new.reshape(b.shape), b_old.name + "_pow2")
        bs = spec_of(b_old)
        if bs is not None:
            acc = np.broadcast_to(np.asarray(bs.scale, np.float64), (c,)) * alpha
            bv.type = with_quant(bv.type, dataclasses.replace(bs, scale=tuple(float(np.float32(x)) for x in acc)))
        if lay.bias_node is n:
            ins[2] = bv
        else:
            add = lay.bias_node
            add_ins = list(add.inputs)
            add_ins[lay.bias_index] = bv
            replace[id(add)] = Node(add.op, add_ins, add.attrs, add.outputs, add.name, add.loc)
    acc_spec = spec_of(n.outputs[0])
    if acc_spec is not None:
        acc = np.broadcast_to(np.asarray(acc_spec.scale, np.float64), (c,)) * alpha
        for val in lay.carriers:
            _scaled(val, acc, lay.axis)
    replace[id(n)] = Node(n.op, ins, attrs, n.outputs, n.name, n.loc)
    for u in lay.consumers:
        replace[id(u)] = _rescaled_consumer(replace.get(id(u), u), alpha, lay.axis)


@register_pass("shiftadd")
def shiftadd_pass(g: Graph, ctx) -> Graph:
    """Shift/add weights (--shiftadd 1|2): each int8 conv / linear layer's weights become per-channel sums of
    1 or 2 signed powers of two, fitted to the layer's output on the calibration data; with --quantize mixed,
    only the layers whose plan chose "pow2x1" / "pow2x2"; a no-op otherwise."""
    req = ctx.quant
    terms = getattr(req, "shiftadd", 0) if req is not None else 0
    plan = ctx.results.get("plan")          # --quantize mixed: the layers its ILP gave shift/add weights
    planned = plan.chosen("pow2x") if plan is not None else []
    if not terms and not planned:
        return g
    from compiler.diagnostics import InvalidInput
    if ctx.calibration is None:
        raise InvalidInput("shift/add weights are fitted on calibration batches; none were given")
    report: list = []
    out = g
    if terms:       # --shiftadd-kernel auto: per layer, the faster predicted kernel (kernel_choice)
        out = shiftadd_rewrite(out, ctx.calibration, terms, req.shift_kernel, report, target=ctx.target)
    for choice in planned:
        out = shiftadd_rewrite(out, ctx.calibration, int(choice[5:]), plan.pow2_kernel, report,
                               select=plan.selects(choice), target=ctx.target)
    ctx.results["shiftadd"] = report
    return out
