"""pack_weights: a conv or matmul kernel's constant weight becomes the packed constant its kernel reads,
unpacked in the body by layout.unpack_weight; the interpreter's result does not change. No backend needed."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import interp, layouts
from compiler.ir import Graph
from compiler.ops import elementwise as ew, kernel, layout as lay, linalg, quant as q
from compiler.types import DType, TensorType
from compiler.verify import verify
from passes.base import PassContext
from passes.fusion import fuse
from passes.layout import assign
from passes.weights import pack_weights

F32 = DType.F32


@pytest.mark.parametrize("ci, co, groups, ib, ob, form", [
    (32, 64, 1, 16, 16, "dense"), (3, 16, 1, 0, 16, "dense"), (24, 24, 24, 8, 8, "depthwise"),
    (32, 64, 2, 16, 16, "dense"), (12, 18, 3, 8, 2, "generic"), (16, 10, 1, 16, 0, "dense"),
])
def test_packed_forms_round_trip(rng, ci, co, groups, ib, ob, form):
    f, ib_, ob_ = layouts.conv_weight_form(ci, co, groups, ib, ob)
    assert f == form
    w = rng.standard_normal((co, ci // groups, 3, 3)).astype(np.float32)
    p = layouts.pack_conv_weight(w, f, ib_, ob_)
    (back,) = lay.unpack_weight.reference([p], {"form": f})
    np.testing.assert_array_equal(back, w)
    assert lay.unpack_weight.infer([TensorType(p.shape, F32)], {"form": f})[0].shape == w.shape


def _conv(g, x, co, rng, k=3, groups=1):
    ci = x.type.shape[1]
    w = g.const((rng.standard_normal((co, ci // groups, k, k)) / k).astype(np.float32), "w")
    return g.add1(linalg.conv, [x, w, g.const(rng.standard_normal(co).astype(np.float32), "b")],
                  strides=(1, 1), pads=(k // 2,) * 4, dilations=(1, 1), groups=groups)


def test_conv_kernels_read_packed_constants_and_mean_the_same(rng):
    """A stem on the 3-channel image (plain input), a blocked 3x3, a depthwise conv and a 1x1 whose
    result leaves plain: each body unpacks the packed constant right before its conv."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 10, 10), F32))
    a = g.add1(ew.relu, [_conv(g, x, 16, rng)])
    b = g.add1(ew.relu, [_conv(g, a, 32, rng)])
    c = _conv(g, b, 32, rng, groups=32)
    g.outputs = [_conv(g, c, 10, rng, k=1)]
    before = assign(fuse(g)[0])
    after = pack_weights(before, PassContext())
    verify(after)
    forms = []
    for n in after.nodes:
        if n.op is kernel.fused and n.attrs["kernel"] == "conv":
            body = n.attrs["body"]
            conv = kernel.anchor_of(body)
            u = conv.inputs[1].producer
            assert u.op is lay.unpack_weight and u.inputs[0].is_const
            assert not any(v.is_const and v.type.rank == 4 for v in conv.inputs)   # no OIHW copy left
            forms.append((u.attrs["form"], u.inputs[0].type.shape))
    assert forms == [("dense", (1, 3, 3, 3, 1, 16)), ("dense", (2, 1, 3, 3, 16, 16)),
                     ("depthwise", (2, 3, 3, 16)), ("dense", (5, 2, 1, 1, 16, 2))]
    xv = rng.standard_normal((1, 3, 10, 10)).astype(np.float32)
    np.testing.assert_array_equal(interp.run(after, xv)[0], interp.run(before, xv)[0])


def test_matmul_kernels_read_packed_constants_and_mean_the_same(rng):
    """An fp32 linear layer reads its weight in column panels, an int8 one (weight zero point 0) in the VNNI
    matmul's padded form; a matmul of two activations keeps its operands."""
    g = Graph()
    x = g.add_input("x", TensorType((4, 8), F32))
    y = g.add_input("y", TensorType((6, 5), F32))
    w = g.const(rng.standard_normal((8, 6)).astype(np.float32), "w")
    h = g.add1(ew.relu, [g.add1(linalg.matmul, [x, w])])
    xq = g.add1(q.quantize, [h], scale=0.05, zero_point=0, dtype=DType.I8, qmin=-128, qmax=127)
    wq = g.const(rng.integers(-127, 128, (6, 10)).astype(np.int8), "wq")
    g.outputs = [g.add1(linalg.matmul, [h, y]), g.add1(q.matmul, [xq, wq])]
    before = assign(fuse(g)[0])
    after = pack_weights(before, PassContext())
    verify(after)
    forms = {}
    for n in after.nodes:
        if n.op is kernel.fused and n.attrs["kernel"] in ("matmul", "qmatmul"):
            mm = kernel.anchor_of(n.attrs["body"])
            u = mm.inputs[1].producer
            forms[mm.name] = (u.attrs["form"], u.inputs[0].type.shape) if u is not None else None
    assert sorted(forms.values(), key=str) == [("panels", (3, 8, 2)), ("vnni_matmul", (1, 2, 16, 4)), None]
    feeds = [rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((6, 5)).astype(np.float32)]
    for got, want in zip(interp.run(after, *feeds), interp.run(before, *feeds)):
        np.testing.assert_array_equal(got, want)


def test_matmul_forms_round_trip_through_their_padding(rng):
    for form, w in (("panels", rng.standard_normal((7, 96)).astype(np.float32)),
                    ("vnni_matmul", rng.integers(-128, 128, (38, 50)).astype(np.int8))):
        p = layouts.pack_matmul_weight(w, form)
        attrs = lay.unpack_weight.complete_attrs({"form": form, "channels": w.shape if form != "panels" else ()})
        (back,) = lay.unpack_weight.reference([p], attrs)
        np.testing.assert_array_equal(back, w)
        assert lay.unpack_weight.infer([TensorType(p.shape, DType.from_numpy(w.dtype))], attrs)[0].shape == w.shape


@pytest.mark.parametrize("co, ci, ib", [(32, 16, 16), (20, 3, 4), (16, 24, 8)])
def test_vnni_form_round_trips_through_its_padding(rng, co, ci, ib):
    w = rng.integers(-127, 128, (co, ci, 3, 3)).astype(np.int8)
    p = layouts.pack_vnni_conv_weight(w, ib)
    assert p.shape == (-(-co // 16), -(-ci // 4) * 4 // ib, 3, 3, ib // 4, 16, 4)
    attrs = lay.unpack_weight.complete_attrs({"form": "vnni", "channels": (co, ci)})
    (back,) = lay.unpack_weight.reference([p], attrs)
    np.testing.assert_array_equal(back, w)
    assert lay.unpack_weight.infer([TensorType(p.shape, DType.I8)], attrs)[0].shape == w.shape


def test_one_and_three_dimensional_convs_keep_their_weights(rng):
    for shape, k in (((1, 4, 9), (6, 4, 3)), ((1, 4, 5, 5, 5), (6, 4, 3, 3, 3))):
        g = Graph()
        x = g.add_input("x", TensorType(shape, F32))
        w = g.const(rng.standard_normal(k).astype(np.float32), "w")
        nd = len(shape) - 2
        g.outputs = [g.add1(ew.relu, [g.add1(linalg.conv, [x, w], strides=(1,) * nd, pads=(0,) * 2 * nd,
                                              dilations=(1,) * nd, groups=1)])]
        before = assign(fuse(g)[0])
        assert str(pack_weights(before, PassContext())) == str(before)
