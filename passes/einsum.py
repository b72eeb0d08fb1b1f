"""Einsum cascades (FuseMax): attention as extended Einsums, how many passes each cascade makes over
the key rank, and fuse_attention, which makes the attention chain one kernel.

    matmul(q, transpose(k)) -> [div | mul by a scalar] -> [add mask] -> softmax(-1) -> matmul(., v)
      => k.fused{kernel = "attention", body = that chain, tile = ()}

The tile (query block, key block) is left empty for choose_tiles (passes/tiles.py) to fill from the
cost model; where that pass does not run, the kernel uses default_tile.

The fused node's meaning is its body (the ops above), so the rewrite keeps meaning exactly; its kernel
runs the 1-pass cascade (running max, running denominator, one division at the end) over key blocks.
The chain is read in the forms exporters write: the scale split over q and k^T, K and V heads repeated
for grouped-query attention (reshape, expand, reshape), the softmax's NaN rows replaced by 0. A constant
causal mask stays in the body, as the same values computed there (trilu(expand(c), upper, k)), which
tells the kernel to skip the key blocks past the diagonal and read no mask; the operands are K and V
before the repeat, so the kernel reads each shared head in place.
An Einsum here is `out[ranks] = map(ins) :: reduce over ranks`, with FuseMax's iterative ranks (a
recurrence out[r+1] = f(out[r], ...)) and partitioned ranks (m = m1 * M0 + m0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew
from compiler.ops import indexing, kernel, linalg, nn, qattention, shape
from compiler.ops import unary_math as um
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

MASKED = -1e9      # an additive mask entry at or below this removes its key: exp underflows to 0


@dataclass
class AttentionChain:
    """One attention chain of the graph: its nodes (graph order) and operands. `k` and `v` are the
    tensors before any head repeat (grouped-query attention: `k_group` / `v_group` query heads share
    one K / V head); `causal` is the offset o of a constant causal mask (key j visible to query i iff
    j <= i + o), -1 if the mask is not one; `nan_guard`: softmax's NaN rows (every key at -inf) are
    replaced by 0 (what torch's ONNX export of scaled_dot_product_attention adds)."""

    nodes: list[Node]
    q: Value
    k: Value                  # (..., Lk, d), or (..., d, Lk) when `k_transposed`
    v: Value
    mask: Value | None
    scale: float
    k_transposed: bool
    k_group: int = 1
    v_group: int = 1
    causal: int = -1
    nan_guard: bool = False

    @property
    def out(self) -> Value:
        return self.nodes[-1].outputs[0]

    def sizes(self) -> dict[str, int]:
        *batch, lq, d = self.q.type.shape
        return {"b": math.prod(batch), "p": lq, "m": self.v.type.shape[-2], "e": d, "f": self.v.type.shape[-1]}


def scalar_of(v: Value) -> float | None:
    """The value of a one-element constant, or None."""
    return float(v.const.reshape(-1)[0]) if v.is_const and v.const.size == 1 else None


def _only_reader(users, outputs, v: Value) -> Node | None:
    rs = users.get(v, [])
    return rs[0][0] if len(rs) == 1 and id(v) not in outputs else None


def _scale_of(n: Node, x: Value) -> float | None:
    """c when n is x * c, c * x or x / c (c a nonzero scalar constant) and keeps x's type; else None."""
    if n.op not in (ew.mul, ew.div) or len(n.inputs) != 2 or x not in n.inputs or \
            n.outputs[0].type != x.type:
        return None
    other = n.inputs[1] if n.inputs[0] is x else n.inputs[0]
    c = scalar_of(other)
    if other is x or c is None or c == 0 or (n.op is ew.div and n.inputs[0] is not x):
        return None
    return 1.0 / c if n.op is ew.div else c


class _Walk:
    """Backward steps from a value the chain reads to its source, each through a node whose result
    only the chain reads: scalar scalings, the K transpose, a head repeat."""

    def __init__(self, g: Graph):
        self.users, self.outputs = g.uses(), {id(v) for v in g.outputs}

    def private(self, v: Value, reader: Node) -> Node | None:
        """v's producer when `reader` is v's only reader (and v no graph output)."""
        return v.producer if v.producer is not None and _only_reader(self.users, self.outputs, v) is reader \
            else None

    def unscale(self, v: Value, reader: Node, nodes: list[Node]) -> tuple[Value, float, Node]:
        """v = src * c1 * c2 ...: (src, the product, the node reading src)."""
        factor = 1.0
        while (n := self.private(v, reader)) is not None:
            x = next((x for x in n.inputs if not x.is_const), None)
            c = _scale_of(n, x) if x is not None else None
            if c is None:
                break
            factor, v, reader = factor * c, x, n
            nodes.append(n)
        return v, factor, reader

    def untranspose(self, v: Value, reader: Node, nodes: list[Node]) -> tuple[Value, bool, Node]:
        """v = transpose(src) of the last two axes: (src, True, the transpose); else (v, False, reader)."""
        n = self.private(v, reader)
        r = v.type.rank
        if n is not None and n.op is shape.transpose and \
                list(n.attrs["perm"]) == list(range(r - 2)) + [r - 1, r - 2]:
            nodes.append(n)
            return n.inputs[0], True, n
        return v, False, reader

    def unrepeat(self, v: Value, reader: Node, nodes: list[Node]) -> tuple[Value, int]:
        """v = each head of src repeated n times, as exporters write repeat_interleave along the heads
        (axis -3): reshape (..., h, 1, s, d) -> expand (..., h, n, s, d) -> reshape (..., h n, s, d).
        (src, n); (v, 1) when v is not such a repeat."""
        r2 = self.private(v, reader)
        ex = self.private(r2.inputs[0], r2) if r2 is not None and r2.op is shape.reshape else None
        r1 = self.private(ex.inputs[0], ex) if ex is not None and ex.op is shape.expand else None
        if r1 is None or r1.op is not shape.reshape:
            return v, 1
        group = repeat_group(r1.inputs[0].type.shape, r1.outputs[0].type.shape, ex.outputs[0].type.shape,
                             v.type.shape)
        if group is None:
            return v, 1
        nodes.extend([r1, ex, r2])
        return r1.inputs[0], group


def repeat_group(src, unsqueezed, expanded, out) -> int | None:
    """n when the shapes are src (..., h, s, d) -> (..., h, 1, s, d) -> (..., h, n, s, d) ->
    (..., h n, s, d): each of the h heads repeated n times in place; else None."""
    src, unsqueezed, expanded, out = (tuple(s) for s in (src, unsqueezed, expanded, out))
    if len(src) < 3 or unsqueezed != src[:-2] + (1,) + src[-2:]:
        return None
    n = expanded[-3]
    if expanded != src[:-2] + (n,) + src[-2:] or out != src[:-3] + (src[-3] * n,) + src[-2:]:
        return None
    return n


def causal_offset(mask: np.ndarray) -> tuple[int, float] | None:
    """(o, c) when the additive mask is causal: 0 where key j <= query i + o, one value c <= MASKED
    where j > i + o, the same matrix for every leading index, o >= 0 (every query sees a key) and
    some key masked; else None. Top-left aligned causal masks have o = 0, bottom-right ones (fewer
    queries than keys) o = keys - queries."""
    m = np.asarray(mask)
    if m.ndim < 2 or m.dtype not in (np.float32, np.float16):
        return None
    lq, lk = m.shape[-2:]
    flat = m.reshape(-1, lq, lk)
    masked = np.flatnonzero(flat[0, 0])
    if masked.size == 0 or masked[0] < 1:
        return None
    o, c = int(masked[0]) - 1, float(flat[0, 0, masked[0]])
    if not c <= MASKED or not np.array_equal(flat[0], np.triu(np.full((lq, lk), c, m.dtype), o + 1)):
        return None
    return (o, c) if (flat == flat[:1]).all() else None


def _nan_guard(w: _Walk, p: Value) -> tuple[Value, list[Node]]:
    """p, or where(isnan(p), 0, p) when that follows the softmax: (the value P V reads, its nodes)."""
    rs = w.users.get(p, [])
    if len(rs) != 2 or id(p) in w.outputs:
        return p, []
    isn = next((n for n, _ in rs if n.op is um.isnan), None)
    wh = next((n for n, _ in rs if n.op is ew.where), None)
    if isn is None or wh is None or _only_reader(w.users, w.outputs, isn.outputs[0]) is not wh or \
            wh.inputs[0] is not isn.outputs[0] or wh.inputs[2] is not p or scalar_of(wh.inputs[1]) != 0.0 or \
            wh.outputs[0].type != p.type:
        return p, []
    return wh.outputs[0], [isn, wh]


def _cast_to(w: _Walk, v: Value, dtype: DType) -> Node | None:
    """The cast of v to `dtype` that is v's only reader, or None."""
    n = _only_reader(w.users, w.outputs, v)
    return n if n is not None and n.op is ew.cast and n.attrs["to"] is dtype else None


def _forward(w: _Walk, mm: Node) -> tuple[list[Node], float, Value | None, Node] | None:
    """From Q K^T to softmax: (nodes, scale, mask, softmax), or None. Float16 scores reach the softmax
    through a cast to float32 (passes/fp16.py keeps the softmax in float32)."""
    nodes, cur, scale, mask = [mm], mm.outputs[0], 1.0, None
    nxt = _only_reader(w.users, w.outputs, cur)
    while nxt is not None and (c := _scale_of(nxt, cur)) is not None:
        scale, nodes, cur = scale * c, nodes + [nxt], nxt.outputs[0]
        nxt = _only_reader(w.users, w.outputs, cur)
    if nxt is not None and nxt.op is ew.add and nxt.outputs[0].type == cur.type:
        other = nxt.inputs[1] if nxt.inputs[0] is cur else nxt.inputs[0]
        if other is not cur and other.type.dtype is cur.type.dtype and 1 <= other.type.rank <= cur.type.rank:
            mask, nodes, cur = other, nodes + [nxt], nxt.outputs[0]
            nxt = _only_reader(w.users, w.outputs, cur)
    if cur.type.dtype is DType.F16:
        up = _cast_to(w, cur, DType.F32)
        if up is None:
            return None
        nodes, cur = nodes + [up], up.outputs[0]
        nxt = _only_reader(w.users, w.outputs, cur)
    if nxt is None or nxt.op is not nn.softmax or nxt.attrs["axis"] not in (-1, cur.type.rank - 1):
        return None
    return nodes + [nxt], scale, mask, nxt


def _chain_at(g: Graph, w: _Walk, mm: Node) -> AttentionChain | None:
    """The attention chain whose Q K^T is mm, or None."""
    q, kt = mm.inputs
    if q.type.rank < 2 or kt.type.rank != q.type.rank or q.type.shape[:-2] != kt.type.shape[:-2]:
        return None
    fwd = _forward(w, mm)
    if fwd is None:
        return None
    nodes, scale, mask, sm = fwd
    p, guard = _nan_guard(w, sm.outputs[0])
    down = []
    if mm.outputs[0].type.dtype is DType.F16:        # P back to float16 for P V (the NaN guard before or after)
        cast = _cast_to(w, p, DType.F16)
        if cast is None:
            return None
        down, p = [cast], cast.outputs[0]
        if not guard:
            p, guard = _nan_guard(w, p)
    pv = _only_reader(w.users, w.outputs, p)
    if pv is None or pv.op is not linalg.matmul or pv.inputs[0] is not p:
        return None
    v = pv.inputs[1]
    if v.type.rank != q.type.rank or v.type.shape[:-2] != q.type.shape[:-2] or v.type.dtype is not q.type.dtype:
        return None
    nodes += guard + down + [pv]
    q, q_scale, _ = w.unscale(q, mm, nodes)
    k, k_scale, reader = w.unscale(kt, mm, nodes)
    k, untransposed, reader = w.untranspose(k, reader, nodes)
    if untransposed:
        k, k_scale2, reader = w.unscale(k, reader, nodes)
        k_scale *= k_scale2
    k, k_group = w.unrepeat(k, reader, nodes)
    v, v_group = w.unrepeat(v, pv, nodes)
    found = mask is not None and mask.is_const and causal_offset(mask.const)
    order = {id(n): i for i, n in enumerate(g.nodes)}
    return AttentionChain(sorted(nodes, key=lambda n: order[id(n)]), q, k, v, mask,
                          scale * q_scale * k_scale, not untransposed, k_group, v_group,
                          found[0] if found else -1, bool(guard))


def find_chains(g: Graph) -> list[AttentionChain]:
    """Every fp32 chain [scale] Q, [scale] [repeat] K -> matmul(Q, [transpose] K) -> [scale] ->
    [additive mask] -> softmax(last axis) -> [NaN rows to 0] -> matmul(., [repeat] V) whose inner
    values are read only by the next op of the chain; and the float16 form of --precision fp16: Q, K, V
    and both matmuls, the scale and the mask float16, the scores cast to float32 for the softmax, P cast
    back."""
    w = _Walk(g)
    chains = []
    for mm in g.nodes:
        if mm.op is linalg.matmul and mm.outputs[0].type.dtype in (DType.F32, DType.F16):
            ch = _chain_at(g, w, mm)
            if ch is not None:
                chains.append(ch)
    return chains


def default_tile(lq: int, lk: int) -> tuple[int, int]:
    """(query block, key block): divisors of the lengths, at most 32 queries and 64 keys; a whole
    short axis when its largest such divisor is too small to vectorize."""
    def block(n: int, most: int) -> int:
        b = next(d for d in range(min(n, most), 0, -1) if n % d == 0)
        return n if b < 8 and n <= 4 * most else b
    return block(lq, 32), block(lk, 64)


def _causal_mask(body: Graph, mask: Value, offset: int, c: float) -> Value:
    """The causal mask `mask` holds, computed in the body: trilu(expand(c), upper, k = offset + 1).
    Same values as the constant; the trilu says to the kernel which key blocks hold no visible key."""
    fill = body.const(np.asarray(c, mask.type.dtype.numpy), "masked")
    full = Value(body.fresh_name(mask.name + "_full"), mask.type)
    out = Value(body.fresh_name(mask.name), mask.type)
    body.nodes.append(Node(shape.expand, [fill], shape.expand.complete_attrs({"shape": mask.type.shape}),
                           [full], full.name))
    body.nodes.append(Node(indexing.trilu, [full], indexing.trilu.complete_attrs({"upper": True, "k": offset + 1}),
                           [out], out.name))
    return out


def operands(ch: AttentionChain) -> list[Value]:
    """The fused kernel's operands: q, k, v and a mask that is not a constant."""
    return [ch.q, ch.k, ch.v] + ([ch.mask] if ch.mask is not None and not ch.mask.is_const else [])


def _body(ch: AttentionChain) -> Graph:
    body = Graph("attention_body")
    vmap = {id(v): body.add_input(v.name, v.type) for v in operands(ch)}
    body._names.update(o.name for n in ch.nodes for o in n.outputs)
    if ch.causal >= 0:
        vmap[id(ch.mask)] = _causal_mask(body, ch.mask, *causal_offset(ch.mask.const))
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
        if ch is not None:       # the tile is choose_tiles' to fill (else the kernel uses default_tile)
            attrs = kernel.fused.complete_attrs({"kernel": KERNEL, "body": _body(ch), "tile": ()})
            out.append(Node(kernel.fused, operands(ch), attrs, [ch.out], ch.nodes[-1].name, ch.nodes[-1].loc))
        elif id(n) not in members:
            out.append(n)
    g.nodes = out
    return g


@register_pass("fuse_attention")
def fuse_attention(g: Graph) -> Graph:
    """[scale, repeat] q, k -> matmul -> [scale] -> [mask] -> softmax -> [NaN guard] -> matmul chains ->
    one k.fused attention kernel (1 pass; causal masks as a trilu, K/V heads unrepeated)."""
    return fuse(g)


# -- the report: `compile model.onnx --emit einsum` ------------------------------------------------


def cascades(g: Graph) -> list[tuple[str, Cascade, dict[str, int]]]:
    """(name, cascade, rank sizes per batch-head) of every attention in g: the chains as written (float,
    or integer with Shiftmax) run THREE_PASS, fused attention kernels and q.attention ONE_PASS."""
    from passes.qattention import integer_chains
    found = []
    for ch in find_chains(g):
        found.append((ch.nodes[-1].name, THREE_PASS, ch.sizes()))
    for name, (q, k, v) in integer_chains(g):
        found.append((name, THREE_PASS, _sizes(q, k, v)))
    for n in g.nodes:
        if n.op is kernel.fused and n.attrs["kernel"] == KERNEL:
            lq, lk = n.inputs[0].type.shape[-2], n.inputs[2].type.shape[-2]
            tile = tuple(n.attrs["tile"]) or default_tile(lq, lk)      # choose_tiles has not run
            found.append((n.name, ONE_PASS, _sizes(*n.inputs[:3], tile)))
        elif n.op is qattention.attention:
            lq, lk = n.inputs[0].type.shape[-2], n.inputs[1].type.shape[-2]
            found.append((n.name, ONE_PASS, _sizes(*n.inputs[:3], (default_tile(lq, lk)[0], n.attrs["block"]))))
    return found


def _sizes(q: Value, k: Value, v: Value, tile: tuple[int, int] | None = None) -> dict[str, int]:
    """The rank sizes of one attention (per batch-head), its key rank split by the tile when fused."""
    *batch, lq, d = q.type.shape
    lk, dv = v.type.shape[-2:]
    sizes = {"b": math.prod(batch), "p": lq, "e": d, "f": dv, "m": lk}
    if tile is not None:
        tq, tk = tile
        sizes.update(p0=tq, m1=-(-lk // tk), m0=tk)
    return sizes


def trilu_causal(n: Node | None) -> int:
    """The causal offset node n states as a computed mask (trilu(expand(c), upper, k) with c <= MASKED: offset
    k - 1), or -1."""
    src = n.inputs[0].producer if n is not None and n.op is indexing.trilu else None
    if src is not None and n.attrs["upper"] and n.attrs["k"] >= 1 and src.op is shape.expand and \
            (c := scalar_of(src.inputs[0])) is not None and c <= MASKED:
        return n.attrs["k"] - 1
    return -1


def body_causal(body: Graph) -> int:
    """The causal offset a fused attention body's mask states (trilu_causal), or -1."""
    return next((o for n in body.nodes if (o := trilu_causal(n)) >= 0), -1)


def _notes(g: Graph) -> dict[str, list[str]]:
    """Per attention (by name): its causal offset and grouped heads, as the report states them."""
    notes: dict[str, list[str]] = {}

    def add(name: str, causal: int, groups: tuple[int, int], skipped: bool) -> None:
        out = notes.setdefault(name, [])
        if causal >= 0:
            out.append(f"causal (key j visible to query i iff j <= i + {causal})"
                       + ("; key blocks past the diagonal skipped, the mask not read" if skipped else ""))
        if groups != (1, 1):
            out.append(f"grouped-query heads: each K head serves {groups[0]} query heads, each V head "
                       f"{groups[1]}" + ("; read in place, not repeated" if skipped else ""))

    for ch in find_chains(g):
        add(ch.nodes[-1].name, ch.causal, (ch.k_group, ch.v_group), False)
    for n in g.nodes:
        if n.op is kernel.fused and n.attrs["kernel"] == KERNEL:
            bh = [math.prod(v.type.shape[:-2]) for v in n.inputs[:3]]
            add(n.name, body_causal(n.attrs["body"]), (bh[0] // bh[1], bh[0] // bh[2]), True)
    return notes


def format_cascades(g: Graph) -> str:
    lines = []
    notes = _notes(g)
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
        lines.extend(f"//   {note}" for note in notes.get(name, []))
        lines.extend(f"    {e}" for e in c.einsums)
    return "\n".join(lines) + "\n" if lines else "// no attention cascade found\n"


def report(g: Graph) -> str:
    """The cascades of g as written, then as fuse_attention leaves them."""
    return f"// as written\n{format_cascades(g)}\n// after fuse_attention\n{format_cascades(fuse(g))}"
