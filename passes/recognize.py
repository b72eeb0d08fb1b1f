"""Recognize decomposed activations and lift them to one op, so every frontend's graph looks
the same and backends can fuse them as one epilogue.

    mul(mul(x, add(erf(div(x, sqrt2)), 1)), 0.5)   => gelu(x)            (torch.onnx GELU)
    mul(mul(x, 0.5), add(erf(mul(x, 1/sqrt2)), 1)) => gelu(x)            (and the other orders)
    0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))   => gelu(x, approximate="tanh")
    (x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * g + b => layer_norm(x, g, b)
"""
from __future__ import annotations

import math

import numpy as np

from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew
from compiler.ops import nn
from compiler.ops import reduce as rd
from passes.base import register_pass


def _const_operand(n: Node) -> tuple[Value, float] | None:
    """(other operand, constant) of a binary node with one scalar-constant operand."""
    a, b = n.inputs
    if (c := b.float_scalar()) is not None:
        return a, c
    if (c := a.float_scalar()) is not None and n.op in (ew.mul, ew.add):
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
    return _lift(g, _match_gelu, lambda x, nodes: (ew.gelu, [x], {"approximate": "none"}))


# -- tanh-form GELU ----------------------------------------------------------------------
def _other(n: Node, v: Value) -> Value | None:
    """The operand of binary node n that is not v (None if v is not an operand)."""
    a, b = n.inputs
    return b if a is v else a if b is v else None


def _is_cube_of(v: Value, x: Value) -> list[Node] | None:
    """Nodes computing v = x^3 as pow(x, 3), x*(x*x) or (x*x)*x."""
    n = v.producer
    if n is None:
        return None
    if n.op is ew.pow_ and n.inputs[0] is x and _close(n.inputs[1].float_scalar(), 3.0):
        return [n]
    if n.op is ew.mul and x in n.inputs:
        sq = _other(n, x).producer
        if sq is not None and sq.op is ew.mul and sq.inputs[0] is x and sq.inputs[1] is x:
            return [sq, n]
    return None


def _match_gelu_tanh(root: Node, users: dict) -> tuple[Value, list[Node]] | None:
    """root = 0.5 * (x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))), factors in any order."""
    if root.op is not ew.mul or (half := _const_operand(root)) is None or not _close(half[1], 0.5):
        return None
    m4 = half[0].producer
    if m4 is None or m4.op is not ew.mul:
        return None
    for x, a1v in ((m4.inputs[0], m4.inputs[1]), (m4.inputs[1], m4.inputs[0])):
        a1 = a1v.producer
        if a1 is None or a1.op is not ew.add or (one := _const_operand(a1)) is None or not _close(one[1], 1.0):
            continue
        t = one[0].producer
        if t is None or t.op is not ew.tanh:
            continue
        m3 = t.inputs[0].producer
        if m3 is None or m3.op is not ew.mul or (k := _const_operand(m3)) is None or \
                not _close(k[1], math.sqrt(2 / math.pi)):
            continue
        a = k[0].producer
        if a is None or a.op is not ew.add or x not in a.inputs:
            continue
        m2 = _other(a, x).producer
        if m2 is None or m2.op is not ew.mul or (c := _const_operand(m2)) is None or not _close(c[1], 0.044715):
            continue
        cube = _is_cube_of(c[0], x)
        if cube is None:
            continue
        nodes = [*cube, m2, a, m3, t, a1, m4, root]
        if any(len(users.get(v, [])) != 1 for n in nodes[:-1] for v in n.outputs):
            return None
        return x, nodes
    return None


@register_pass("recognize_gelu_tanh")
def recognize_gelu_tanh(g: Graph) -> Graph:
    """The tanh form of GELU, as exported from PyTorch (approximate='tanh'), becomes one
    nn.gelu(approximate="tanh")."""
    return _lift(g, _match_gelu_tanh, lambda x, nodes: (ew.gelu, [x], {"approximate": "tanh"}))


