"""Per-layer quantization report: for each q.requant after a q.conv / q.matmul, its grid, the SQNR (dB)
of the dequantized integer result against the float model's value (clamped at the ends of a grid that
passes/active_range.py narrowed, on the sides it trimmed), and the SQNR the layer loses: its
input layers' SQNR (the lowest of the nearest layers upstream) minus its own. Errors add up with depth,
so a low SQNR alone does not name the layer that causes it; the loss does (`worst_layers`)."""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from compiler import interp
from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew
from compiler.ops import quant
from passes.quantize import batch_args, spec_of


def _contraction(n: Node) -> Node | None:
    src = n.inputs[0].producer
    if src is not None and src.op is ew.add:          # matmul + int32 bias
        src = next((v.producer for v in src.inputs if v.producer is not None), None)
    return src if src is not None and src.op in (quant.conv, quant.matmul) else None


def _dequantize(q: np.ndarray, s) -> np.ndarray:
    scale, zp = np.asarray(s.scale, np.float64), np.asarray(s.zero_point, np.float64)
    if len(s.scale) > 1:
        shp = [1] * q.ndim
        shp[(s.axis if s.axis is not None else 1) % q.ndim] = -1
        scale, zp = scale.reshape(shp), zp.reshape(shp)
    return (q.astype(np.float64) - zp) * scale


def _clip_trimmed(f: np.ndarray, s) -> np.ndarray:
    """f clamped at the grid's ends on the sides active_range trimmed: beyond them the activation reading the
    value is flat, so the clamp there is the intended value, not an error."""
    lo, hi = s.active_range
    scale, zp = s.scale[0], s.zero_point[0]
    return np.clip(f, (s.qmin - zp) * scale if math.isfinite(lo) else -np.inf,
                   (s.qmax - zp) * scale if math.isfinite(hi) else np.inf)


def report(float_graph: Graph, int_graph: Graph, batches: Iterable[Any]) -> list[dict]:
    """Rows {layer, op, dtype, bits, weight_bits, scale, zero_point, sqnr_db} for each requant
    that follows a contraction; sqnr_db is None when the float graph has no value of that name.
    `batches` is iterated once (a list is fine)."""
    layers: list[tuple[Node, Node, Value]] = []
    for n in int_graph.nodes:
        if n.op is quant.requant and (c := _contraction(n)) is not None:
            layers.append((n, c, n.outputs[0]))
        elif n.op is quant.dequantize and (c := _contraction(n)) is not None:   # int32 logits
            layers.append((n, c, n.inputs[0]))
    fvals = {v.name: v for v in list(float_graph.inputs) + [o for m in float_graph.nodes for o in m.outputs]}
    pairs = [(i, fvals.get((spec_of(v).source if spec_of(v) else None) or "")) for i, (_, _, v) in enumerate(layers)]
    matched = [(i, fv) for i, fv in pairs if fv is not None]
    iprobe, fprobe = int_graph.clone(), float_graph.clone()
    ivals = [v for m in iprobe.nodes for v in m.outputs]
    ipos = {v.name: v for v in ivals}
    iprobe.outputs = [ipos[v.name] for _, _, v in layers]
    fpos = {v.name: v for v in list(fprobe.inputs) + [o for m in fprobe.nodes for o in m.outputs]}
    fprobe.outputs = [fpos[fv.name] for _, fv in matched]
    sig = np.zeros(len(layers))
    err = np.zeros(len(layers))
    for batch in batches:
        qs = interp.run(iprobe, *batch_args(int_graph, batch)) if layers else []
        fs = interp.run(fprobe, *batch_args(float_graph, batch)) if matched else []
        for (i, _), f in zip(matched, fs):
            s = spec_of(layers[i][2])
            deq = _dequantize(qs[i], s)
            if s.active_range is not None:      # a side trimmed on purpose (active_range): the grid's end there
                f = _clip_trimmed(f, s)
            sig[i] += float(np.sum(f.astype(np.float64) ** 2))
            err[i] += float(np.sum((f - deq) ** 2))
    rows = []
    has = {i for i, _ in matched}
    ups = _upstream_layers(int_graph, [v for _, _, v in layers], [c for _, c, _ in layers])
    for i, (rq, c, v) in enumerate(layers):
        s = spec_of(v)
        w = c.inputs[1]
        wdt = w.type.dtype
        sq = None
        if i in has:
            sq = math.inf if err[i] == 0 else 10 * math.log10(max(sig[i], 1e-300) / err[i])
        rows.append({"layer": s.source if s and s.source else v.name, "op": c.op.name, "node": c.name,
                     "dtype": v.type.dtype.value, "bits": v.type.dtype.bits, "weight_bits": wdt.bits,
                     "scale": (s.scale[0] if len(s.scale) == 1 else float(np.mean(s.scale))) if s else None, "zero_point": s.zero_point[0] if s else None,
                     "sqnr_db": sq})
    for i, r in enumerate(rows):
        r["upstream"] = [rows[j]["layer"] for j in ups[i]]
        ins = [rows[j]["sqnr_db"] for j in ups[i]]
        r["sqnr_lost_db"] = (min(ins) - r["sqnr_db"]) if ins and None not in ins and r["sqnr_db"] is not None \
            and r["sqnr_db"] != math.inf and min(ins) != math.inf else None
    return rows


def _upstream_layers(g: Graph, outs: list[Value], contractions: list[Node]) -> list[list[int]]:
    """For each layer, the indices of the nearest layers whose outputs reach its contraction's activation
    input (walking producers back through the ops between them: pools, reshapes, adds, tables...)."""
    at = {id(v): i for i, v in enumerate(outs)}
    found = []
    for c in contractions:
        seen, hits, todo = set(), set(), [c.inputs[0]]
        while todo:
            v = todo.pop()
            if id(v) in seen:
                continue
            seen.add(id(v))
            if id(v) in at:
                hits.add(at[id(v)])
            elif v.producer is not None:
                todo += [u for u in v.producer.inputs if not u.is_const]
        found.append(sorted(hits))
    return found


def worst_layers(rows: list[dict], n: int = 3) -> list[dict]:
    """The n layers that lose the most SQNR (dB) over their inputs', largest loss first."""
    lost = [r for r in rows if r.get("sqnr_lost_db") is not None]
    return sorted(lost, key=lambda r: -r["sqnr_lost_db"])[:n]


def format_report(rows: list[dict]) -> str:
    """A text table of report() rows."""
    head = ("layer", "op", "dtype", "bits", "w bits", "scale", "zp", "SQNR dB", "lost dB")
    body = [(r["layer"], r["op"], r["dtype"], str(r["bits"]), str(r["weight_bits"]),
             f"{r['scale']:.4g}" if r["scale"] is not None else "-",
             str(r["zero_point"]) if r["zero_point"] is not None else "-",
             "-" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}",
             "-" if r.get("sqnr_lost_db") is None else f"{r['sqnr_lost_db']:.1f}") for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    worst = worst_layers(rows)
    tail = ["most SQNR lost: " + ", ".join(f"{r['layer']} ({r['sqnr_lost_db']:.1f} dB)" for r in worst)] if worst else []
    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(b) for b in body), *tail]) + "\n"
