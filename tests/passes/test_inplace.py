"""assign_inplace: a fused kernel may write its result over an operand only where that operand is read
elementwise (an epilogue's residual), has the result's type, dies there, and is a kernel's fresh result.
No backend is needed: the pass sets an attribute, and the interpreter's meaning does not change."""
from __future__ import annotations

import numpy as np

from compiler import interp
from compiler.ir import Graph
from compiler.ops import elementwise as ew, linalg, shape
from compiler.types import DType, TensorType
from compiler.verify import verify
from passes.base import PassContext
from passes.fusion import fuse
from passes.inplace import assign_inplace
from passes.layout import assign

F32 = DType.F32


def _conv(g, x, co, rng, name, k=3):
    ci = x.type.shape[1]
    w = g.const((rng.standard_normal((co, ci, k, k)) / k).astype(np.float32), "w")
    return g.add1(linalg.conv, [x, w, g.const(rng.standard_normal(co).astype(np.float32), "b")], name=name,
                  strides=(1, 1), pads=(k // 2,) * 4, dilations=(1, 1), groups=1)


def _final(g):
    out = assign_inplace(assign(fuse(g)[0]), PassContext())
    verify(out)
    return out


def _inplace(fg):
    """{anchor name: inplace operand} of the fused kernels."""
    return {n.name: n.attrs["inplace"] for n in fg.nodes if n.op.name == "k.fused"}


def _block(g, x, rng):
    """A ResNet block: x -> conv -> relu -> conv(+ x) -> relu; x is read by the first conv and the add."""
    a = g.add1(ew.relu, [_conv(g, x, 16, rng, "c1")])
    b = _conv(g, a, 16, rng, "c2")
    return g.add1(ew.relu, [g.add1(ew.add, [b, x])])


def test_residual_that_dies_at_the_add_is_overwritten(rng):
    g = Graph()
    x = g.add_input("x", TensorType((1, 16, 8, 8), F32))
    h = g.add1(ew.relu, [_conv(g, x, 16, rng, "c0")])   # a kernel's fresh result
    y = _block(g, h, rng)
    g.outputs = [y]
    fg = _final(g)
    ip = _inplace(fg)
    c2 = next(n for n in fg.nodes if n.name == "c2")
    assert ip["c2"] >= 0 and c2.inputs[ip["c2"]].producer.name == "c0"
    # a 3x3 conv's input is read at other indices: never written over, though it dies there
    assert ip["c1"] == -1 and ip["c0"] == -1
    xv = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(interp.run(fg, xv)[0], interp.run(assign(fuse(g)[0]), xv)[0])


def test_graph_input_and_live_residual_are_kept(rng):
    # the residual is the caller's tensor: not ours to overwrite
    g = Graph()
    x = g.add_input("x", TensorType((1, 16, 8, 8), F32))
    g.outputs = [_block(g, x, rng)]
    assert _inplace(_final(g))["c2"] == -1
    # the residual is read by a later kernel: it is still live after the add
    g = Graph()
    x = g.add_input("x", TensorType((1, 16, 8, 8), F32))
    h = g.add1(ew.relu, [_conv(g, x, 16, rng, "c0")])
    y = _block(g, h, rng)
    g.outputs = [y, _conv(g, h, 16, rng, "c3", k=1)]
    assert _inplace(_final(g))["c2"] == -1


def test_residual_behind_a_view_is_kept(rng):
    # a reshape's result shares its source's buffer, so the kernel may not write over it
    g = Graph()
    x = g.add_input("x", TensorType((1, 1024), F32))
    h = g.add1(ew.relu, [g.add1(ew.add, [x, x])])
    r = g.add1(shape.reshape, [h], shape=(1, 16, 8, 8))
    g.outputs = [_block(g, r, rng)]
    fg = _final(g)
    assert _inplace(fg)["c2"] == -1
