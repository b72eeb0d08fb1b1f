"""tabulate: an integer elementwise chain on an int8/uint8/int16 value becomes one table lookup.

    x (int8 | uint8 | int16) -> f1 -> f2 -> ... -> fk        (each fi elementwise in its one input)
        => q.table(x, T)   with T[v - min] = fk(...f1(v))   for every value v of x's dtype

The table is computed by running the chain's own numpy references over all 256 / 65536 values of
x's dtype, so the rewrite is bit-exact by construction. Elementwise here means "a function of the
element's value alone": q.requant with one (per-tensor) multiplier, q.shiftgelu with
row_max=False, q.shifttanh, nn.relu and nn.clip on integers. A per-channel requant or a row-wise
op ends the chain.

Whether the lookup pays is the cost model's decision (costmodel.policy.choose_table, from
measured per-element costs of each op and of the lookup): a lone requant is cheaper to compute;
ShiftGELU's per-element division is not.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from compiler.ir import Graph, Node
from compiler.ops import elementwise as ew
from compiler.ops import ivit, quant
from compiler.ops.quant import TABLE_INDEX_TYPES
from passes.base import register_pass
from passes.canonicalize import dead_code

Decide = Callable[[Sequence[str], int, int], bool]   # (op names, index bits, elements) -> tabulate?


def _elementwise(n: Node) -> bool:
    """n's output element depends only on the same element of its single non-constant input."""
    if sum(not v.is_const for v in n.inputs) != 1 or n.inputs[0].is_const or len(n.outputs) != 1:
        return False
    if not (n.inputs[0].type.dtype.is_int and n.outputs[0].type.dtype.is_int):
        return False
    if n.op is quant.requant:
        return len(n.attrs["multiplier"]) == 1
    if n.op is ivit.shiftgelu:
        return not n.attrs["row_max"]
    return n.op in (ivit.shifttanh, ew.relu, ew.clip) and len(n.inputs) == 1


def _chain(head: Node, users: dict, outputs: set[int], taken: set[int]) -> list[Node]:
    chain = [head]
    while True:
        v = chain[-1].outputs[0]
        us = users.get(v, [])
        if len(us) != 1 or id(v) in outputs:
            return chain
        nxt = us[0][0]
        if id(nxt) in taken or not _elementwise(nxt) or nxt.inputs[0] is not v:
            return chain
        chain.append(nxt)


def chain_table(chain: Sequence[Node]) -> np.ndarray:
    """T[v - min] = chain(v) for every value v of the chain input's dtype (the references)."""
    dt = chain[0].inputs[0].type.dtype
    info = np.iinfo(dt.numpy)
    vals = np.arange(info.min, info.max + 1, dtype=np.int64).astype(dt.numpy)
    for n in chain:
        vals = n.op.reference([vals] + [np.asarray(v.const) for v in n.inputs[1:]], n.attrs)[0]
    return np.ascontiguousarray(vals.astype(chain[-1].outputs[0].type.dtype.numpy))


def _default_decide(ops: Sequence[str], bits: int, elements: int) -> bool:
    from costmodel import policy
    return policy.choose_table(ops, bits, elements)


def tabulate_graph(g: Graph, decide: Decide | None = None) -> Graph:
    """Rewrite every profitable chain (see module docstring); `decide` defaults to the cost model."""
    decide = decide or _default_decide
    g = g.clone()
    users = g.uses()
    outputs = {id(v) for v in g.outputs}
    taken: set[int] = set()
    replace: dict[int, Node | None] = {}
    for n in g.nodes:
        if id(n) in taken or not _elementwise(n) or n.inputs[0].type.dtype not in TABLE_INDEX_TYPES:
            continue
        chain = _chain(n, users, outputs, taken)
        x = n.inputs[0]
        if not decide([m.op.name for m in chain], x.type.dtype.bits, x.type.size):
            continue
        out = chain[-1].outputs[0]
        table = g.const(chain_table(chain), f"{chain[-1].name}_table")
        node = Node(quant.table, [x, table], {}, [out], chain[-1].name, chain[-1].loc)
        for m in chain:
            taken.add(id(m))
            replace[id(m)] = None
        replace[id(chain[-1])] = node
    if not replace:
        return g
    g.nodes = [replace.get(id(m), m) for m in g.nodes if replace.get(id(m), m) is not None]
    return dead_code(g)


@register_pass("tabulate")
def tabulate(g: Graph) -> Graph:
    """Integer elementwise chains on int8/uint8/int16 values -> q.table where the cost model says so."""
    return tabulate_graph(g)
