"""table_islands: a float island between one dequantize and a quantize becomes one table lookup.

    x (int8 | uint8 | int16) -> q.dequantize -> (elementwise float DAG) -> q.quantize -> y
        => y = q.table(x, T)        T[v - min] = quantize(f(dequantize(v))) for every value v of x's dtype

What dyadic leaves in float around the activations real models use -- SiLU (x * sigmoid(x)),
hardswish, hardsigmoid, sigmoid, tanh, Mish (x * tanh(softplus(x))), softplus, ELU, LeakyReLU, GELU
on an int8 input, with the thresholds and selects exporters write (softplus as
where(x > 20, x, log1p(exp(x)))) -- is such an island: every float (or bool) value in it is a function of the one integer
element it came from. The DAG may read the dequantized value more than once (SiLU does); its
constants must be scalars; every float operand must have the island's shape (no broadcasting of
an activation). The table is computed by running the island's own numpy references over all 256
(65536) values of x's dtype, so the rewrite is exact by construction: the reference interpreter gives
the same integers before and after.

Float values of the island that have users outside it stay (those users still read them); dead code
removes whatever nothing reads any more.
"""
from __future__ import annotations

import numpy as np

from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew
from compiler.ops import quant
from compiler.ops.quant import TABLE_INDEX_TYPES
from compiler.types import DType
from passes.base import register_pass
from passes.canonicalize import dead_code
from passes.fusion import ARITHMETIC_ELEMENTWISE

# the ops an island may hold: the kernels' elementwise arithmetic, plus the identities, powers, comparisons
# and selects exporters write inside activations
FLOAT_ELEMENTWISE = ARITHMETIC_ELEMENTWISE | {ew.identity, ew.pow_, ew.equal, ew.less, ew.greater,
                                              ew.logical_not, ew.where}
MAX_NODES = 32


def _island(q: Node) -> tuple[Node, list[Node]] | None:
    """(the dequantize, the island's float nodes in graph order) feeding quantize node q, or None."""
    shape = q.inputs[0].type.shape
    source: Node | None = None
    nodes: dict[int, Node] = {}
    stack = [q.inputs[0]]
    while stack:
        v = stack.pop()
        if v.is_const:
            if np.asarray(v.const).size != 1:
                return None
            continue
        p = v.producer
        if p is None or not (v.type.dtype.is_float or v.type.dtype is DType.BOOL) or v.type.shape != shape:
            return None
        if p.op is quant.dequantize:
            if source is not None and source is not p:
                return None
            if len(p.attrs["scale"]) != 1 or p.inputs[0].type.dtype not in TABLE_INDEX_TYPES:
                return None
            source = p
            continue
        if p.op not in FLOAT_ELEMENTWISE or len(p.outputs) != 1:
            return None
        if id(p) not in nodes:
            nodes[id(p)] = p
            if len(nodes) > MAX_NODES:
                return None
            stack.extend(p.inputs)
    return (source, list(nodes.values())) if source is not None else None


def island_table(dq: Node, nodes: list[Node], q: Node, order: dict[int, int]) -> np.ndarray:
    """T[v - min] = q(f(dq(v))) over every value v of dq's input dtype, by the ops' references."""
    dt = dq.inputs[0].type.dtype
    info = np.iinfo(dt.numpy)
    env: dict[int, np.ndarray] = {}
    vals = np.arange(info.min, info.max + 1, dtype=np.int64).astype(dt.numpy)
    env[id(dq.outputs[0])] = dq.op.reference([vals], dq.attrs)[0]

    def read(v: Value) -> np.ndarray:
        return np.asarray(v.const).reshape(()) if v.is_const else env[id(v)]

    for n in sorted(nodes, key=lambda m: order[id(m)]):
        env[id(n.outputs[0])] = n.op.reference([read(v) for v in n.inputs], n.attrs)[0]
    out = q.op.reference([read(q.inputs[0])], q.attrs)[0]
    return np.ascontiguousarray(out.astype(q.outputs[0].type.dtype.numpy))


@register_pass("table_islands")
def table_islands(g: Graph) -> Graph:
    """Every dequantize -> elementwise float DAG -> quantize island -> one q.table (exact)."""
    g = g.clone()
    order = {id(n): i for i, n in enumerate(g.nodes)}
    replace: dict[int, Node] = {}
    for n in g.nodes:
        if n.op is not quant.quantize:
            continue
        found = _island(n)
        if found is None or not found[1]:
            continue
        dq, nodes = found
        table = g.const(island_table(dq, nodes, n, order), f"{n.name}_table")
        replace[id(n)] = Node(quant.table, [dq.inputs[0], table], {}, list(n.outputs), n.name, n.loc)
    if not replace:
        return g
    g.nodes = [replace.get(id(m), m) for m in g.nodes]
    return dead_code(g)
