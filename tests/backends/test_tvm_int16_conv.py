"""The int16-activation kernels (QuantConfig.keep_16bit's layers): the VNNI conv's and linear layer's loops two
input channels deep on vpdpwssd (int16 data x int8 weights widened to int16 -> int32), the depthwise conv, the
squeeze-excite gate and the global sum on int16 blocks, bit-exact with the references; 65536-entry activation
tables fused into the write-backs."""
from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from compiler import interp  # noqa: E402
from compiler.backends.tvm_kernels import qconv2d as K  # noqa: E402
from compiler.backends.tvm_kernels.common import host_target  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import quant as q  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402
from tests.backends.kernel_ir import build, kernels  # noqa: E402

TGT = host_target(1)
TARGET = Target("llvm", num_threads=1)
pytestmark = pytest.mark.skipif("avx512_vnni" not in open("/proc/cpuinfo").read(), reason="needs AVX-512 VNNI")

I16 = K.Requant(0, 0, -32767, 32767, "int16")
CASES = [  # ci, co, h, k, stride, pad, x zero point, requant (None: int32), residual
    (32, 32, 9, 1, 1, 0, 0, I16, False),
    (16, 24, 10, 3, 2, 1, 0, I16, False),                          # 8-channel output blocks
    (3, 16, 12, 3, 2, 1, 0, K.Requant(0, 0, -128, 127, "int8"), False),   # the stem: 3 channels padded to 4
    (16, 16, 8, 3, 1, 1, 5, None, False),                          # a zero point fills the padding
    (16, 32, 8, 1, 1, 0, 0, K.Requant(0, 0, -2**31, 2**31 - 1, "int32"), True),
]


def _mc(rng, n):
    return rng.integers(2**29, 2**31 - 1, n), rng.integers(34, 40, n)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}_k{c[3]}s{c[4]}_zp{c[6]}_res{int(c[8])}")
