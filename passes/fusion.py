"""fuse_kernels: an anchor op and the elementwise ops that consume its result become one `k.fused`.

    anchor  = conv, matmul, q.conv, q.matmul, max/avg pool, a reduction, Shiftmax, q.quantize
    group   = anchor + every elementwise node reachable from it whose operands are the group's
              values, constants, or values computed elsewhere (extra inputs, such as a residual)

The group is a DAG: SiLU's x * sigmoid(x) reads the conv's result twice and both readers join.
Its result has the anchor's shape (an epilogue never broadcasts the output bigger), and exactly one
of its values may be read outside the kernel: the last. A node that breaks a rule is left out,
and `explain_fusion` says which rule. One producer may join in front of an operand ("prologue"):
a transpose of the last two axes feeding a matmul, the cast feeding a reduction, and a single-use
q.requant feeding an epilogue's extra input (the rescale of a residual).

The fused node's body is the group as a Graph, so its meaning is exactly the ops it holds.
"""
from __future__ import annotations

from dataclasses import dataclass

from compiler import layouts
from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew
from compiler.ops import ivit, kernel, layout, linalg, nn, quant as q, reduce as rd, shape
from passes.base import PassContext, register_pass

ANCHORS = {
    linalg.conv: "conv", linalg.matmul: "matmul", q.conv: "qconv", q.matmul: "qmatmul",
    nn.max_pool: "pool", nn.avg_pool: "pool", rd.reduce_mean: "reduce", rd.reduce_max: "reduce",
    rd.reduce_sum: "reduce", ivit.shiftmax: "shiftmax", q.quantize: "quantize",
}

# each output element a function of the same element of each (broadcast) input
ARITHMETIC_ELEMENTWISE = frozenset({
    ew.relu, ew.sigmoid, ew.tanh, ew.exp, ew.log, ew.sqrt, ew.reciprocal, ew.erf, ew.neg, ew.abs_,
    ew.floor, ew.ceil, ew.softplus, ew.hard_swish, ew.leaky_relu, ew.elu, ew.hard_sigmoid, ew.gelu,
    ew.clip, ew.add, ew.sub, ew.mul, ew.div, ew.minimum, ew.maximum, ew.prelu, ew.cast,
})
ELEMENTWISE = ARITHMETIC_ELEMENTWISE | {q.requant, ivit.shiftgelu, ivit.shifttanh, q.table}


# What each kernel's write-back can take after its anchor. Float conv and matmul kernels compose any
# float elementwise DAG; the integer kernels take a chain of these shapes (R: q.requant, A: nn.add of
# another tensor, B: nn.add of a constant bias); pools and the quantize kernel take nothing.
FLOAT_EPILOGUE = frozenset({"conv", "matmul"})
CHAINS = {
    "qconv": ("", "R", "RR", "RAR", "RRAR", "RT", "RART"),     # T: an 8-bit q.table (an activation)
    "qconv_plain": ("", "R", "RR", "RT"),    # co % 8 != 0 (layouts.int_out_block 0): a plain NCHW output, no residual slot
    "qdepthwise": ("", "R", "RT"),
    "qmatmul": ("", "B", "R", "BR"),
    "qbmm": ("", "r"),                 # r: a per-tensor q.requant
    "shiftmax": ("", "r"),
    "reduce_sum": ("", "R"),
}
# On a GPU an int8 conv or matmul by a constant weight is one GEMM whose write-back composes any chain of
# requants, adds and tables (compiler/backends/tvm_fused/cuda.py): a matmul takes a residual too.
GPU_CHAINS = {**CHAINS, "qconv_plain": CHAINS["qconv"],
              "qmatmul": CHAINS["qmatmul"] + ("RAR", "RRAR", "BRAR", "BRRAR")}


def _token(n: Node) -> str:
    if n.op is q.table:
        return "T"
    if n.op is q.requant:
        return "r" if len(n.attrs["multiplier"]) == 1 else "R"
    if n.op is ew.add:
        return "B" if any(v.is_const for v in n.inputs) else "A"
    return "?"


def _chain_kind(anchor: Node) -> str | None:
    if anchor.op is q.conv:
        if anchor.attrs["groups"] != 1:
            return "qdepthwise"
        return "qconv" if layouts.int_out_block(anchor.outputs[0].type.shape[1]) else "qconv_plain"
    if anchor.op is q.matmul:
        return "qmatmul" if layout.is_const_weight(anchor.inputs[1]) else "qbmm"
    if anchor.op is ivit.shiftmax:
        return "shiftmax"
    if anchor.op is rd.reduce_sum:
        return "reduce_sum"
    return None


