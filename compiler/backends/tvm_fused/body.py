"""Reading a `k.fused` node's body: its anchor, layouts and epilogue, and composing the epilogue's ops
into one scalar TE function for the kernel's write-back."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tvm import te, tirx

from compiler.backends.base import NotFusable  # noqa: F401  (re-exported: the fused emitters raise it)
from compiler.backends.tvm_fused.scalar import SCALAR
from compiler.backends.tvm_lower.registry import tvm_dtype
from compiler.ir import Graph, Node, Value
from compiler.ops import kernel
from compiler.ops import layout as lay
from compiler.printer import format_attr


@dataclass
class KernelBody:
    node: Node
    body: Graph
    anchor: Node
    operand: dict[int, int]            # id(logical body value) -> operand index (inputs, unpacked ones too)
    blocks: dict[int, int]             # operand index -> block it arrives in (absent: plain)
    out_block: int                     # block the result is written in (0: plain)
    out_fill: int
    prologue: list[Node]
    epilogue: list[Node]
    result: Value                      # the logical result (before the final pack)

    def operand_of(self, v: Value) -> int | None:
        return self.operand.get(id(v))

    def single_chain(self) -> bool:
        """Each epilogue node reads the previous one's result (and nothing else of the kernel)."""
        cur = self.anchor.outputs[0]
        for n in self.epilogue:
            inner = [v for v in n.inputs if v is cur or self._inside(v)]
            if inner != [cur]:
                return False
            cur = n.outputs[0]
        return True

    def _inside(self, v: Value) -> bool:
        return v.producer is not None and v.producer in self.body.nodes and id(v) not in self.operand


def parse(node: Node) -> KernelBody:
    body = node.attrs["body"]
    anchor = kernel.anchor_of(body)
    operand = {id(v): i for i, v in enumerate(body.inputs)}
    blocks: dict[int, int] = {}
    for n in body.nodes:
        if n.op is lay.unpack and id(n.inputs[0]) in operand:
            i = operand[id(n.inputs[0])]
            operand[id(n.outputs[0])] = i
            blocks[i] = n.inputs[0].type.shape[4]
    res = body.outputs[0]
    out_block = out_fill = 0
    if res.producer is not None and res.producer.op is lay.pack:
        out_block, out_fill = res.producer.attrs["block"], res.producer.attrs["fill"]
        res = res.producer.inputs[0]
    after = {id(anchor.outputs[0])}           # the epilogue: what depends on the anchor's result
    pro, epi = [], []
    for n in body.nodes:
        if n is anchor or n.op in (lay.pack, lay.unpack, lay.unpack_weight):
            continue
        if any(id(v) in after for v in n.inputs):
            after.add(id(n.outputs[0]))
            epi.append(n)
        else:
            pro.append(n)
    return KernelBody(node, body, anchor, operand, blocks, out_block, out_fill, pro, epi, res)


# -- composing an epilogue ---------------------------------------------------------------------------
@dataclass
class Param:
    """One tensor the composed epilogue reads: an operand of the fused node, a per-channel constant, or
    a constant or operand broadcast over the (plain) output, read at the output's index with its size-1
    dims at 0 (`shape`: its shape at the output's rank)."""

    kind: str                           # "full" | "channel" | "row_channel" | "bcast"
    operand: int | None = None
    const: np.ndarray | None = None
    shape: tuple[int, ...] = ()


@dataclass
class Composed:
    key: tuple
    params: list[Param] = field(default_factory=list)
    build: Callable = None              # (placeholders) -> fn(v, channel, full_idx, row) -> expr


def _channel_vector(v: Value, out_shape: tuple[int, ...], axis: int) -> np.ndarray | None:
    """A constant that only varies along the output's `axis`, as a vector of that axis' length."""
    c = np.asarray(v.const)
    rank = len(out_shape)
    if c.ndim > rank:
        return None
    shp = (1,) * (rank - c.ndim) + c.shape
    if any(d != 1 for i, d in enumerate(shp) if i != axis % rank) or shp[axis % rank] != out_shape[axis % rank]:
        return None
    return np.ascontiguousarray(c.reshape(-1))


def _broadcasts(shape: tuple[int, ...], out_shape: tuple[int, ...]) -> bool:
    """`shape` broadcasts to `out_shape` (numpy's rule, no larger than it)."""
    if len(shape) > len(out_shape):
        return False
    return all(d in (1, o) for d, o in zip(shape[::-1], out_shape[::-1]))