def test_int16_conv_kernel_bit_exact(case):
    ci, co, h, k, s, p, zp, rq1, res = case
    rng = np.random.default_rng(ci * co + k)
    rq3 = K.Requant(0, 0, -32767, 32767, "int16") if res else None
    spec = K.QConvSpec(1, ci, h, h, co, k, k, (s, s), (p,) * 4, (1, 1), "int16", zp, K.choose_in_block(ci), rq1,
                       "int16" if res else None, None, rq3)
    lib = tvm.compile(tvm.IRModule({"main": K.make_qconv2d(spec)}), target=TGT)
    asm = lib.mod.inspect_source("asm")
    # int16 pair products on vpdpwssd, not split by LLVM into vpmaddwd + vpaddd (host.llvm_target_config)
    assert re.search(r"\tvpdpwssd\t", asm) and "vpmaddwd" not in asm and "vpdpbusd" not in asm
    x = rng.integers(-32767, 32768, (1, ci, h, h)).astype(np.int16)
    w = rng.integers(-127, 128, (co, ci, k, k)).astype(np.int8)
    b = rng.integers(-20000, 20000, co).astype(np.int32)
    mcs = [_mc(rng, co) for _ in range(2)]
    args = [K.pack_data(spec, x), K.pack_weight(spec, w), K.pack_bias(spec, w, b)]
    assert args[1].dtype == np.int16 and args[1].shape[-2:] == (16, 2)
    if rq1 is not None:
        args.append(K.pack_requant(*mcs[0], co, spec.cop, form=rq1.form))
    oh, ow = K.output_hw(spec)
    r = None
    if res:
        r = rng.integers(-32767, 32768, (1, co, oh, ow)).astype(np.int16)
        args += [np.ascontiguousarray(r.reshape(1, co // 16, 16, oh, ow).transpose(0, 1, 3, 4, 2)),
                 K.pack_requant(*mcs[1], co, spec.cop, form=rq3.form)]
    dev = tvm.cpu()
    targs = [tvm.runtime.tensor(a, dev) for a in args] + [tvm.runtime.empty(K.out_shape(spec), spec.out_dtype, dev)]
    lib["main"](*targs)
    got = K.unpack_out(spec, targs[-1].numpy())
    want = K.qconv2d_reference(spec, x, w, b, mcs[0], r, None, mcs[1])
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def _requant(rng, v, c, dtype, lo, hi):
    m, sh = _mc(rng, c)
    return [v], dict(multiplier=tuple(int(a) for a in m), shift=tuple(int(a) for a in sh), zero_point=0,
                     in_zero_point=0, qmin=lo, qmax=hi, dtype=dtype, axis=1)


def test_int16_conv_and_depthwise_graph_runs_the_kernels_with_16_bit_tables():
    """int16 -> 1x1 conv -> requant int16 -> 65536-entry table (an activation) -> depthwise 3x3 stride 2 ->
    requant int8: two kernels (the vpdpwssd conv with the table in its write-back, looked up by vpgatherdd from
    its int32 form, the depthwise conv on int16 blocks), == compiler.interp."""
    rng = np.random.default_rng(3)
    g = Graph()
    x = g.add_input("x", TensorType((1, 24, 14, 14), DType.I16))
    a = g.add1(q.conv, [x, g.const(rng.integers(-127, 128, (48, 24, 1, 1)).astype(np.int8), "w1"),
                        g.const(rng.integers(-5000, 5000, 48).astype(np.int32), "b1")],
               strides=(1, 1), pads=(0,) * 4, dilations=(1, 1), groups=1, x_zero_point=0)
    ins, attrs = _requant(rng, a, 48, DType.I16, -32767, 32767)
    y = g.add1(q.requant, ins, **attrs)
    y = g.add1(q.table, [y, g.const(rng.integers(-32767, 32768, 65536).astype(np.int16), "act_table")])
    d = g.add1(q.conv, [y, g.const(rng.integers(-127, 128, (48, 1, 3, 3)).astype(np.int8), "w2")],
               strides=(2, 2), pads=(1,) * 4, dilations=(1, 1), groups=48, x_zero_point=0)
    ins, attrs = _requant(rng, d, 48, DType.I8, -128, 127)
    z = g.add1(q.requant, ins, **attrs)
    g.outputs = [g.add1(q.dequantize, [z], scale=(0.1,), zero_point=(0,), axis=1)]
    groups = [[n.op.name for n in k.nodes] for k in kernels(g, TARGET)[1] if k.kind == "qconv"]
    assert groups == [["q.conv", "q.requant", "q.table"], ["q.conv", "q.requant"]]
    exe = build(g, TARGET)
    calls = re.findall(r"call_tir\(cls\.([a-z_0-9]+?)_\d+,", exe.source("relax"))
    assert "qconv2d_vnni16" in calls and "qdepthwise" in calls and "table" not in calls
    assert re.search(r"\tvpgatherdd\t", exe.source("asm"))       # one gather per 16 lookups, not 16 loads
    xs = rng.integers(-32767, 32768, (1, 24, 14, 14)).astype(np.int16)
    np.testing.assert_array_equal(exe.run([xs])[0], interp.run(g, xs)[0])


def test_int16_squeeze_excite_block_runs_the_gate_and_global_sum_kernels():
    """A squeeze-excite block with every layer kept at 16 bits: the global average pool and the gate multiply
    run their kernels on int16 blocks (no op-by-op loops, no layout conversions between kernels), the compiled
    model bit-exact with the interpreter on its final IR."""
    import compiler
    from compiler.ops import elementwise as ew, linalg, reduce as rd
    rng = np.random.default_rng(5)
    g = Graph("se16")
    x = g.add_input("x", TensorType((1, 16, 12, 12), DType.F32))

    def conv(v, ci, co, name, k=1):
        w = g.const((rng.standard_normal((co, ci, k, k)) / np.sqrt(ci * k * k)).astype(np.float32), name + "_w")
        b = g.const((0.1 * rng.standard_normal(co)).astype(np.float32), name + "_b")
        return g.add1(linalg.conv, [v, w, b], strides=(1, 1), pads=(k // 2,) * 4, dilations=(1, 1), name=name)
    y = g.add1(ew.relu, [conv(x, 16, 32, "expand", 3)], name="act")
    s = g.add1(rd.reduce_mean, [y], axes=(2, 3), keepdims=True, name="squeeze")
    s = g.add1(ew.relu, [conv(s, 32, 8, "fc1")], name="fc1_act")
    gate = g.add1(ew.sigmoid, [conv(s, 8, 32, "fc2")], name="gate")
    y = g.add1(ew.mul, [y, gate], name="excite")
    g.outputs = [conv(y, 32, 16, "project")]
    calib = [rng.standard_normal((1, 16, 12, 12)).astype(np.float32) for _ in range(4)]
    cm = compiler.compile(g, "llvm -num-threads=1", quantize="int8", calibration=calib, integer_only=True,
                          keep_16bit=["expand", "fc1", "fc2", "project"])
    calls = re.findall(r"call_tir(?:_inplace)?\(cls\.([a-z_0-9]+?)_\d+,", cm.executable.source("relax"))
    assert "se_gate" in calls and "int_global_sum" in calls and calls.count("qconv2d_vnni16") >= 2
    assert not [c for c in calls if c.startswith("fused_")] and "unpack_nchwc" not in calls[:-1]
    xs = rng.standard_normal((1, 16, 12, 12)).astype(np.float32)
    np.testing.assert_array_equal(cm.run(xs)[0], interp.run(cm.graph, xs)[0])


@pytest.mark.parametrize("m,k,n,zp", [(1, 1280, 1000, 0), (5, 30, 40, 3), (16, 64, 32, -7)])
def test_int16_matmul_kernel_bit_exact(m, k, n, zp):
    """The linear layer's kernel on int16 activations: the VNNI matmul two rows deep on vpdpwssd (k padded to 4,
    columns to 16), requant to int16, == the numpy reference."""
    from compiler.backends.tvm_kernels import qmatmul as M
    rng = np.random.default_rng(k + n)
    spec = M.QMatmulSpec(m, k, n, "int16", zp, K.Requant(0, 0, -32767, 32767, "int16"))
    lib = tvm.compile(tvm.IRModule({"main": M.make_qmatmul(spec)}), target=TGT)
    asm = lib.mod.inspect_source("asm")
    assert re.search(r"\tvpdpwssd\t", asm) and "vpmaddwd" not in asm
    a = rng.integers(-32767, 32768, (m, k)).astype(np.int16)
    w = rng.integers(-127, 128, (k, n)).astype(np.int8)
    b = rng.integers(-20000, 20000, n).astype(np.int32)
    mc = (rng.integers(2**29, 2**31 - 1, n), rng.integers(34, 40, n))
    args = [a, M.pack_weight(spec, w), M.pack_bias(spec, w, 0, b), M.pack_requant(*mc, spec)]
    dev = tvm.cpu()
    t = [tvm.runtime.tensor(x, dev) for x in args] + [tvm.runtime.empty(M.out_shape(spec), spec.out_dtype, dev)]
    lib["main"](*t)
    np.testing.assert_array_equal(t[-1].numpy()[:, :n], M.qmatmul_reference(spec, a, w, 0, b, mc))


def test_vnni_targets_keep_vpdpwssd_unsplit():
    """For a CPU with AVX-512 VNNI the llvm target carries "fast-dpwssd": without it LLVM's machine combiner
    splits each vpdpwssd of the int16 conv into vpmaddwd + vpaddd (twice the instructions). Machine code only,
    so it runs on any host; a CPU without VNNI gets no flag."""
    from compiler.host import llvm_target_config
    assert "mattr" not in llvm_target_config("haswell", 1)
    spec = K.QConvSpec(1, 64, 7, 7, 32, 1, 1, x_dtype="int16", rq1=I16)
    func = K.make_qconv2d(spec, (2, 7))
    cfg = llvm_target_config("sapphirerapids", 1)
    split = tvm.compile(tvm.IRModule({"main": func}), target=tvm.target.Target({**cfg, "mattr": []}))
    kept = tvm.compile(tvm.IRModule({"main": func}), target=tvm.target.Target(cfg))
    assert "vpmaddwd" in split.mod.inspect_source("asm")
    asm = kept.mod.inspect_source("asm")
    assert asm.count("vpdpwssd") >= 14 and "vpmaddwd" not in asm     # >= one per accumulator of the tile
