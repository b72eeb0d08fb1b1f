"""Layer sensitivity measures for mixed precision (passes/mixed_precision.py): how much the model's outputs
move when one layer's weight changes, measured on calibration data through the reference interpreter
(`output_perturbations`), and HAWQ's Hessian-trace estimate from a torch model (`hutchinson_sensitivity`,
paired with the graph's layers by `match_torch_weights`)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from compiler import interp
from compiler.diagnostics import InvalidInput, Unsupported
from compiler.ir import Graph, Node, Value
from compiler.types import TensorType
from passes.base import steps
from passes.quantize import batch_args


def float_outputs(g: Graph, batches: Sequence[Any]) -> list[list[np.ndarray]]:
    return [[np.asarray(o, np.float64) for o in interp.run(g, *batch_args(g, b))] for b in batches]


def output_perturbations(g: Graph, batches: Sequence[Any], probes: Sequence[tuple[Node, np.ndarray]],
                         ref: list[list[np.ndarray]] | None = None) -> list[float]:
    """Per probe (a weight layer of the float graph `g`, a float weight for it): the mean squared change of the
    graph outputs (over the batches, averaged over the outputs) when only that layer's weight is replaced."""
    ref = float_outputs(g, batches) if ref is None else ref
    out = []
    with steps(len(probes), "layer sensitivity") as bar:
        for n, w_new in probes:
            idx = g.nodes.index(n)
            probe = g.clone()
            pn = probe.nodes[idx]
            w = pn.inputs[1]
            pn.inputs[1] = Value(w.name, TensorType(w.type.shape, w.type.dtype),
                                 np.asarray(w_new, w.const.dtype))
            got = float_outputs(probe, batches)
            errs = [float(np.mean((a - b) ** 2)) for ra, ga in zip(ref, got) for a, b in zip(ra, ga)]
            out.append(float(np.mean(errs)))
            bar.update(len(out), n.name)
    return out


def output_power(ref: list[list[np.ndarray]]) -> float:
    """P, the float outputs' mean square, averaged as `output_perturbations` averages (the accuracy
    budget's unit)."""
    return float(np.mean([np.mean(a ** 2) for ra in ref for a in ra]))


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
