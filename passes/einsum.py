"""Einsum cascades (FuseMax): attention as extended Einsums, how many passes each cascade makes over
the key rank, and fuse_attention, which makes the attention chain one kernel.

    matmul(q, transpose(k)) -> [div | mul by a scalar] -> [add mask] -> softmax(-1) -> matmul(., v)
      => k.fused{kernel = "attention", body = that chain, tile = (query block, key block)}

The fused node's meaning is its body (the ops above), so the rewrite keeps meaning exactly; its kernel
runs the 1-pass cascade (running max, running denominator, one division at the end) over key blocks.
An Einsum here is `out[ranks] = map(ins) :: reduce over ranks`, with FuseMax's iterative ranks (a
recurrence out[r+1] = f(out[r], ...)) and partitioned ranks (m = m1 * M0 + m0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew
from compiler.ops import kernel, linalg, nn, shape
from compiler.types import DType
from passes.base import register_pass

KERNEL = "attention"


@dataclass(frozen=True)
class Einsum:
    """out[ranks] = map(ins) :: reduce over `over`; `iterative`: the rank this is a recurrence over."""

    out: str
    ranks: tuple[str, ...]
    ins: tuple[tuple[str, tuple[str, ...]], ...]
    map: str                       # the map action over the inputs, "{0} × {1}"
    reduce: str = ""
    over: tuple[str, ...] = ()
    iterative: str = ""

    @property
    def space(self) -> set[str]:
        """The ranks this Einsum iterates over."""
        return set(self.ranks) | set(self.over) | {r for _, rs in self.ins for r in rs}

    def __str__(self) -> str:
        def t(name, rs):
            return f"{name}[{','.join(rs)}]"
        lhs = t(self.out, (f"{self.iterative}+1",) + self.ranks[1:] if self.iterative else self.ranks)
        rhs = self.map.format(*(t(n, rs) for n, rs in self.ins))
        red = f" :: reduce_{''.join(self.over)} {self.reduce}" if self.reduce else ""
        return f"{lhs} = {rhs}{red}"


@dataclass(frozen=True)
class Cascade:
    name: str
    einsums: tuple[Einsum, ...]
    outer: tuple[str, ...] = ()        # partition ranks walked once, outside (key blocks m1, query blocks p1)


def _e(out, ranks, ins, map_, reduce="", over=(), iterative=""):
    return Einsum(out, tuple(ranks), tuple((n, tuple(rs)) for n, rs in ins), map_, reduce, tuple(over),
                  iterative)


# Per (batch, head): p query, m key, e head dim, f value dim (ALGORITHMS.md 4.2 and 4.4).
THREE_PASS = Cascade("softmax as written (3 passes)", (
    _e("QK", "pm", [("Q", "pe"), ("K", "me")], "{0} × {1}", "+", "e"),
    _e("GM", "p", [("QK", "pm")], "{0}", "max", "m"),
    _e("SN", "pm", [("QK", "pm"), ("GM", "p")], "exp({0} - {1})"),
    _e("SD", "p", [("SN", "pm")], "{0}", "+", "m"),
    _e("A", "pm", [("SN", "pm"), ("SD", "p")], "{0} / {1}"),
    _e("AV", "pf", [("A", "pm"), ("V", "mf")], "{0} × {1}", "+", "m"),
))

TWO_PASS = Cascade("deferred normalization (2 passes)", (
    _e("QK", "pm", [("Q", "pe"), ("K", "me")], "{0} × {1}", "+", "e"),
    _e("GM", "p", [("QK", "pm")], "{0}", "max", "m"),
    _e("SN", "pm", [("QK", "pm"), ("GM", "p")], "exp({0} - {1})"),
    _e("SD", "p", [("SN", "pm")], "{0}", "+", "m"),
    _e("SNV", "pf", [("SN", "pm"), ("V", "mf")], "{0} × {1}", "+", "m"),
    _e("AV", "pf", [("SNV", "pf"), ("SD", "p")], "{0} / {1}"),
))

ONE_PASS = Cascade("running max and denominator (1 pass)", (
    _e("QK", ["m1", "m0", "p0"], [("Q", ["p0", "e"]), ("BK", ["m1", "m0", "e"])], "{0} × {1}", "+", "e"),
    _e("LM", ["m1", "p0"], [("QK", ["m1", "m0", "p0"])], "{0}", "max", ["m0"]),
    _e("RM", ["m1", "p0"], [("RM", ["m1", "p0"]), ("LM", ["m1", "p0"])], "max({0}, {1})", iterative="m1"),
    _e("SLN", ["m1", "m0", "p0"], [("QK", ["m1", "m0", "p0"]), ("RM", ["m1+1", "p0"])], "exp({0} - {1})"),
    _e("PRM", ["m1", "p0"], [("RM", ["m1", "p0"]), ("RM", ["m1+1", "p0"])], "exp({0} - {1})"),
    _e("SLD", ["m1", "p0"], [("SLN", ["m1", "m0", "p0"])], "{0}", "+", ["m0"]),
    _e("RD", ["m1", "p0"], [("RD", ["m1", "p0"]), ("PRM", ["m1", "p0"]), ("SLD", ["m1", "p0"])], "{1} · {0} + {2}",
       iterative="m1"),
    _e("SLNV", ["m1", "p0", "f"], [("SLN", ["m1", "m0", "p0"]), ("BV", ["m1", "m0", "f"])], "{0} × {1}", "+", ["m0"]),
    _e("RNV", ["m1", "p0", "f"], [("RNV", ["m1", "p0", "f"]), ("PRM", ["m1", "p0"]),
                                  ("SLNV", ["m1", "p0", "f"])], "{1} · {0} + {2}", iterative="m1"),
    _e("AV", ["p0", "f"], [("RNV", ["M1", "p0", "f"]), ("RD", ["M1", "p0"])], "{0} / {1}"),
), outer=("m1", "p1"))


def _levels(c: Cascade, rank: str) -> dict[str, int]:
    """The pass over `rank` each Einsum runs in. A value reduced fully over `rank` exists only after its
    pass, so whatever reads it, directly or through Einsums that do not walk `rank`, runs in a later
    one; a running reduction (an iterative rank) is not a full one."""
    level: dict[str, int] = {}
    avail: dict[str, int] = {}
    for e in c.einsums:
        level[e.out] = max((avail[n] for n, _ in e.ins if n in avail and n != e.out), default=0)
        avail[e.out] = level[e.out] + (rank in e.over and e.iterative != rank)
    return level


def passes_over(c: Cascade, rank: str) -> int:
    """How many times the cascade must walk `rank` (0 if no Einsum iterates it)."""
    level = _levels(c, rank)
    walking = [level[e.out] for e in c.einsums if rank in e.space]
    return 1 + max(walking) if walking else 0


def buffer_elements(c: Cascade, rank: str, sizes: dict[str, int]) -> int:
    """Elements that must be kept between passes over `rank`: the largest tensor walking `rank` that a
    later pass reads again (outer partition ranks are the loop, not the buffer)."""
    level = _levels(c, rank)
    kept = 0
    for e in c.einsums:
        for name, rs in e.ins:
            if name in level and level[e.out] > level[name] and rank in rs:
                kept = max(kept, math.prod(sizes[r] for r in rs if r not in c.outer))
    return kept


def online_attention(q, k, v, scale: float, mask=None, block: int = 64) -> np.ndarray:
    """The 1-pass cascade executed literally in numpy (float32), key blocks of `block`: its reference."""
    lk = k.shape[-2]
    rm = np.full(q.shape[:-1] + (1,), -np.inf, np.float32)
    rd = np.zeros_like(rm)
    rnv = np.zeros(q.shape[:-1] + (v.shape[-1],), np.float32)
    for m1 in range(0, lk, block):
        qk = (q @ np.swapaxes(k[..., m1:m1 + block, :], -1, -2)) * np.float32(scale)
        if mask is not None:
            qk = qk + np.broadcast_to(mask, qk.shape[:-1] + (mask.shape[-1],))[..., m1:m1 + block]
        new = np.maximum(rm, qk.max(axis=-1, keepdims=True))
        sln, prm = np.exp(qk - new), np.exp(rm - new)
        rd = prm * rd + sln.sum(axis=-1, keepdims=True)
        rnv = prm * rnv + sln @ v[..., m1:m1 + block, :]
        rm = new
    return (rnv / rd).astype(np.float32)


# -- the chain in the graph ------------------------------------------------------------------------


@dataclass
class AttentionChain:
    """One attention chain of the graph: its nodes (graph order) and operands."""

    nodes: list[Node]
    q: Value
    k: Value                  # (..., Lk, d), or (..., d, Lk) when `k_transposed`
    v: Value
    mask: Value | None
    scale: float
    k_transposed: bool

    @property
    def out(self) -> Value:
        return self.nodes[-1].outputs[0]

    def sizes(self) -> dict[str, int]:
        *batch, lq, d = self.q.type.shape
        return {"b": math.prod(batch), "p": lq, "m": self.v.type.shape[-2], "e": d, "f": self.v.type.shape[-1]}


def _scalar(v: Value) -> float | None:
    return float(v.const.reshape(-1)[0]) if v.is_const and v.const.size == 1 else None


def _only_reader(users, outputs, v: Value) -> Node | None:
    rs = users.get(v, [])
    return rs[0][0] if len(rs) == 1 and id(v) not in outputs else None


def find_chains(g: Graph) -> list[AttentionChain]:
    """Every fp32 matmul -> [scale] -> [additive mask] -> softmax(last axis) -> matmul chain whose inner
    values are read only by the next op of the chain."""
    users, outputs = g.uses(), {id(v) for v in g.outputs}
    chains = []
    for mm in g.nodes:
        if mm.op is not linalg.matmul or mm.outputs[0].type.dtype is not DType.F32:
            continue
        q, kt = mm.inputs
        if q.type.rank < 2 or kt.type.rank != q.type.rank or q.type.shape[:-2] != kt.type.shape[:-2]:
            continue
        nodes, cur, scale, mask = [mm], mm.outputs[0], 1.0, None
        nxt = _only_reader(users, outputs, cur)
        if nxt is not None and nxt.op in (ew.div, ew.mul) and cur in nxt.inputs:
            c = _scalar(nxt.inputs[1] if nxt.inputs[0] is cur else nxt.inputs[0])
            if c is not None and c != 0 and (nxt.op is ew.mul or nxt.inputs[0] is cur):
                scale = 1.0 / c if nxt.op is ew.div else c
                nodes, cur = nodes + [nxt], nxt.outputs[0]
                nxt = _only_reader(users, outputs, cur)
        if nxt is not None and nxt.op is ew.add and nxt.outputs[0].type == cur.type:
            other = nxt.inputs[1] if nxt.inputs[0] is cur else nxt.inputs[0]
            if other is not cur and other.type.dtype is DType.F32 and other.type.rank == cur.type.rank:
                mask, nodes, cur = other, nodes + [nxt], nxt.outputs[0]
                nxt = _only_reader(users, outputs, cur)
        if nxt is None or nxt.op is not nn.softmax or nxt.attrs["axis"] not in (-1, cur.type.rank - 1):
            continue
        nodes, cur = nodes + [nxt], nxt.outputs[0]
        pv = _only_reader(users, outputs, cur)
        if pv is None or pv.op is not linalg.matmul or pv.inputs[0] is not cur:
            continue
        v = pv.inputs[1]
        if v.type.rank != q.type.rank or v.type.shape[:-2] != q.type.shape[:-2] or v.type.dtype is not DType.F32:
            continue
        k, transposed = kt, True
        t = kt.producer
        if t is not None and t.op is shape.transpose and _only_reader(users, outputs, kt) is mm and \
                list(t.attrs["perm"]) == list(range(kt.type.rank - 2)) + [kt.type.rank - 1, kt.type.rank - 2]:
            k, transposed, nodes = t.inputs[0], False, [t] + nodes
        chains.append(AttentionChain(nodes + [pv], q, k, v, mask, scale, transposed))
    return chains


def default_tile(lq: int, lk: int) -> tuple[int, int]:
    """(query block, key block): divisors of the lengths, at most 32 queries and 64 keys; a whole
    short axis when its largest such divisor is too small to vectorize."""
    def block(n: int, most: int) -> int:
        b = next(d for d in range(min(n, most), 0, -1) if n % d == 0)
        return n if b < 8 and n <= 4 * most else b
    return block(lq, 32), block(lk, 64)


def _body(ch: AttentionChain) -> Graph:
    body = Graph("attention_body")
    operands = [ch.q, ch.k, ch.v] + ([ch.mask] if ch.mask is not None and not ch.mask.is_const else [])
    vmap = {id(v): body.add_input(v.name, v.type) for v in operands}
    for n in ch.nodes:
        ins = []
        for v in n.inputs:
            if id(v) not in vmap:
                assert v.is_const, f"{v.name} is neither an operand nor a constant of the chain"
                vmap[id(v)] = Value(v.name, v.type, v.const)
            ins.append(vmap[id(v)])
        outs = [Value(o.name, o.type) for o in n.outputs]
        for o, new in zip(n.outputs, outs):
            vmap[id(o)] = new
            body._names.add(o.name)
        body.nodes.append(Node(n.op, ins, n.attrs, outs, n.name, n.loc))
    body.outputs = [vmap[id(ch.out)]]
    return body


def fuse(g: Graph) -> Graph:
    g = g.clone()
    chains = {id(ch.nodes[-1]): ch for ch in find_chains(g)}
    members = {id(n) for ch in chains.values() for n in ch.nodes}
    out = []
    for n in g.nodes:
        ch = chains.get(id(n))
        if ch is not None:
            body = _body(ch)
            tile = default_tile(ch.q.type.shape[-2], ch.v.type.shape[-2])
            operands = [ch.q, ch.k, ch.v] + ([ch.mask] if ch.mask is not None and not ch.mask.is_const else [])
            attrs = kernel.fused.complete_attrs({"kernel": KERNEL, "body": body, "tile": tile})
            out.append(Node(kernel.fused, operands, attrs, [ch.out], ch.nodes[-1].name, ch.nodes[-1].loc))
        elif id(n) not in members:
            out.append(n)
    g.nodes = out
    return g


@register_pass("fuse_attention")
def fuse_attention(g: Graph) -> Graph:
    """matmul -> [scale] -> [mask] -> softmax -> matmul chains -> one k.fused attention kernel (1 pass)."""
    return fuse(g)


# -- the report: `compile model.onnx --emit einsum` ------------------------------------------------


def cascades(g: Graph) -> list[tuple[str, Cascade, dict[str, int]]]:
    """(name, cascade, rank sizes per batch-head) of every attention in g: the chains as written run
    THREE_PASS, fused attention kernels ONE_PASS."""
    found = []
    for ch in find_chains(g):
        found.append((ch.nodes[-1].name, THREE_PASS, ch.sizes()))
    for n in g.nodes:
        if n.op is kernel.fused and n.attrs["kernel"] == KERNEL:
            *batch, lq, d = n.inputs[0].type.shape
            lk, dv = n.inputs[2].type.shape[-2:]
            tq, tk = n.attrs["tile"]
            found.append((n.name, ONE_PASS, {"b": math.prod(batch), "p": lq, "p0": tq, "e": d, "f": dv,
                                             "m1": lk // tk, "m0": tk, "m": lk}))
    return found


def format_cascades(g: Graph) -> str:
    lines = []
    for name, c, sizes in cascades(g):
        key = "m1" if "m1" in sizes else "m"
        buf = buffer_elements(c, key, sizes)
        inner = passes_over(c, "m0") if key == "m1" else 0
        buf = buffer_elements(c, "m0", sizes) if key == "m1" else buf
        lines.append(f"// {name}: {c.name}; {sizes['b']} x (queries {sizes['p']}, keys {sizes['m']}, "
                     f"head dim {sizes['e']})")
        lines.append(f"//   passes over the keys: {passes_over(c, key)}"
                     + (f" (key blocks of {sizes['m0']}; {inner} over each block)" if inner else ""))
        if key == "m1":
            lines.append(f"//   buffer: {buf} floats per (batch-head, query block) = {4 * buf} bytes "
                         f"(block scores), independent of the sequence length")
        else:
            lines.append(f"//   buffer: {buf} floats per batch-head = {4 * buf * sizes['b']} bytes in all "
                         f"(the {sizes['p']} x {sizes['m']} scores)")
        lines.extend(f"    {e}" for e in c.einsums)
    return "\n".join(lines) + "\n" if lines else "// no attention cascade found\n"


def report(g: Graph) -> str:
    """The cascades of g as written, then as fuse_attention leaves them."""
    return f"// as written\n{format_cascades(g)}\n// after fuse_attention\n{format_cascades(fuse(g))}"