# -- decomposed LayerNorm ---------------------------------------------------------------
def _match_layer_norm(root: Node, users: dict) -> tuple[Value, list[Node]] | None:
    """div(x - mean(x), sqrt(mean((x - mean(x))^2) + eps)) [* gamma] [+ beta] over the last axis;
    root is the div (the affine tail is taken by the caller)."""
    if root.op is not ew.div:
        return None
    d, s = root.inputs
    sub, sq = d.producer, s.producer
    if sub is None or sub.op is not ew.sub or sq is None or sq.op is not ew.sqrt:
        return None
    x, mean = sub.inputs
    m1 = mean.producer
    rank = x.type.rank
    if m1 is None or m1.op is not rd.reduce_mean or m1.inputs[0] is not x or not m1.attrs["keepdims"] \
            or sorted(a % rank for a in m1.attrs["axes"]) != [rank - 1]:
        return None
    add = sq.inputs[0].producer
    if add is None or add.op is not ew.add or (eps := _const_operand(add)) is None:
        return None
    m2 = eps[0].producer
    if m2 is None or m2.op is not rd.reduce_mean or m2.attrs["axes"] != m1.attrs["axes"] or not m2.attrs["keepdims"]:
        return None
    p = m2.inputs[0].producer
    square = p is not None and ((p.op is ew.pow_ and p.inputs[0] is d and _close(p.inputs[1].float_scalar(), 2.0))
                                or (p.op is ew.mul and p.inputs[0] is d and p.inputs[1] is d))
    if not square:
        return None
    nodes = [m1, sub, p, m2, add, sq, root]
    inner = {id(v): 1 for n in nodes[:-1] for v in n.outputs}
    inner[id(d)] = 2                                    # d feeds the square and the division
    if any(len(users.get(v, [])) != inner[id(v)] for n in nodes[:-1] for v in n.outputs):
        return None
    return x, nodes


@register_pass("recognize_layer_norm")
def recognize_layer_norm(g: Graph) -> Graph:
    """LayerNorm exported as ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div [/Mul gamma][/Add beta]
    over the last axis becomes one nn.layer_norm."""
    g2 = g.clone()
    users = g2.uses()
    outs = {id(v) for v in g2.outputs}
    dropped: set[int] = set()
    replace: dict[int, Node] = {}
    for n in g2.nodes:
        m = _match_layer_norm(n, users)
        if m is None or any(id(p) in dropped for p in m[1]):
            continue
        x, nodes = m
        c = x.type.shape[-1]
        eps = _const_operand(nodes[4])[1]
        dt = x.type.dtype.numpy
        gamma, beta, last = np.ones(c, dt), None, n
        nxt = users.get(last.outputs[0], [])
        if len(nxt) == 1 and id(last.outputs[0]) not in outs and nxt[0][0].op is ew.mul:
            other = _other(nxt[0][0], last.outputs[0])
            if other is not None and other.is_const and other.type.size == c:
                gamma, last = np.asarray(other.const).reshape(c).astype(dt), nxt[0][0]
                nodes.append(last)
        nxt = users.get(last.outputs[0], [])
        if len(nxt) == 1 and id(last.outputs[0]) not in outs and nxt[0][0].op is ew.add:
            other = _other(nxt[0][0], last.outputs[0])
            if other is not None and other.is_const and other.type.size == c:
                beta, last = np.asarray(other.const).reshape(c).astype(dt), nxt[0][0]
                nodes.append(last)
        if any(id(v) in outs for p in nodes[:-1] for v in p.outputs):
            continue
        ins = [x, g2.const(gamma, "ln_gamma")] + ([g2.const(beta, "ln_beta")] if beta is not None else [])
        dropped.update(id(p) for p in nodes[:-1])
        replace[id(last)] = Node(nn.layer_norm, ins, {"axis": -1, "epsilon": float(eps)},
                                 [last.outputs[0]], last.name, last.loc)
    g2.nodes = [replace.get(id(n), n) for n in g2.nodes if id(n) not in dropped]
    return g2


def _lift(g: Graph, match, make) -> Graph:
    """Replace every match (x, nodes) by one node make(x, nodes) -> (op, inputs, attrs) that
    takes over the last node's result."""
    g = g.clone()
    users = g.uses()
    out_ids = {id(v) for v in g.outputs}
    dropped: set[int] = set()
    replace: dict[int, Node] = {}
    for n in g.nodes:
        m = match(n, users)
        if m is None or any(id(v) in out_ids for p in m[1][:-1] for v in p.outputs) or \
                any(id(p) in dropped for p in m[1]):
            continue
        op, ins, attrs = make(*m)
        dropped.update(id(p) for p in m[1][:-1])
        replace[id(n)] = Node(op, ins, op.complete_attrs(attrs), [n.outputs[0]], n.name, n.loc)
    g.nodes = [replace.get(id(n), n) for n in g.nodes if id(n) not in dropped]
    return g