def _matches(seq: str, allowed: tuple[str, ...], complete: bool) -> bool:
    """seq matches an allowed chain (or, not complete, the start of one); 'r' also matches an 'R' slot."""
    def ok(pat: str) -> bool:
        if len(seq) > len(pat) or (complete and len(seq) != len(pat)):
            return False
        return all(a == b or (a == "r" and b == "R") for a, b in zip(seq, pat))
    return any(ok(p) for p in allowed)


@dataclass
class Group:
    anchor: Node
    nodes: list[Node]             # graph order; prologue nodes first
    prologue: set[int]            # ids of prologue nodes

    @property
    def out(self) -> Value:
        return self.nodes[-1].outputs[0]


def _is_last_axes_transpose(n: Node) -> bool:
    perm = list(n.attrs["perm"])
    r = len(perm)
    return r >= 2 and perm == list(range(r - 2)) + [r - 1, r - 2]


class _Fuser:
    def __init__(self, g: Graph, gpu: bool = False):
        self.g = g
        self.chains = GPU_CHAINS if gpu else CHAINS
        self.users = g.uses()
        self.outputs = {id(v) for v in g.outputs}
        self.order = {id(n): i for i, n in enumerate(g.nodes)}
        self.taken: set[int] = set()
        self.reasons: dict[str, str] = {}      # node name -> why it did not join its producer's kernel

    def readers(self, v: Value) -> list[Node]:
        return [n for n, _ in self.users.get(v, [])]

    def _joinable(self, n: Node, inside: set[int], shape_: tuple[int, ...]) -> str | None:
        """None if `n` may join the group whose values are `inside`, else the reason it may not."""
        if id(n) in self.taken:
            return "it already belongs to another kernel"
        if n.op not in ELEMENTWISE:
            return f"{n.op.name} is not elementwise"
        if len(n.outputs) != 1 or n.outputs[0].type.shape != shape_:
            return "its result is not the kernel's output shape"
        if inside and not n.outputs[0].type.dtype.is_float:
            return "a float kernel's epilogue stays in float"
        return None

    def epilogue(self, anchor: Node) -> list[Node]:
        kind = ANCHORS[anchor.op]
        if kind not in FLOAT_EPILOGUE or not anchor.outputs[0].type.dtype.is_float:
            return self.chain(anchor)
        shape_ = anchor.outputs[0].type.shape
        nodes, inside = [anchor], {id(anchor.outputs[0])}
        grew = True
        while grew:
            grew = False
            for v in [m.outputs[0] for m in nodes]:
                for r in self.readers(v):
                    if any(r is m for m in nodes):
                        continue
                    why = self._joinable(r, inside, shape_)
                    if why is None:
                        nodes.append(r)
                        inside.add(id(r.outputs[0]))
                        grew = True
                    else:
                        self.reasons.setdefault(r.name, why)
        nodes.sort(key=lambda m: self.order[id(m)])
        return self._close(nodes)

    def chain(self, anchor: Node) -> list[Node]:
        """The integer kernels' epilogues: a chain of the shapes in CHAINS, longest complete one."""
        allowed = self.chains.get(_chain_kind(anchor) or "", ("",))
        shape_ = anchor.outputs[0].type.shape
        nodes, seq, best = [anchor], "", 1
        while True:
            v = nodes[-1].outputs[0]
            rs = self.readers(v)
            if len(rs) != 1 or id(v) in self.outputs:
                break
            r = rs[0]
            why = self._joinable(r, set(), shape_)
            if why is None and not _matches(seq + _token(r), allowed, False):
                why = f"the {ANCHORS[anchor.op]} kernel's write-back cannot take {r.op.name} here"
            if why is not None:
                self.reasons.setdefault(r.name, why)
                break
            nodes.append(r)
            seq += _token(r)
            if _matches(seq, allowed, True):
                best = len(nodes)
        for dropped in nodes[best:]:
            self.reasons.setdefault(dropped.name, "the integer kernel's epilogue would be incomplete")
        return nodes[:best]

    def _escapes(self, nodes: list[Node]) -> list[Value]:
        ids = {id(m) for m in nodes}
        return [m.outputs[0] for m in nodes
                if id(m.outputs[0]) in self.outputs or any(id(r) not in ids for r in self.readers(m.outputs[0]))]

    def _close(self, nodes: list[Node]) -> list[Node]:
        """Drop the latest nodes until only the last value is read outside the kernel."""
        while len(nodes) > 1:
            esc = self._escapes(nodes)
            if len(esc) <= 1 and (not esc or esc[0] is nodes[-1].outputs[0]):
                return nodes
            dropped = nodes.pop()
            self.reasons.setdefault(dropped.name, "an earlier value of the kernel is also read outside it")
            nodes = self._without_dependents(nodes, dropped)
        return nodes

    def _without_dependents(self, nodes: list[Node], dropped: Node) -> list[Node]:
        gone = {id(v) for v in dropped.outputs}
        kept = []
        for m in nodes:
            if any(id(v) in gone for v in m.inputs):
                gone.update(id(v) for v in m.outputs)
            else:
                kept.append(m)
        return kept

    def prologue(self, anchor: Node, nodes: list[Node]) -> list[Node]:
        ids = {id(m) for m in nodes}
        pro = []
        for m in nodes:
            for i, v in enumerate(m.inputs):
                p = v.producer
                if p is None or v.is_const or id(p) in self.taken or id(p) in ids or id(v) in self.outputs \
                        or len(self.users.get(v, [])) != 1 or p.inputs[0].is_const:
                    continue
                if m is anchor:
                    ok = (anchor.op in (linalg.matmul, q.matmul) and i == 1 and p.op is shape.transpose
                          and _is_last_axes_transpose(p)) or (anchor.op is rd.reduce_sum and p.op is ew.cast)
                else:
                    ok = p.op is q.requant and m.op is ew.add and (
                        anchor.op is q.conv or anchor.op is q.matmul and self.chains is GPU_CHAINS)
                if ok:
                    pro.append(p)
                    ids.add(id(p))
        return pro


