"""fuse_gates: a squeeze-excite gate on channel-blocked data becomes one `k.fused` kernel ("gate").

After assign_layouts, MobileNetV3's and EfficientNet's gate (passes/dyadic.py: an int32 product, one
per-tensor requant) is a chain of elementwise nodes on the blocked layout:

    q.requant(nn.mul(nn.cast(x) [- zx], nn.cast(g) [- zg]))   x: (n, c/b, h, w, b), g: (n, c/b, 1, 1, b), 8 or 16-bit

Lowered op by op, it becomes one loop over a flat index of x that reads g at a modulo (no vector lanes).
As a fused node it is one kernel with the channel block as its vector lanes
(compiler/backends/tvm_fused/gate.py). The body is the chain itself, so the graph's meaning is unchanged;
a backend without the kernel lowers the body op by op. It runs after assign_layouts, where the blocked
form exists (a gate before it is plain, and its layout is the convs' choice).
"""
from __future__ import annotations

from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew
from compiler.ops import kernel, quant as q
from compiler.types import DType
from passes.base import register_pass
from passes.fusion import _body

GATE = "gate"


def _source(v: Value, single, chain: list[Node]) -> Value | None:
    """The 8- or 16-bit value that `v` is cast(source) [+- scalar constants] of, collecting those nodes; else None."""
    while True:
        p = v.producer
        if p is None or v.is_const or not single(v):
            return None
        chain.append(p)
        if p.op is ew.cast:
            src = p.inputs[0]
            ok = p.attrs["to"] is DType.I32 and src.type.dtype in q.INT_DATA and not src.is_const
            return src if ok else None
        if p.op not in (ew.add, ew.sub) or not (p.inputs[1].is_const and p.inputs[1].type.size == 1):
            return None
        v = p.inputs[0]


def match(rq: Node, single) -> tuple[list[Node], Value, Value] | None:
    """(nodes, activation, gate) when `rq` ends a gate chain on blocked data, else None."""
    a = rq.attrs
    if rq.op is not q.requant or len(a["multiplier"]) != 1 or rq.outputs[0].type.dtype not in q.INT_DATA:
        return None
    mul = rq.inputs[0].producer
    if mul is None or mul.op is not ew.mul or not single(rq.inputs[0]) or rq.outputs[0].type.rank != 5:
        return None
    nodes = [rq, mul]
    srcs = [_source(v, single, nodes) for v in mul.inputs]
    if any(s is None for s in srcs):
        return None
    shape_ = rq.outputs[0].type.shape
    n, cb, _, _, b = shape_
    full = [s for s in srcs if s.type.shape == shape_]
    gate = [s for s in srcs if s.type.shape == (n, cb, 1, 1, b)]
    if len(full) != 1 or len(gate) != 1 or shape_[2:4] == (1, 1):
        return None
    return nodes, full[0], gate[0]


def fuse(g: Graph) -> Graph:
    g = g.clone()
    users = g.uses()
    outputs = {id(v) for v in g.outputs}
    order = {id(n): i for i, n in enumerate(g.nodes)}

    def single(v: Value) -> bool:
        return id(v) not in outputs and len(users.get(v, [])) == 1

    groups: dict[int, Node] = {}       # id(requant) -> the fused node
    members: set[int] = set()
    for n in g.nodes:
        m = match(n, single) if n.op is q.requant else None
        if m is None:
            continue
        nodes, x, _gate = m
        nodes.sort(key=lambda m_: order[id(m_)])
        first = next(m_ for m_ in nodes if m_.op is ew.cast and m_.inputs[0] is x)
        body, operands = _body(first, nodes)      # the activation is operand 0, the gate operand 1
        attrs = kernel.fused.complete_attrs({"kernel": GATE, "body": body})
        groups[id(n)] = Node(kernel.fused, operands, attrs, [n.outputs[0]], n.name, n.loc)
        members.update(id(m_) for m_ in nodes)
    g.nodes = [groups.get(id(n), n) for n in g.nodes if id(n) in groups or id(n) not in members]
    return g


@register_pass("fuse_gates")
def fuse_gates(g: Graph) -> Graph:
    """Squeeze-excite gate multiplies on blocked data (cast, cast, mul, requant) -> k.fused "gate" kernels."""
    return fuse(g)
