"""Recognize decomposed activations and lift them to one op, so every frontend's graph looks
the same and backends can fuse them as one epilogue.

    mul(mul(x, add(erf(div(x, sqrt2)), 1)), 0.5)   => gelu(x)            (torch.onnx GELU)
    mul(mul(x, 0.5), add(erf(mul(x, 1/sqrt2)), 1)) => gelu(x)            (and the other orders)
"""
from __future__ import annotations

import math

import numpy as np

from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew
from passes.base import register_pass


def _scalar(v: Value) -> float | None:
    if v.is_const and v.type.size == 1 and v.type.dtype.is_float:
        return float(np.asarray(v.const).reshape(-1)[0])
    return None


def _const_operand(n: Node) -> tuple[Value, float] | None:
    """(other operand, constant) of a binary node with one scalar-constant operand."""
    a, b = n.inputs
    if (c := _scalar(b)) is not None:
        return a, c
    if (c := _scalar(a)) is not None and n.op in (ew.mul, ew.add):
        return b, c
    return None


def _close(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=1e-4)


def _erf_arg_source(erf_in: Value) -> Value | None:
    """x, where erf_in = x / sqrt(2) or x * (1 / sqrt(2))."""
    n = erf_in.producer
    if n is None or n.op not in (ew.div, ew.mul) or (oc := _const_operand(n)) is None:
        return None
    x, c = oc
    want = math.sqrt(2) if n.op is ew.div else 1 / math.sqrt(2)
    return x if _close(c, want) else None


def _match_gelu(root: Node, users: dict) -> tuple[Value, list[Node]] | None:
    """root = the final mul. Returns (x, nodes of the pattern) when it computes gelu(x)."""
    if root.op is not ew.mul:
        return None
    # the two factors: {0.5 * x or x, 1 + erf(x / sqrt2)} with 0.5 applied somewhere
    def split(n: Node):
        for i in (0, 1):
            p = n.inputs[i].producer
            if p is not None and p.op is ew.add and (oc := _const_operand(p)) and _close(oc[1], 1.0):
                e = oc[0].producer
                if e is not None and e.op is ew.erf:
                    return n.inputs[1 - i], p, e
        return None

    half = _const_operand(root)
    if half is not None and _close(half[1], 0.5) and half[0].producer is not None:
        inner = half[0].producer                    # (x * (1 + erf)) * 0.5
        if inner.op is not ew.mul or (s := split(inner)) is None:
            return None
        x, add, erf = s
        chain = [inner]
    else:
        if (s := split(root)) is None:              # (x * 0.5) * (1 + erf)
            return None
        xh, add, erf = s
        p = xh.producer
        if p is None or p.op is not ew.mul or (oc := _const_operand(p)) is None or not _close(oc[1], 0.5):
            return None
        x, chain = oc[0], [p]
    scaled = erf.inputs[0].producer
    if _erf_arg_source(erf.inputs[0]) is not x:
        return None
    nodes = [scaled, erf, add, *chain, root]
    inner_values = [v for n in nodes[:-1] for v in n.outputs]
    if any(len(users.get(v, [])) != 1 for v in inner_values):
        return None                                 # an intermediate is used elsewhere
    return x, nodes


@register_pass("recognize_gelu")
def recognize_gelu(g: Graph) -> Graph:
    """The erf form of GELU, as exported from PyTorch, becomes one nn.gelu."""
    g = g.clone()
    users = g.uses()
    out_ids = {id(v) for v in g.outputs}
    dropped: set[int] = set()
    replace: dict[int, Node] = {}
    for n in g.nodes:
        m = _match_gelu(n, users)
        if m is None or any(id(v) in out_ids for p in m[1][:-1] for v in p.outputs):
            continue
        x, nodes = m
        if any(id(p) in dropped for p in nodes):
            continue
        dropped.update(id(p) for p in nodes[:-1])
        replace[id(n)] = Node(ew.gelu, [x], {"approximate": "none"}, [n.outputs[0]], n.name, n.loc)
    g.nodes = [replace.get(id(n), n) for n in g.nodes if id(n) not in dropped]
    return g