def _body(anchor: Node, nodes: list[Node]) -> tuple[Graph, list[Value]]:
    """The nodes as a Graph of their own, and the outer values that feed its inputs: the anchor's
    operands (or, through a prologue, their sources) come first, in the anchor's order."""
    body = Graph(f"{nodes[-1].name or 'kernel'}_body")
    produced = {id(v) for m in nodes for v in m.outputs}
    vmap: dict[int, Value] = {}
    operands: list[Value] = []

    def inner(v: Value) -> Value:
        if id(v) not in vmap:
            if v.is_const:
                vmap[id(v)] = Value(v.name, v.type, v.const)
            else:
                assert id(v) not in produced
                vmap[id(v)] = body.add_input(v.name, v.type)
                operands.append(v)
        return vmap[id(v)]

    for v in anchor.inputs:
        p = v.producer
        if p is not None and not v.is_const and any(p is m for m in nodes):
            v = p.inputs[0]
        if not v.is_const:
            inner(v)
    for m in nodes:
        ins = [inner(v) for v in m.inputs]
        outs = [Value(v.name, v.type) for v in m.outputs]
        for v, o in zip(m.outputs, outs):
            vmap[id(v)] = o
            body._names.add(v.name)
        body.nodes.append(Node(m.op, ins, m.attrs, outs, m.name, m.loc))
    body.outputs = [vmap[id(nodes[-1].outputs[0])]]
    return body, operands


def fuse(g: Graph, gpu: bool = False) -> tuple[Graph, dict[str, str]]:
    """(the fused graph, {node name: why it stayed out of its producer's kernel}); `gpu`: the GPU's integer
    chains (GPU_CHAINS)."""
    g = g.clone()
    f = _Fuser(g, gpu)
    groups: dict[int, Group] = {}          # id(last node) -> group
    for n in g.nodes:
        if n.op not in ANCHORS or id(n) in f.taken:
            continue
        nodes = f.epilogue(n)
        pro = f.prologue(n, nodes)
        nodes = sorted(pro + nodes, key=lambda m: f.order[id(m)])
        for m in nodes:
            f.taken.add(id(m))
        groups[id(nodes[-1])] = Group(n, nodes, {id(p) for p in pro})
    members = {id(m) for grp in groups.values() for m in grp.nodes}
    out = []
    for n in g.nodes:
        grp = groups.get(id(n))
        if grp is not None:
            body, operands = _body(grp.anchor, grp.nodes)
            attrs = kernel.fused.complete_attrs({"kernel": ANCHORS[grp.anchor.op], "body": body})
            out.append(Node(kernel.fused, operands, attrs, [grp.out], grp.anchor.name, grp.anchor.loc))
        elif id(n) not in members:
            out.append(n)
    g.nodes = out
    return g, f.reasons


def explain_fusion(g: Graph) -> dict[str, str]:
    """{node name: the rule that kept it out of its producer's kernel} for g's unfused nodes."""
    fused, reasons = fuse(g)
    inside = {m.name for n in fused.nodes if n.op is kernel.fused for m in n.attrs["body"].nodes}
    return {k: v for k, v in reasons.items() if k not in inside}


@register_pass("fuse_kernels")
def fuse_kernels(g: Graph, ctx: PassContext) -> Graph:
    """Anchor ops (conv, matmul, pool, reductions, ...) with their elementwise epilogues -> k.fused."""
    return fuse(g, getattr(ctx.target, "kind", "llvm") == "cuda")[0]
