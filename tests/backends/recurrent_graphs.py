"""Small recurrent graphs the backends' tests share: one rnn / gru / lstm node with seeded weights."""
from __future__ import annotations

import numpy as np

from compiler.ir import Graph
from compiler.ops import recurrent
from compiler.types import DType, TensorType


def recurrent_graph(op, direction: str, steps=5, n=3, i=4, h=6, dtype=DType.F32, peepholes=True,
                    lengths=(5, 2, 0), **attrs) -> tuple[Graph, list[np.ndarray]]:
    """One recurrent node with seeded constant weights; inputs x (steps, n, i) and the entries' lengths."""
    kind = op.short_name
    gates, d = recurrent.GATES[kind], 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(5)
    g = Graph()
    x = g.add_input("x", TensorType((steps, n, i), dtype))
    lens = g.add_input("lens", TensorType((n,), DType.I32))

    def c(shape, name):
        return g.const((rng.standard_normal(shape) * 0.5).astype(dtype.numpy), name)
    args = [x, c((d, gates * h, i), "w"), c((d, gates * h, h), "r"), c((d, 2 * gates * h), "b"), lens,
            c((d, n, h), "h0")]
    if kind == "lstm":
        args += [c((d, n, h), "c0")] + ([c((d, 3 * h), "p")] if peepholes else [])
    g.outputs = g.add(op, args, hidden_size=h, direction=direction, **attrs)
    return g, [rng.standard_normal((steps, n, i)).astype(dtype.numpy), np.array(lengths, np.int32)]
