"""The reference interpreter: runs a Graph with each op's numpy reference. It defines what
every graph means; backends are tested against it."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from compiler.diagnostics import InvalidInput, SourceLoc
from compiler.ir import Graph, Value


def bind_inputs(g: Graph, args: Sequence[np.ndarray], kwargs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Match positional or by-name arrays to the graph inputs; check shapes and dtypes."""
    if args and kwargs:
        raise InvalidInput("pass inputs either positionally or by name, not both")
    if kwargs:
        names = [v.name for v in g.inputs]
        unknown = sorted(set(kwargs) - set(names))
        missing = [n for n in names if n not in kwargs]
        if unknown or missing:
            raise InvalidInput(f"inputs by name: unknown {unknown}, missing {missing}; "
                               f"the model takes {names}")
        args = [kwargs[n] for n in names]
    if len(args) != len(g.inputs):
        raise InvalidInput(f"the model takes {len(g.inputs)} input(s) "
                           f"({', '.join(v.name for v in g.inputs)}), got {len(args)}")
    out = []
    for v, a in zip(g.inputs, args):
        a = np.asarray(a)
        want = v.type
        if a.shape != want.shape or a.dtype != want.dtype.numpy:
            raise InvalidInput(f"input '{v.name}' must be {want.dtype.value}{list(want.shape)}, "
                               f"got {a.dtype}{list(a.shape)}", SourceLoc(g.source, v.name))
        out.append(np.require(a, requirements="C"))     # ascontiguousarray makes 0-d 1-d
    return out


def run(g: Graph, *args: np.ndarray, **kwargs: np.ndarray) -> list[np.ndarray]:
    env: dict[int, np.ndarray] = {}

    def read(v: Value) -> np.ndarray:
        return v.const if v.is_const else env[id(v)]

    for v, a in zip(g.inputs, bind_inputs(g, args, kwargs)):
        env[id(v)] = a
    for n in g.nodes:
        outs = n.op.reference([read(v) for v in n.inputs], n.attrs)
        for v, o in zip(n.outputs, outs):
            o = np.asarray(o)
            if o.shape != v.type.shape or o.dtype != v.type.dtype.numpy:
                raise AssertionError(f"reference of {n.op.name} ({n.name}) returned {o.dtype}{o.shape}, "
                                     f"type says {v.type}")
            env[id(v)] = o
    return [np.array(read(v)) for v in g.outputs]
