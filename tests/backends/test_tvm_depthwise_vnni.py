"""The depthwise conv's VNNI form (tvm_kernels/qdepthwise.py): adjacent pixels' taps shuffled into 32-bit lanes and
summed by vpdpbusd (8-bit data, 4 taps) or vpdpwssd (int16, 2 taps), bit-exact with q.conv's reference and with
the plain form, on 3x3 and 5x5 kernels, strides 1 and 2, 8- and 16-channel blocks, zero points and int32 biases
near the ends."""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from compiler import interp  # noqa: E402
from compiler.backends.tvm_fused.integer import depthwise_vnni  # noqa: E402
from compiler.backends.tvm_kernels import qdepthwise as D  # noqa: E402
from compiler.backends.tvm_kernels.common import host_target  # noqa: E402
from compiler.host import cpu_features  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.layouts import pack_conv_weight  # noqa: E402
from compiler.ops import quant as q  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402
from tests.backends.kernel_ir import build  # noqa: E402

TARGET = Target("llvm", num_threads=1)
HAS_VNNI = {"avx512vnni", "avx512vbmi", "avx512vl"} <= cpu_features(TARGET.cpu)
needs_vnni = pytest.mark.skipif(not HAS_VNNI, reason="the host CPU lacks AVX-512 VNNI / VBMI")

CASES = [  # channels, size, kernel, stride, data dtype, zero point
    (32, 13, 3, 1, DType.U8, 3),
    (48, 14, 3, 2, DType.I8, -5),
    (24, 11, 3, 1, DType.I8, 0),          # 8-channel blocks
    (40, 12, 5, 2, DType.U8, 200),        # 8-channel blocks, 5 taps: two windows of 4
    (32, 9, 5, 1, DType.I16, 7),
    (24, 10, 3, 2, DType.I16, -3),        # 8-channel blocks, int16: 256-bit vpdpwssd
]


def _graph(c, size, k, stride, xdt, zp, rng, table=False):
    g = Graph()
    x = g.add_input("x", TensorType((1, c, size, size), xdt))
    w = g.const(rng.integers(-127, 128, (c, 1, k, k)).astype(np.int8), "w")
    b = g.const(np.concatenate([[2**31 - 1, -2**31], rng.integers(-9000, 9000, c - 2)]).astype(np.int32), "b")
    acc = g.add1(q.conv, [x, w, b], strides=(stride, stride), pads=(k // 2,) * 4, dilations=(1, 1), groups=c,
                 x_zero_point=zp)
    m, sh = rng.integers(2**29, 2**31 - 1, c), rng.integers(34, 40, c)
    y = g.add1(q.requant, [acc], multiplier=tuple(int(v) for v in m), shift=tuple(int(v) for v in sh),
               zero_point=5, in_zero_point=0, qmin=0, qmax=255, dtype=DType.U8, axis=1)
    if table:                               # an activation's lookup after the requant (hardswish, SiLU)
        y = g.add1(q.table, [y, g.const(rng.integers(0, 256, 256).astype(np.uint8), "act_table")])
    g.outputs = [g.add1(q.dequantize, [y], scale=(0.1,), zero_point=(5,), axis=1)]
    return g


@needs_vnni
@pytest.mark.parametrize("c,size", [(32, 16), (24, 16), (24, 10)])
def test_the_depthwise_lookup_is_its_own_stage_and_bit_exact(c, size):
    """With an activation table the VNNI form's requant is a stage of its own and the lookup runs over the tile
    row's pixels (16- and 8-channel blocks); the layer equals compiler.interp."""
    rng = np.random.default_rng(c + size)
    g = _graph(c, size, 3, 1, DType.U8, 3, rng, table=True)
    exe = build(g, TARGET)
    assert 'T.sblock("pre_table")' in exe.source("tir")
    xs = rng.integers(0, 256, (1, c, size, size)).astype(np.uint8)
    np.testing.assert_array_equal(exe.run([xs])[0], interp.run(g, xs)[0])


@needs_vnni
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}ch{c[1]}_k{c[2]}s{c[3]}_{c[4].value}_zp{c[5]}")
def test_vnni_depthwise_graph_matches_the_interpreter_and_runs_vpdp(case):
    """The compiled depthwise layer runs the VNNI form (vpdpbusd / vpdpwssd after a vpermb / vpermw) and equals
    compiler.interp, int32 wraparound of the extreme biases included."""
    c, size, k, stride, xdt, zp = case
    rng = np.random.default_rng(c * k + stride)
    g = _graph(c, size, k, stride, xdt, zp, rng)
    exe = build(g, TARGET)
    info = np.iinfo(xdt.numpy)
    for _ in range(2):
        xs = rng.integers(info.min, info.max + 1, (1, c, size, size)).astype(xdt.numpy)
        np.testing.assert_array_equal(exe.run([xs])[0], interp.run(g, xs)[0])
    asm = exe.source("asm")
    wide = xdt is DType.I16
    assert re.search(r"\tvpdpwssd\t" if wide else r"\tvpdpbusd\t", asm)
    assert re.search(r"\tvpermw\t" if wide else r"\tvpermb\t", asm)


