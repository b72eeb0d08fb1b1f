"""A graph of casts the dtype tests of both backends share."""
from __future__ import annotations

from collections.abc import Callable

from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.types import DType, TensorType


def cast_graph(src: DType, targets: list[tuple[DType, dict]], n: int, decoded: Callable[[DType], bool]) -> Graph:
    """x (n,) of `src` -> a cast to each (target, attrs); each result whose type `decoded` names is also cast back
    to float32 (the decode of that format)."""
    g = Graph()
    x = g.add_input("x", TensorType((n,), src))
    outs = []
    for to, attrs in targets:
        y = g.add1(ew.cast, [x], to=to, **attrs)
        outs.append(y)
        if decoded(to):
            outs.append(g.add1(ew.cast, [y], to=DType.F32))
    g.outputs = outs
    return g
