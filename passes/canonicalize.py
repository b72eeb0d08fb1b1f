"""Canonicalization: constant folding, BatchNorm folding into conv/matmul, identity removal,
dead-code removal. Each pass returns a new graph and keeps the meaning (interp is the oracle)."""
from __future__ import annotations

import numpy as np

from compiler.interp import evaluate
from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew
from compiler.ops import linalg, nn, shape
from passes.base import register_pass

_FOLD_LIMIT = 1 << 26   # do not materialize folded constants larger than 64 M elements


@register_pass("fold_constants")
def fold_constants(g: Graph) -> Graph:
    """Evaluate every node whose inputs are all constants: op(c1, c2) -> c3."""
    g = g.clone()
    kept: list[Node] = []
    for n in g.nodes:
        if n.inputs and all(v.is_const for v in n.inputs) and \
                all(v.type.size <= _FOLD_LIMIT for v in n.outputs):
            outs = evaluate(n.op, [v.const for v in n.inputs], n.attrs)
            for v, arr in zip(n.outputs, outs):
                g.replace_all_uses(v, g.const(np.asarray(arr), v.name))
        else:
            kept.append(n)
    g.nodes = kept
    return g


def _is_noop(n: Node) -> bool:
    x = n.inputs[0] if n.inputs else None
    if n.op is ew.identity:
        return True
    if n.op in (shape.reshape, shape.expand) and x is not None:
        return x.type.shape == n.outputs[0].type.shape
    if n.op is shape.transpose:
        return list(n.attrs["perm"]) == sorted(n.attrs["perm"])
    if n.op is ew.cast and x is not None:
        return x.type.dtype is n.attrs["to"]
    if n.op is shape.slice_ and x is not None:
        return x.type.shape == n.outputs[0].type.shape and all(s == 1 for s in n.attrs["steps"])
    return False


@register_pass("remove_identity")
def remove_identity(g: Graph) -> Graph:
    """identity(x), reshape(x) to x's shape, transpose(x, id-perm), cast to same type -> x."""
    g = g.clone()
    kept = []
    for n in g.nodes:
        if _is_noop(n):
            g.replace_all_uses(n.outputs[0], n.inputs[0])
        else:
            kept.append(n)
    g.nodes = kept
    return g


@register_pass("dead_code")
def dead_code(g: Graph) -> Graph:
    """Drop nodes none of whose results reach a graph output."""
    g = g.clone()
    live = {id(v) for v in g.outputs}
    kept = []
    for n in reversed(g.nodes):
        if any(id(v) in live for v in n.outputs):
            kept.append(n)
            live.update(id(v) for v in n.inputs)
    g.nodes = kept[::-1]
    return g


def _bn_affine(bn: Node) -> tuple[np.ndarray, np.ndarray] | None:
    """The per-channel (a, b) with bn(x) = a * x + b, when all BN parameters are constants."""
    params = bn.inputs[1:]
    if not all(v.is_const for v in params):
        return None
    scale, bias, mean, var = (v.const.astype(np.float64) for v in params)
    a = scale / np.sqrt(var + bn.attrs["epsilon"])
    return a, bias - a * mean


def _fold_into_producer(g: Graph, bn: Node, a: np.ndarray, c: np.ndarray,
                       users: dict, out_ids: set[int]) -> dict[int, list[Node]] | None:
    """conv/matmul(+bias) feeding only this batch_norm: scale the weights, shift the bias."""
    x = bn.inputs[0]
    src = x.producer
    if src is None or len(users.get(x, [])) != 1 or id(x) in out_ids:
        return None
    if src.op is linalg.conv and src.inputs[1].is_const and (len(src.inputs) < 3 or src.inputs[2].is_const):
        w = src.inputs[1].const
        b = src.inputs[2].const if len(src.inputs) > 2 else np.zeros(w.shape[0])
        w2 = (w * a.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
        b2 = (b * a + c).astype(w.dtype)
        node = Node(linalg.conv, [src.inputs[0], g.const(w2, "w_bn"), g.const(b2, "b_bn")],
                    src.attrs, [bn.outputs[0]], src.name, src.loc)
        return {id(src): [node], id(bn): []}
    # matmul(x, W) + b with x of rank 2: batch_norm normalizes axis 1 = W's columns
    mm, bias = src, None
    if src.op is ew.add and src.inputs[1].is_const and src.inputs[0].producer is not None:
        mm, bias = src.inputs[0].producer, src.inputs[1].const
        if len(users.get(src.inputs[0], [])) != 1:
            return None
    if mm.op is not linalg.matmul or x.type.rank != 2 or not mm.inputs[1].is_const \
            or mm.inputs[1].type.rank != 2:
        return None
    w = mm.inputs[1].const
    b = np.zeros(w.shape[1]) if bias is None else np.broadcast_to(bias, (1, w.shape[1]))[0]
    h = Value(g.fresh_name(mm.name), mm.outputs[0].type)
    new_mm = Node(linalg.matmul, [mm.inputs[0], g.const((w * a).astype(w.dtype), "w_bn")], {}, [h],
                  mm.name, mm.loc)
    new_add = Node(ew.add, [h, g.const((b * a + c).astype(w.dtype), "b_bn")], {}, [bn.outputs[0]],
                   bn.name, bn.loc)
    repl = {id(mm): [new_mm], id(bn): [new_add]}
    if bias is not None:
        repl[id(src)] = []
    return repl


@register_pass("fold_batch_norm")
def fold_batch_norm(g: Graph) -> Graph:
    """conv(x, w, b) -> batch_norm => conv(x, w * a, b * a + c), where bn(x) = a * x + c;
    matmul(x, W) [+ b] -> batch_norm => matmul(x, W * a) + (b * a + c);
    any other batch_norm with constant parameters => mul(x, a) + c."""
    g = g.clone()
    users = g.uses()
    out_ids = {id(v) for v in g.outputs}
    repl: dict[int, list[Node]] = {}
    for bn in g.nodes:
        if bn.op is not nn.batch_norm or (affine := _bn_affine(bn)) is None:
            continue
        a, c = affine
        folded = _fold_into_producer(g, bn, a, c, users, out_ids)
        if folded is not None:
            repl.update(folded)
            continue
        x = bn.inputs[0]
        shp = (-1,) + (1,) * (x.type.rank - 2)
        dt = x.type.dtype.numpy
        m = Value(g.fresh_name(bn.name + "_scale"), x.type)
        mul = Node(ew.mul, [x, g.const(a.astype(dt).reshape(shp), "bn_a")], {}, [m], m.name, bn.loc)
        add = Node(ew.add, [m, g.const(c.astype(dt).reshape(shp), "bn_c")], {}, [bn.outputs[0]],
                   bn.name, bn.loc)
        repl[id(bn)] = [mul, add]
    g.nodes = [r for n in g.nodes for r in repl.get(id(n), [n])]
    for n in g.nodes:          # re-point producers of values moved to new nodes
        for i, v in enumerate(n.outputs):
            v.producer, v.index = n, i
    return g
