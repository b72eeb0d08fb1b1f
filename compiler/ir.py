"""The graph IR: SSA `Value`s produced by `Node`s, in a topologically ordered `Graph`.

A Value has at most one producer; graph inputs and constants have none. Constants carry
their numpy array (treated as immutable). Passes never mutate their input graph: they
`clone()` it first or build a new one.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.diagnostics import SourceLoc
from compiler.types import TensorType

if TYPE_CHECKING:
    from compiler.ops.registry import OpDef


class Value:
    """One SSA value. Identity is object identity (no __eq__)."""

    __slots__ = ("name", "type", "producer", "index", "const")

    def __init__(self, name: str, type: TensorType, const: np.ndarray | None = None):
        self.name = name
        self.type = type
        self.producer: Node | None = None
        self.index = 0
        self.const = const

    @property
    def is_const(self) -> bool:
        return self.const is not None

    def float_scalar(self) -> float | None:
        """A float constant of one element as a Python float, else None."""
        if self.const is not None and self.type.size == 1 and self.type.dtype.is_float:
            return float(np.asarray(self.const).reshape(-1)[0])
        return None

    def __repr__(self) -> str:
        return f"Value({self.name}: {self.type})"


class Node:
    __slots__ = ("op", "inputs", "attrs", "outputs", "name", "loc")

    def __init__(self, op: OpDef, inputs: list[Value], attrs: Mapping[str, Any],
                 outputs: list[Value], name: str = "", loc: SourceLoc | None = None):
        self.op = op
        self.inputs = list(inputs)
        self.attrs = dict(attrs)
        self.outputs = list(outputs)
        self.name = name
        self.loc = loc
        for i, v in enumerate(self.outputs):
            v.producer, v.index = self, i

    def __repr__(self) -> str:
        return f"Node({self.op.name}, {self.name!r})"

    @property
    def bodies(self) -> list["Graph"]:
        """The graph-valued attributes: a fused kernel's body (empty for every other node)."""
        return [a for a in self.attrs.values() if isinstance(a, Graph)]


class Graph:
    """A function: inputs, a topologically ordered node list, outputs."""

    def __init__(self, name: str = "main", source: str | None = None):
        self.name = name
        self.source = source          # the model file, for error messages
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        self._names: set[str] = set()

    # -- building -------------------------------------------------------------
    def fresh_name(self, hint: str) -> str:
        name, i = hint or "v", 0
        while name in self._names:
            i += 1
            name = f"{hint}_{i}"
        self._names.add(name)
        return name

    def add_input(self, name: str, type: TensorType) -> Value:
        v = Value(self.fresh_name(name), type)
        self.inputs.append(v)
        return v

    def const(self, array: np.ndarray, name: str = "c") -> Value:
        array = np.asarray(array)
        array.setflags(write=False)
        return Value(self.fresh_name(name), TensorType.of(array), const=array)

    def add(self, op: OpDef, inputs: Iterable[Value], name: str = "",
            loc: SourceLoc | None = None, **attrs: Any) -> list[Value]:
        """Append a node of `op`; its output types come from the op's type rule."""
        inputs = list(inputs)
        op.check_arity(len(inputs))
        attrs = op.complete_attrs(attrs)
        types = op.infer([v.type for v in inputs], attrs)
        hint = name or op.short_name
        outs = [Value(self.fresh_name(hint if len(types) == 1 else f"{hint}_{i}"), t)
                for i, t in enumerate(types)]
        self.nodes.append(Node(op, inputs, attrs, outs, name or outs[0].name, loc))
        return outs

    def add1(self, op: OpDef, inputs: Iterable[Value], name: str = "",
             loc: SourceLoc | None = None, **attrs: Any) -> Value:
        outs = self.add(op, inputs, name, loc, **attrs)
        assert len(outs) == 1, f"{op.name} has {len(outs)} outputs"
        return outs[0]

    # -- queries --------------------------------------------------------------
    def uses(self) -> dict[Value, list[tuple[Node, int]]]:
        users: dict[Value, list[tuple[Node, int]]] = {}
        for n in self.nodes:
            for i, v in enumerate(n.inputs):
                users.setdefault(v, []).append((n, i))
        return users

    def walk(self) -> Iterator[Node]:
        """Every node, and the nodes of graph-valued attributes (fused kernels' bodies) after the node
        that owns them."""
        for n in self.nodes:
            yield n
            for body in n.bodies:
                yield from body.walk()

    def constants(self) -> list[Value]:
        seen: dict[int, Value] = {}
        for n in self.nodes:
            for v in n.inputs:
                if v.is_const:
                    seen.setdefault(id(v), v)
        for v in self.outputs:
            if v.is_const:
                seen.setdefault(id(v), v)
        return list(seen.values())

    def replace_all_uses(self, old: Value, new: Value) -> None:
        for n in self.nodes:
            n.inputs = [new if v is old else v for v in n.inputs]
        self.outputs = [new if v is old else v for v in self.outputs]

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for n in self.nodes:
            hist[n.op.name] = hist.get(n.op.name, 0) + 1
        return dict(sorted(hist.items()))

    # -- copying --------------------------------------------------------------
    def clone(self) -> Graph:
        """A structural copy: new Values and Nodes, constant arrays shared (immutable)."""
        g = Graph(self.name, self.source)
        g._names = set(self._names)
        vmap: dict[int, Value] = {}

        def copy(v: Value) -> Value:
            if id(v) not in vmap:
                vmap[id(v)] = Value(v.name, v.type, v.const)
            return vmap[id(v)]

        g.inputs = [copy(v) for v in self.inputs]
        for n in self.nodes:
            g.nodes.append(Node(n.op, [copy(v) for v in n.inputs], n.attrs,
                                [copy(v) for v in n.outputs], n.name, n.loc))
        g.outputs = [copy(v) for v in self.outputs]
        return g

    def __str__(self) -> str:
        from compiler.printer import print_graph
        return print_graph(self)
