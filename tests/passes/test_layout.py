"""assign_layouts: which values live in NCHW{b}c, the conversions it inserts and removes, and that the
meaning is kept (the interpreter runs layout.pack / layout.unpack). No backend is needed."""
from __future__ import annotations

import numpy as np

from compiler import interp
from compiler.ir import Graph
from compiler.ops import elementwise as ew, kernel, linalg, nn, quant as q, reduce as rd, shape
from compiler.ops import layout as lay
from compiler.types import DType, TensorType
from compiler.verify import verify
from passes.fusion import fuse
from passes.layout import assign

F32 = DType.F32


def _conv(g, x, co, rng, k=3, stride=1, groups=1):
    ci = x.type.shape[1]
    w = g.const((rng.standard_normal((co, ci // groups, k, k)) / k).astype(np.float32), "w")
    return g.add1(linalg.conv, [x, w, g.const(rng.standard_normal(co).astype(np.float32), "b")],
                  strides=(stride, stride), pads=(k // 2,) * 4, dilations=(1, 1), groups=groups)


def _final(g):
    out = assign(fuse(g)[0])
    verify(out)
    return out


def _ops(g):
    return [n.op for n in g.nodes]


def _check(g, fg, *xs, exact=True):
    for a, b in zip(interp.run(fg, *xs), interp.run(g, *xs)):
        if exact:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_pack_op_round_trips_with_padding():
    x = np.arange(2 * 3 * 2 * 2, dtype=np.int32).reshape(2, 3, 2, 2)
    (p,) = lay.pack.reference([x], {"block": 4, "fill": -7})
    assert p.shape == (2, 1, 2, 2, 4) and (p[..., 3] == -7).all() and p[1, 0, 1, 0, 2] == x[1, 2, 1, 0]
    (u,) = lay.unpack.reference([p], {"channels": 3})
    np.testing.assert_array_equal(u, x)


def test_conv_chain_stays_blocked_between_kernels(rng):
    """Three convs: the 3-channel input is read plain, everything after stays in 16-channel blocks, and
    the one unpack is where the graph output leaves."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 8, 8), F32))
    a = g.add1(ew.relu, [_conv(g, x, 16, rng)])
    b = g.add1(ew.relu, [_conv(g, a, 32, rng)])
    g.outputs = [_conv(g, b, 32, rng, k=1)]
    fg = _final(g)
    assert _ops(fg) == [kernel.fused] * 3 + [lay.unpack]
    ins = [n.inputs[0].type.shape for n in fg.nodes[:3]]
    assert ins == [(1, 3, 8, 8), (1, 1, 8, 8, 16), (1, 2, 8, 8, 16)]
    _check(g, fg, rng.standard_normal((1, 3, 8, 8)).astype(np.float32), exact=False)


def test_squeeze_excite_gate_runs_blocked(rng):
    """x * sigmoid(fc(pool(x))): the pool, the gate conv and the broadcast multiply all stay blocked."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 16, 6, 6), F32))
    a = _conv(g, x, 16, rng, groups=16)
    gate = g.add1(ew.sigmoid, [_conv(g, g.add1(rd.reduce_mean, [a], axes=(2, 3), keepdims=True), 16, rng, k=1)])
    g.outputs = [_conv(g, g.add1(ew.mul, [a, gate]), 16, rng, k=1)]
    fg = _final(g)
    assert sum(n.op is lay.unpack for n in fg.nodes) == 1 and sum(n.op is lay.pack for n in fg.nodes) == 1
    mul = next(n for n in fg.nodes if n.op is ew.mul)
    assert [v.type.shape for v in mul.inputs] == [(1, 1, 6, 6, 16), (1, 1, 1, 1, 16)]
    _check(g, fg, rng.standard_normal((1, 16, 6, 6)).astype(np.float32), exact=False)


def test_split_and_concat_of_whole_blocks_stay_blocked(rng):
    """C2f: a conv, a split into channel halves, a conv on one half, a concat along channels."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 32, 6, 6), F32))
    a = _conv(g, x, 32, rng, k=1)
    lo = g.add1(shape.slice_, [a], starts=(0,), ends=(16,), axes=(1,), steps=(1,))
    hi = g.add1(shape.slice_, [a], starts=(16,), ends=(32,), axes=(1,), steps=(1,))
    g.outputs = [_conv(g, g.add1(shape.concat, [lo, hi, _conv(g, hi, 16, rng)], axis=1), 16, rng, k=1)]
    fg = _final(g)
    assert [n.op for n in fg.nodes if n.op in (lay.pack, lay.unpack)] == [lay.pack, lay.unpack]  # in, out
    cat = next(n for n in fg.nodes if n.op is shape.concat)
    assert cat.outputs[0].type.shape == (1, 3, 6, 6, 16)
    _check(g, fg, rng.standard_normal((1, 32, 6, 6)).astype(np.float32), exact=False)


def test_unaligned_slice_reads_the_plain_value(rng):
    g = Graph()
    x = g.add_input("x", TensorType((1, 32, 6, 6), F32))
    a = _conv(g, x, 32, rng, k=1)
    g.outputs = [g.add1(shape.slice_, [a], starts=(0,), ends=(12,), axes=(1,), steps=(1,))]
    fg = _final(g)
    assert [n.op for n in fg.nodes] == [lay.pack, kernel.fused, lay.unpack, shape.slice_]
    _check(g, fg, rng.standard_normal((1, 32, 6, 6)).astype(np.float32), exact=False)


def test_integer_stem_input_is_quantized_into_the_padded_blocked_layout(rng):
    """The 3-channel uint8 stem reads 4-channel blocks whose padding holds the zero point; the pack
    sinks into the quantize kernel, so no conversion runs between them."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 6, 6), F32))
    xq = g.add1(q.quantize, [x], scale=0.05, zero_point=7, dtype=DType.U8, qmin=0, qmax=255)
    w = g.const(rng.integers(-127, 128, (16, 3, 3, 3)).astype(np.int8), "w")
    c = g.add1(q.conv, [xq, w], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), groups=1, x_zero_point=7)
    g.outputs = [g.add1(q.requant, [c], multiplier=(1 << 30,), shift=(40,), zero_point=0, in_zero_point=0,
                        qmin=-128, qmax=127, dtype=DType.I8, axis=1)]
    fg = _final(g)
    assert _ops(fg) == [kernel.fused, kernel.fused, lay.unpack]
    qbody = fg.nodes[0].attrs["body"]
    assert qbody.nodes[-1].op is lay.pack and qbody.nodes[-1].attrs == {"block": 4, "fill": 7}
    assert fg.nodes[0].outputs[0].type.shape == (1, 1, 6, 6, 4)
    _check(g, fg, rng.standard_normal((1, 3, 6, 6)).astype(np.float32))


def test_max_pool_keeps_the_block(rng):
    g = Graph()
    x = g.add_input("x", TensorType((1, 8, 6, 6), F32))
    p = g.add1(nn.max_pool, [_conv(g, x, 8, rng)], kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0),
               dilations=(1, 1))
    g.outputs = [p]
    fg = _final(g)
    assert _ops(fg) == [lay.pack, kernel.fused, kernel.fused, lay.unpack]
    assert fg.nodes[2].inputs[0].type.shape == (1, 1, 6, 6, 8)
    _check(g, fg, rng.standard_normal((1, 8, 6, 6)).astype(np.float32), exact=False)


def test_a_pack_never_moves_into_a_kernel_with_a_fixed_output_layout(rng):
    """The VNNI conv writes plain NCHW when co % 16 != 0: the next conv's 4-channel blocks come from a
    graph-level pack, not from a pack inside the first kernel's body."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 12, 6, 6), DType.U8))
    y = x
    for i in range(2):
        w = g.const(rng.integers(-127, 128, (12, 12, 3, 3)).astype(np.int8), f"w{i}")
        c = g.add1(q.conv, [y, w], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), groups=1, x_zero_point=0)
        y = g.add1(q.requant, [c], multiplier=(1 << 30,), shift=(40,), zero_point=0, in_zero_point=0,
                   qmin=0, qmax=255, dtype=DType.U8, axis=1)
    g.outputs = [y]
    fg = _final(g)
    assert _ops(fg) == [lay.pack, kernel.fused, lay.pack, kernel.fused]
    assert all(n.attrs["body"].outputs[0].producer.op is q.requant for n in fg.nodes if n.op is kernel.fused)
    _check(g, fg, rng.integers(0, 256, (1, 12, 6, 6)).astype(np.uint8))


def test_nearest_upsample_stays_blocked(rng):
    """FPN upsampling between convs: the resize runs on the blocked value, no conversion around it."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 16, 4, 4), F32))
    up = g.add1(shape.resize, [_conv(g, x, 16, rng)], sizes=(1, 16, 8, 8), scales=(1.0, 1.0, 2.0, 2.0),
                mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    g.outputs = [_conv(g, up, 16, rng)]
    fg = _final(g)
    assert _ops(fg) == [lay.pack, kernel.fused, shape.resize, kernel.fused, lay.unpack]
    assert fg.nodes[2].outputs[0].type.shape == (1, 1, 8, 8, 16)
    _check(g, fg, rng.standard_normal((1, 16, 4, 4)).astype(np.float32), exact=False)
