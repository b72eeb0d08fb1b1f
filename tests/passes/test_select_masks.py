"""select_masks: softmax(s + where(keep, 0, m)) with m "minus infinity" becomes softmax(where(keep, s, m)),
bit-identical under the interpreter; anything else is left alone."""
from __future__ import annotations

import numpy as np

from compiler import interp
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import nn
from compiler.types import DType, TensorType
from passes.select_masks import select_masks

F32 = DType.F32
MIN = np.finfo(np.float32).min


def _attention_scores(fill: float, softmaxes: int = 1, extra_reader: bool = False) -> Graph:
    """`softmaxes` score tensors, each plus one shared additive mask where(keep, 0, fill), each softmaxed."""
    g = Graph()
    keep = g.add_input("keep", TensorType((1, 1, 4, 8), DType.BOOL))
    mask = g.add1(ew.where, [keep, g.const(np.float32(0)), g.const(np.float32(fill))])
    outs = []
    for i in range(softmaxes):
        s = g.add_input(f"s{i}", TensorType((1, 2, 4, 8), F32))
        added = g.add1(ew.add, [s, mask])
        outs.append(g.add1(nn.softmax, [added], axis=-1))
        if extra_reader:
            outs.append(g.add1(ew.relu, [added]))
    g.outputs = outs
    return g


def _feeds(softmaxes: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    keep = rng.random((1, 1, 4, 8)) < 0.7
    keep[..., 0] = True                                    # no row fully masked
    return [keep] + [rng.normal(0, 3, (1, 2, 4, 8)).astype(np.float32) for _ in range(softmaxes)]


def test_an_additive_minus_infinity_mask_becomes_a_select_with_the_same_meaning():
    g = _attention_scores(MIN, softmaxes=2)                # one mask shared by two layers (eager exports)
    h = select_masks(g)
    hist = h.op_histogram()
    assert hist == {"nn.where": 2, "nn.softmax": 2}        # the adds and the float mask are gone
    assert all(n.inputs[2].is_const for n in h.nodes if n.op is ew.where)
    feeds = _feeds(2)
    for a, b in zip(interp.run(g, *feeds), interp.run(h, *feeds)):
        np.testing.assert_array_equal(a, b)


def test_finite_masks_and_masked_scores_read_elsewhere_are_left_alone():
    assert "nn.add" in select_masks(_attention_scores(-10000.0)).op_histogram()    # s - 10000 != -10000
    assert "nn.add" in select_masks(_attention_scores(MIN, extra_reader=True)).op_histogram()