def compose(kb: KernelBody, nodes: list[Node], start: Value, channel_axis: int, dtype: str,
            plain_full: bool, compute: str | None = None) -> Composed:
    """The epilogue `nodes` (reading `start` and outside values) as one scalar function. Full-shape
    operands are read at the output's index (in the output's layout: the caller passes them so);
    per-channel constants at the channel; scalar constants are folded in. `plain_full`: a full-shape
    operand must arrive plain (True) or in the output's block (False). `compute` (float32 for a float16
    epilogue): each op evaluated in it from its inputs and its result rounded to `dtype`, as numpy's float16
    ops (the reference) do; the scalar forms (a rational tanh for sigmoid) lose too much in float16 itself."""
    out_shape = start.type.shape
    params: list[Param] = []
    refs: dict[int, tuple] = {}
    key: list = []
    produced = {id(start)} | {id(n.outputs[0]) for n in nodes}

    def ref(v: Value) -> tuple:
        if id(v) in refs:
            return refs[id(v)]
        if v.is_const and v.type.size == 1:
            r = ("scalar", float(np.asarray(v.const).reshape(-1)[0]))
        elif v.is_const:
            vec = _channel_vector(v, out_shape, channel_axis)
            if vec is not None:
                params.append(Param("channel", const=vec.astype(dtype)))
            elif plain_full and _broadcasts(v.type.shape, out_shape):
                c = np.asarray(v.const, dtype).reshape((1,) * (len(out_shape) - v.type.rank) + v.type.shape)
                params.append(Param("bcast", const=np.ascontiguousarray(c), shape=c.shape))   # an S x S mask
            else:
                raise NotFusable(f"constant {v.name} of shape {v.type.shape} in the epilogue")
            r = ("param", len(params) - 1)
        else:
            i = kb.operand_of(v)
            if i is None:
                raise NotFusable(f"{v.name} is computed inside the kernel before its anchor")
            blocked = i in kb.blocks
            if v.type.shape == out_shape and blocked != plain_full:
                params.append(Param("full", operand=i))
            elif v.type.rank == 4 and channel_axis == 1 and not blocked and \
                    v.type.shape[2:] == (1, 1) and v.type.shape[1] == out_shape[1]:
                params.append(Param("row_channel", operand=i))
            elif plain_full and not blocked and _broadcasts(v.type.shape, out_shape):
                shp = (1,) * (len(out_shape) - v.type.rank) + v.type.shape      # e.g. a (b, 1, 1, S) mask
                params.append(Param("bcast", operand=i, shape=shp))
            else:
                raise NotFusable(f"operand {v.name} of shape {v.type.shape} in the epilogue")
            r = ("param", len(params) - 1)
        refs[id(v)] = r
        return r

    local = {id(start): 0} | {id(n.outputs[0]): i + 1 for i, n in enumerate(nodes)}   # names do not matter
    for n in nodes:
        if n.op not in SCALAR or tvm_dtype(n.outputs[0].type.dtype) != dtype:
            raise NotFusable(f"{n.op.name} has no scalar lowering for {dtype}")
        args = [("value", local[id(v)]) if id(v) in produced else ref(v) for v in n.inputs]
        key.append((n.op.name, tuple((k, format_attr(a)) for k, a in n.attrs.items()), tuple(args)))

    cdt = compute or dtype

    def widen(x):
        return x if compute is None else x.astype(compute)

    def rounded(x):
        return x if compute is None else x.astype(dtype).astype(compute)

    def build(placeholders: list[te.Tensor]):
        def fn(v, channel, full_idx, row):
            env = {0: widen(v)}

            def read(a):
                if a[0] == "value":
                    return env[a[1]]
                if a[0] == "scalar":
                    return tirx.const(a[1], cdt)
                p, t = params[a[1]], placeholders[a[1]]
                if p.kind == "channel":
                    return widen(t[channel])
                if p.kind == "row_channel":
                    return widen(t[row, channel, 0, 0])
                if p.kind == "bcast":
                    return widen(t[tuple(0 if d == 1 else i for d, i in zip(p.shape, full_idx))])
                return widen(t[full_idx])
            for i, ((_, _, args), n) in enumerate(zip(key, nodes)):
                env[i + 1] = rounded(SCALAR[n.op](n.attrs, [read(a) for a in args], cdt))
            return env[len(nodes)] if compute is None else env[len(nodes)].astype(dtype)
        return fn

    kinds = tuple((p.kind, p.shape if p.kind == "bcast" else None) for p in params)
    return Composed((start.type.shape, tuple(key), kinds), params, build)