@needs_vnni
@pytest.mark.parametrize("tile", [None, (1, 2), (2, 4), (3, 5)])
def test_vnni_form_equals_the_plain_form_kernel_for_any_tile(tile):
    """At the kernel level the two forms give the same bytes on the same packed data; a tile that does not
    divide the output (5 of 12 pixels) falls back to the form's default."""
    rng = np.random.default_rng(1)
    spec = D.QDepthwiseSpec(1, 48, 12, 12, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 16, "int8", -7)
    x = rng.integers(-128, 128, (1, 3, 12, 12, 16)).astype(np.int8)
    w = rng.integers(-127, 128, (48, 1, 3, 3)).astype(np.int8)
    bias = rng.integers(-2**31, 2**31 - 1, 48).astype(np.int32)
    outs = []
    for s in (spec, dataclasses.replace(spec, vnni=True)):
        wp, bp = D.pack_vnni(s, w, bias) if s.vnni else \
            (pack_conv_weight(w, "depthwise", 1, 16), bias.reshape(3, 16))
        lib = tvm.compile(tvm.IRModule({"main": D.make_qdepthwise(s, tile if s.vnni else None)}),
                          target=host_target(1))
        out = tvm.runtime.tensor(np.zeros(s.out_shape(), np.int32))
        lib(*(tvm.runtime.tensor(a) for a in (x, wp, bp)), out)
        outs.append(out.numpy())
    np.testing.assert_array_equal(outs[1], outs[0])


def test_the_vnni_form_needs_the_instructions_and_dilation_1():
    """depthwise_vnni: AVX-512 VNNI, VBMI for 8-bit data (vpermb), VL for 8-channel blocks, dilation 1, a zero
    point the shifted data holds; never on a target without them."""
    spr, skx = Target("llvm", mcpu="sapphirerapids"), Target("llvm", mcpu="skylake-avx512")
    assert depthwise_vnni(spr, "uint8", 3, 16, (1, 1)) and depthwise_vnni(spr, "int16", -9, 8, (1, 1))
    assert depthwise_vnni(spr, "int8", -128, 8, (1, 1))
    assert not depthwise_vnni(spr, "uint8", 3, 16, (2, 2))
    assert not depthwise_vnni(spr, "uint8", 300, 16, (1, 1))
    assert not depthwise_vnni(skx, "uint8", 3, 16, (1, 1)) and not depthwise_vnni(skx, "int16", 0, 16, (1, 1))
    assert not depthwise_vnni(None, "uint8", 0, 16, (1, 1))
    with pytest.raises(ValueError, match="dilation 1"):
        D.QDepthwiseSpec(1, 16, 8, 8, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 16, "uint8", 0, vnni=True)
