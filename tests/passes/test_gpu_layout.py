"""assign_gpu_layouts: the GPU's int8 convs (and the max pools between them) read and write NCHW{16}c or
NCHW{8}c, everything else stays NCHW, and the meaning is kept (the interpreter runs layout.pack /
layout.unpack). No backend is needed."""
from __future__ import annotations

import numpy as np

from compiler import interp
from compiler.ir import Graph
from compiler.ops import elementwise as ew, kernel, linalg, nn, quant as q, reduce as rd
from compiler.ops import layout as lay
from compiler.types import DType, TensorType
from compiler.verify import verify
from passes.fusion import fuse
from passes.layout import assign, gpu_kernel_layout

U8, I8 = DType.U8, DType.I8


def _final(g):
    out = assign(fuse(g)[0], gpu_kernel_layout)
    verify(out)
    return out


def _qconv(g, x, co, rng, k=3, zp=0, out_dt=U8):
    w = g.const(rng.integers(-127, 128, (co, x.type.shape[1], k, k)).astype(np.int8), "w")
    b = g.const(rng.integers(-2000, 2000, co).astype(np.int32), "b")
    c = g.add1(q.conv, [x, w, b], strides=(1, 1), pads=(k // 2,) * 4, dilations=(1, 1), groups=1, x_zero_point=zp)
    lo, hi = q.INT_RANGE[out_dt]
    return g.add1(q.requant, [c], multiplier=(1 << 30,), shift=(42,), zero_point=0 if out_dt is I8 else 3,
                  in_zero_point=0, qmin=lo, qmax=hi, dtype=out_dt, axis=1)


def _residual_net(rng, c2=24):
    """quantize -> stem conv 3->16 -> max pool -> conv 16->16 + residual add -> conv 16->c2 -> requant."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 10, 10), DType.F32))
    xq = g.add1(q.quantize, [x], scale=0.05, zero_point=7, dtype=U8, qmin=0, qmax=255)
    a = _qconv(g, xq, 16, rng, zp=7)
    p = g.add1(nn.max_pool, [a], kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0), dilations=(1, 1))
    b = _qconv(g, p, 16, rng, zp=3, out_dt=I8)
    s = g.add1(ew.add, [g.add1(ew.cast, [b], to=DType.I32), g.add1(ew.cast, [p], to=DType.I32)])
    r = g.add1(q.requant, [s], multiplier=(1 << 30,), shift=(31,), zero_point=3, in_zero_point=0, qmin=0,
               qmax=255, dtype=U8, axis=1)
    g.outputs = [_qconv(g, r, c2, rng, k=1, zp=3)]
    return g


def test_int8_convs_and_the_pool_between_them_stay_blocked(rng):
    """The 3-channel stem reads its input NCHW{4}c, the quantize kernel writing it padded with the zero point, and
    writes 16-channel blocks; the max pool, the next conv (its residual add in its write-back) and the last conv
    read blocks; the 24-channel output is written in 8-channel blocks and unpacked once, where the graph output
    leaves."""
    g = _residual_net(rng)
    fg = _final(g)
    kernels = [n for n in fg.nodes if n.op is kernel.fused]
    assert [n.op for n in fg.nodes if n.op in (lay.pack, lay.unpack)] == [lay.unpack]
    assert [n.attrs["kernel"] for n in kernels] == ["quantize", "qconv", "pool", "qconv", "qconv"]
    assert [n.inputs[0].type.shape for n in kernels[1:]] == [(1, 1, 10, 10, 4), (1, 1, 10, 10, 16),
                                                              (1, 1, 5, 5, 16), (1, 1, 5, 5, 16)]
    pack = kernels[0].attrs["body"].outputs[0].producer
    assert pack.op is lay.pack and (pack.attrs["block"], pack.attrs["fill"]) == (4, 7)
    assert [n.outputs[0].type.shape for n in kernels[1:]] == [(1, 1, 10, 10, 16), (1, 1, 5, 5, 16),
                                                               (1, 1, 5, 5, 16), (1, 3, 5, 5, 8)]
    x = rng.standard_normal((1, 3, 10, 10)).astype(np.float32)
    want = interp.run(g, x)[0]
    assert np.std(want) > 0
    np.testing.assert_array_equal(interp.run(fg, x)[0], want)


def test_channel_counts_no_block_divides_stay_plain(rng):
    """A conv to 12 channels (no multiple of 8) writes NCHW; the conv after it reads that plain result. Float convs
    are not the GPU table's: a float chain keeps NCHW throughout."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 16, 6, 6), U8))
    g.outputs = [_qconv(g, _qconv(g, x, 12, rng), 16, rng)]
    fg = _final(g)
    convs = [n for n in fg.nodes if n.op is kernel.fused]
    assert [n.inputs[0].type.rank for n in convs] == [5, 4] and [n.outputs[0].type.rank for n in convs] == [4, 5]
    xs = rng.integers(0, 256, (1, 16, 6, 6)).astype(np.uint8)
    np.testing.assert_array_equal(interp.run(fg, xs)[0], interp.run(g, xs)[0])

    f = Graph()
    y = f.add_input("y", TensorType((1, 16, 6, 6), DType.F32))
    w = f.const(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), "w")
    f.outputs = [f.add1(ew.relu, [f.add1(linalg.conv, [y, w], strides=(1, 1), pads=(1,) * 4, dilations=(1, 1),
                                         groups=1)])]
    assert not any(n.op in (lay.pack, lay.unpack) for n in _final(f).nodes)


def test_float16_convs_are_blocked_and_a_result_widened_to_float32_too(rng):
    """--precision fp16: float16 convs read and write blocks like int8 ones, also one whose kernel ends in a cast to
    float32 (the GPU's GEMM writes it widened) and a float32 global average pool after it reads those blocks; a conv
    whose kernel ends in another float32 op (lowered op by op on the GPU) keeps NCHW, and so does an FP32 pool's
    input."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 16, 6, 6), DType.F16))
    y = x
    for i in range(2):
        w = g.const(rng.standard_normal((16, 16, 3, 3)).astype(np.float16), f"w{i}")
        y = g.add1(ew.relu, [g.add1(linalg.conv, [y, w], strides=(1, 1), pads=(1,) * 4, dilations=(1, 1),
                                    groups=1)])
    y = g.add1(ew.cast, [y], to=DType.F32)
    g.outputs = [g.add1(rd.reduce_mean, [y], axes=(2, 3), keepdims=True)]
    fg = _final(g)
    kernels = [n for n in fg.nodes if n.op is kernel.fused]
    assert [n.attrs["kernel"] for n in kernels] == ["conv", "conv", "reduce"]
    assert [n.inputs[0].type.rank for n in kernels] == [5, 5, 5]
    assert kernels[1].outputs[0].type.dtype is DType.F32
    assert [n.op for n in fg.nodes] == [lay.pack, kernel.fused, kernel.fused, kernel.fused, lay.unpack]
    xs = rng.standard_normal((1, 16, 6, 6)).astype(np.float16)
    np.testing.assert_array_equal(interp.run(fg, xs)[0], interp.run(g, xs)[0])

    f = Graph()
    x = f.add_input("x", TensorType((1, 16, 6, 6), DType.F16))
    w = f.const(rng.standard_normal((16, 16, 3, 3)).astype(np.float16), "w")
    y = f.add1(ew.cast, [f.add1(linalg.conv, [x, w], strides=(1, 1), pads=(1,) * 4, dilations=(1, 1), groups=1)],
               to=DType.F32)
    f.outputs = [f.add1(ew.relu, [y])]
    ff = _final(f)
    assert [n.inputs[0].type.rank for n in ff.nodes if n.op is kernel.fused] == [4]

    h = Graph()                             # FP32: plain convs, so the pool reads plain too (no pack for it)
    x = h.add_input("x", TensorType((1, 16, 6, 6), DType.F32))
    w = h.const(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), "w")
    y = h.add1(ew.relu, [h.add1(linalg.conv, [x, w], strides=(1, 1), pads=(1,) * 4, dilations=(1, 1), groups=1)])
    h.outputs = [h.add1(rd.reduce_mean, [y], axes=(2, 3), keepdims=True)]
    assert not any(n.op in (lay.pack, lay.unpack) for n in _final(h).nodes)
