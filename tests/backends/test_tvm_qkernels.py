"""The VNNI integer kernels (tvm_kernels.qconv2d / qmatmul) against numpy references, bit-exact, with
vpdpbusd in their assembly; and a quantized graph through the fast path == compiler.interp."""
from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from compiler import interp  # noqa: E402
from tests.backends.kernel_ir import build, kernels  # noqa: E402
from compiler.backends.tvm_kernels import qconv2d as K, qmatmul as M  # noqa: E402
from compiler.backends.tvm_kernels.common import host_target  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import elementwise as ew, nn, quant as q, reduce as rd, shape  # noqa: E402
from compiler.host import cpu_features  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402

TGT = host_target(1)
TARGET = Target("llvm", num_threads=1)

pytestmark = pytest.mark.skipif("avx512_vnni" not in open("/proc/cpuinfo").read(),
                                reason="needs AVX-512 VNNI")


def _ints(rng, shape, dt):
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max + 1, shape).astype(dt)


def _build(func):
    lib = tvm.compile(tvm.IRModule({"main": func}), target=TGT)
    return lib, lib.mod.inspect_source("asm")


def _mc(rng, n):
    return rng.integers(2**29, 2**31 - 1, n), rng.integers(34, 40, n)


CONV_CASES = [  # ci, co, h, k, stride, pad, x dtype, x zp, fused epilogue
    (32, 32, 9, 1, 1, 0, "uint8", 0, "int32"),
    (16, 32, 10, 3, 1, 1, "uint8", 7, "u8"),
    (32, 16, 11, 3, 2, 1, "int8", -3, "i8"),
    (3, 16, 20, 7, 2, 3, "uint8", 5, "u8"),           # the stem: 3 channels padded to 4
    (20, 24, 9, 3, 1, 1, "int8", 11, "i8"),           # 24 channels: 8-channel blocks (two halves per vector)
    (16, 16, 8, 3, 1, 1, "uint8", 2, "residual"),     # requant -> int32 + requant(residual) -> requant
    (16, 32, 8, 1, 1, 0, "uint8", 0, "residual_hi"),  # the same with the int32 "hi" requant form
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[0]}x{c[1]}_k{c[3]}s{c[4]}_{c[6]}_{c[8]}")
def test_vnni_conv_bit_exact(case):
    ci, co, h, k, s, p, xdt, zp, epi = case
    rng = np.random.default_rng(ci * co + k)
    rq1 = rq2 = rq3 = res_dt = None
    if epi == "u8":
        rq1 = K.Requant(0, 3, 0, 255, "uint8")
    elif epi == "i8":
        rq1 = K.Requant(5, -2, -128, 120, "int8")
    elif epi.startswith("residual"):
        f = "hi" if epi == "residual_hi" else "i64"
        rq1, res_dt = K.Requant(0, 0, -2**31, 2**31 - 1, "int32", f), "uint8"
        rq2, rq3 = K.Requant(4, 0, -2**31, 2**31 - 1, "int32", f), K.Requant(0, 1, 0, 255, "uint8")
    spec = K.QConvSpec(1, ci, h, h, co, k, k, (s, s), (p, p, p, p), (1, 1), xdt, zp, K.choose_in_block(ci),
                       rq1, res_dt, rq2, rq3)
    lib, asm = _build(K.make_qconv2d(spec))
    assert "vpdpbusd" in asm
    x = _ints(rng, (1, ci, h, h), xdt)
    w = _ints(rng, (co, ci, k, k), np.int8)
    b = rng.integers(-20000, 20000, co).astype(np.int32)
    mcs = [_mc(rng, co) for _ in range(3)]
    mcs[2] = (np.full(co, 2**30), np.full(co, 31))
    args = [K.pack_data(spec, x), K.pack_weight(spec, w), K.pack_bias(spec, w, b)]
    res = None
    if rq1 is not None:
        args.append(K.pack_requant(*mcs[0], co, spec.cop, form=rq1.form))
    oh, ow = K.output_hw(spec)
    if res_dt is not None:
        res = _ints(rng, (1, co, oh, ow), np.uint8)
        args += [np.ascontiguousarray(res.reshape(1, co // 16, 16, oh, ow).transpose(0, 1, 3, 4, 2)),
                 K.pack_requant(*mcs[1], co, spec.cop, form=rq2.form), K.pack_requant(*mcs[2], co, spec.cop)]
    dev = tvm.cpu()
    targs = [tvm.runtime.tensor(a, dev) for a in args] + [tvm.runtime.empty(K.out_shape(spec), spec.out_dtype, dev)]
    lib["main"](*targs)
    got = K.unpack_out(spec, targs[-1].numpy())
    want = K.qconv2d_reference(spec, x, w, b, mcs[0], res, mcs[1], mcs[2])
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def _requant_form_kernel(rq: K.Requant, n: int):
    """out[i] = rq(x[i]) with the parameter table of rq.form, one channel block, vectorized like the conv."""
    from tvm import s_tir, te
    x = te.placeholder((n, 16), "int32", "x")
    t = te.placeholder((3, 1, 16), K.requant_dtype(rq), "t")
    y = te.compute((n, 16), lambda i, j: K.requant_te(x[i, j], t, (0, j), rq), name="y")
    sch = s_tir.Schedule(te.create_prim_func([x, t, y]))
    sch.vectorize(sch.get_loops(sch.get_sblock("y"))[-1])
    return tvm.compile(tvm.IRModule({"main": sch.mod["main"]}), target=TGT)


EXTREME_I32 = np.array([-2**31, -2**31 + 1, -2**30, -65537, -1, 0, 1, 2, 65535, 2**30, 2**31 - 2, 2**31 - 1])
FORM_CASES = [  # multipliers, shifts, in_zp, out_zp, qmin, qmax, out dtype, input range, expected form
    ([1223232256, 2**31 - 1, 2**30, 0], [41, 33, 62, 47], 0, 3, -128, 127, "int8", (-2**31, 2**31 - 1), "hi"),
    ([1200125568], [47], 0, 0, 0, 255, "uint8", (-2**31, 2**31 - 1), "hi"),       # the residual's last requant
    ([2**30], [14], 0, 0, -2**31, 2**31 - 1, "int32", (-128, 127), "shl"),        # int8 -> common scale, exact
    ([2072281600, 1], [13, 0], 0, 0, -2**31, 2**31 - 1, "int32", (0, 255), "split"),
    ([2**30], [30], -128, 5, -2**31, 2**31 - 1, "int32", (-128, 127), "shl"),
    ([2**30, 2**29 + 1], [14, 14], 0, 0, -2**31, 2**31 - 1, "int32", (-128, 127), "split"),
    ([2**22 + 12345], [8], 3, -7, -2**31, 2**31 - 1, "int32", (-128, 127), "split"),
    ([2**31 - 1], [30], -128, 5, -2**31, 2**31 - 1, "int32", (-128, 127), "i64"),  # d * (m mod 2^c) > 2^31
    ([1248092672], [13], 4, 0, -1000, 2**20, "int32", (0, 255), "split"),
    ([1248092672], [32], 0, 0, -128, 127, "int8", (-2**31, 2**31 - 1), "i64"),    # c = 32: only int64 is exact
    ([2**31 - 1], [20], 0, 0, -2**31, 2**31 - 1, "int32", (-2**31, 2**31 - 1), "i64"),
    ([1248092672], [40], 7, 0, -128, 127, "int8", (-2**31, 2**31 - 1), "i64"),    # x - in_zp leaves int32
]


@pytest.mark.parametrize("case", FORM_CASES, ids=lambda c: f"c{c[1][0]}_{c[6]}_{c[7][0]}_{c[8]}")
def test_requant_forms_bit_exact(case):
    """Every exact evaluation requant_form picks equals the int64 reference on the whole input range's
    extremes and on random values (per channel where several multipliers are given)."""
    ms, cs, in_zp, out_zp, qmin, qmax, dt, (lo, hi), want_form = case
    form = K.requant_form(ms, cs, in_zp, out_zp, (lo, hi), (qmin, qmax))
    assert form == want_form
    rng = np.random.default_rng(len(ms) + cs[0])
    xs = np.concatenate([np.clip(EXTREME_I32, lo, hi), [lo, hi, lo + 1, hi - 1],
                         rng.integers(lo, hi + 1, 16 * 64 - EXTREME_I32.size - 4)]).astype(np.int32)
    m = np.resize(np.asarray(ms, np.int64), 16)
    c = np.resize(np.asarray(cs, np.int64), 16)
    x = xs.reshape(-1, 16)
    want = K.requant_np(x, m, c, K.Requant(in_zp, out_zp, qmin, qmax, dt))
    for f in {form, "i64"}:
        rq = K.Requant(in_zp, out_zp, qmin, qmax, dt, f)
        lib = _requant_form_kernel(rq, x.shape[0])
        t = [tvm.runtime.tensor(a) for a in (x, K.pack_requant(m, c, 16, 16, (3, 1, 16), form=f))]
        t.append(tvm.runtime.empty(x.shape, dt))
        lib["main"](*t)
        np.testing.assert_array_equal(t[-1].numpy(), want, err_msg=f)


@pytest.mark.parametrize("m,k,n,adt,zp,rq", [(1, 256, 40, "uint8", 3, True), (6, 30, 32, "int8", -4, True),
                                              (16, 64, 48, "uint8", 0, False)])
def test_vnni_matmul_bit_exact(m, k, n, adt, zp, rq):
    rng = np.random.default_rng(m + k + n)
    r = K.Requant(2, -1, -128, 127, "int8") if rq else None
    spec = M.QMatmulSpec(m, k, n, adt, zp, r)
    lib, asm = _build(M.make_qmatmul(spec))
    assert "vpdpbusd" in asm
    a, w = _ints(rng, (m, k), adt), _ints(rng, (k, n), np.int8)
    b = rng.integers(-1000, 1000, n).astype(np.int32)
    mc = _mc(rng, n)
    args = [a, M.pack_weight(spec, w), M.pack_bias(spec, w, 0, b)] + ([M.pack_requant(*mc, spec)] if rq else [])
    t = [tvm.runtime.tensor(x) for x in args] + [tvm.runtime.empty(M.out_shape(spec), spec.out_dtype)]
    lib["main"](*t)
    np.testing.assert_array_equal(t[-1].numpy()[:, :n], M.qmatmul_reference(spec, a, w, 0, b, mc))


# -- the fast path on a quantized graph --------------------------------------------------------
def _qconv(g, x, co, k, stride, zp, rng, out_dt=DType.U8, out_zp=0, per_channel=True):
    ci = x.type.shape[1]
    w = g.const(rng.integers(-127, 128, (co, ci, k, k)).astype(np.int8), "w")
    b = g.const(rng.integers(-3000, 3000, co).astype(np.int32), "b")
    p = k // 2
    y = g.add1(q.conv, [x, w, b], strides=(stride, stride), pads=(p, p, p, p), dilations=(1, 1), groups=1,
               x_zero_point=zp)
    nm = co if per_channel else 1
    lo, hi = q.INT_RANGE[out_dt]
    return g.add1(q.requant, [y], multiplier=tuple(int(v) for v in rng.integers(2**30, 2**31 - 1, nm)),
                  shift=tuple(int(v) for v in rng.integers(38, 41, nm)), zero_point=out_zp, in_zero_point=0,
                  qmin=lo, qmax=hi, dtype=out_dt, axis=1)


def _to_i32(g, v, m, c, in_zp=0):
    return g.add1(q.requant, [v], multiplier=(m,), shift=(c,), zero_point=0, in_zero_point=in_zp,
                  qmin=-2**31, qmax=2**31 - 1, dtype=DType.I32, axis=1)


def test_fastpath_quantized_graph_bit_exact():
    rng = np.random.default_rng(0)
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 20, 20), DType.F32))
    xq = g.add1(q.quantize, [x], scale=0.02, zero_point=10, dtype=DType.U8, qmin=0, qmax=255)
    a = _qconv(g, xq, 32, 3, 1, 10, rng, out_zp=4)                      # stem: 3 channels
    b = _qconv(g, a, 32, 3, 1, 4, rng, DType.I8, out_zp=-3)            # uint8 -> int8
    c = g.add1(q.conv, [b, g.const(rng.integers(-127, 128, (32, 32, 1, 1)).astype(np.int8), "w3")],
               strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), groups=1, x_zero_point=-3)
    c32 = _to_i32(g, c, 1 << 30, 31)                                   # requant to the common scale
    r32 = _to_i32(g, a, 3 << 28, 29, in_zp=4)                          # the shortcut, rescaled
    s = g.add1(ew.add, [c32, r32])
    y = g.add1(q.requant, [s], multiplier=(1 << 30,), shift=(31,), zero_point=-5, in_zero_point=0,
               qmin=-128, qmax=127, dtype=DType.I8, axis=1)
    y = g.add1(nn.max_pool, [y], kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1))
    g.outputs = [g.add1(q.dequantize, [y], scale=(0.05,), zero_point=(-5,), axis=1)]
    kinds = [(grp.kind, len(grp.nodes)) for grp in kernels(g, TARGET)[1]]
    assert sorted(kinds) == [("pool", 1), ("qconv", 2), ("qconv", 2), ("qconv", 5), ("quantize", 1)]
    exe = build(g, TARGET)
    xs = rng.uniform(-1, 4, (1, 3, 20, 20)).astype(np.float32)
    got, want = exe.run([xs])[0], interp.run(g, xs)[0]
    np.testing.assert_array_equal(got, want)
    calls = re.findall(r"call_tir\(cls\.([a-z_0-9]+?)_\d+,", exe.source("relax"))
    convs = calls.count("qconv2d_vnni") + calls.count("qconv2d_amx")      # the 3x3 32 -> 32 on AMX where it is
    assert convs == 3 and "unpack_nchwc" in calls and calls.count("unpack_nchwc") == 1
    assert "quantize" in calls and "pack_nchwc" not in calls     # quantized straight into the stem's layout
    assert "vpdpbusd" in exe.source("asm")


def test_fastpath_qmatmul_and_int32_residual_operand():
    rng = np.random.default_rng(1)
    g = Graph()
    x = g.add_input("x", TensorType((2, 5, 24), DType.I8))
    w = g.const(rng.integers(-127, 128, (24, 20)).astype(np.int8), "w")
    y = g.add1(q.matmul, [x, w], a_zero_point=3, b_zero_point=0)
    g.outputs = [g.add1(q.requant, [y], multiplier=tuple(int(v) for v in rng.integers(2**30, 2**31 - 1, 20)),
                        shift=tuple(int(v) for v in rng.integers(36, 40, 20)), zero_point=1, in_zero_point=0,
                        qmin=-128, qmax=127, dtype=DType.I8, axis=-1)]
    (grp,) = kernels(g, TARGET)[1]
    assert grp.kind == "qmatmul" and len(grp.nodes) == 2
    xs = _ints(rng, (2, 5, 24), np.int8)
    np.testing.assert_array_equal(build(g, TARGET).run([xs])[0], interp.run(g, xs)[0])


def test_fastpath_dyadic_pass_residual_pattern():
    """What passes/dyadic.py emits for conv -> add: requant to the output grid, then each add operand
    requantized to int32 at a common scale, int32 add, requant: all one conv kernel."""
    rng = np.random.default_rng(2)
    g = Graph()
    x = g.add_input("x", TensorType((1, 16, 10, 10), DType.U8))
    a = _qconv(g, x, 16, 3, 1, 7, rng, DType.I8, out_zp=2, per_channel=True)
    a32 = _to_i32(g, a, 1 << 30, 30, in_zp=2)
    x32 = _to_i32(g, x, 5 << 27, 29, in_zp=7)
    s = g.add1(ew.add, [a32, x32])
    g.outputs = [g.add1(q.requant, [s], multiplier=(1 << 30,), shift=(32,), zero_point=3, in_zero_point=0,
                        qmin=3, qmax=255, dtype=DType.U8, axis=1)]
    (grp,) = kernels(g, TARGET)[1]
    assert grp.kind == "qconv" and len(grp.nodes) == 6 and grp.spec.rq1b is not None and grp.spec.rq2 is not None
    xs = _ints(rng, (1, 16, 10, 10), np.uint8)
    np.testing.assert_array_equal(build(g, TARGET).run([xs])[0], interp.run(g, xs)[0])


@pytest.mark.parametrize("ci,also_plain,dt", [(3, False, DType.U8), (16, False, DType.U8), (3, True, DType.U8),
                                             (3, False, DType.I8)])
def test_fastpath_quantize_writes_the_conv_layout(ci, also_plain, dt):
    """q.quantize of the float input is one kernel writing the (channel-padded) blocked layout its integer
    conv reads -- or plain NCHW when another reader (here a graph output) needs it -- bit-exact, ties and
    saturation included."""
    rng = np.random.default_rng(ci)
    g = Graph()
    x = g.add_input("x", TensorType((1, ci, 12, 12), DType.F32))
    zp = 7 if dt is DType.U8 else -3
    xq = g.add1(q.quantize, [x], scale=0.05, zero_point=zp, qmin=q.INT_RANGE[dt][0], qmax=q.INT_RANGE[dt][1],
                dtype=dt)
    y = _qconv(g, xq, 16, 3, 2, zp, rng)
    g.outputs = [y, xq] if also_plain else [y]
    groups = kernels(g, TARGET)[1]
    assert sorted(grp.kind for grp in groups) == ["qconv", "quantize"]
    xs = (rng.standard_normal((1, ci, 12, 12)) * 6).astype(np.float32)
    xs.reshape(-1)[:4] = [0.025, 0.075, -0.125, 1e9]          # ties to even, clamp
    got, want = build(g, TARGET).run([xs]), interp.run(g, xs)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("co,per_channel,requant", [(32, False, True), (32, True, True), (24, False, True),
                                                    (32, False, False)])
def test_fastpath_integer_global_average_pool(co, per_channel, requant):
    """The dyadic global average pool (cast to int32, sum over h and w, requant with the count folded in) of
    a conv's blocked output is one kernel on the blocked data (8-channel blocks for 24 channels)."""
    rng = np.random.default_rng(co + per_channel)
    g = Graph()
    x = g.add_input("x", TensorType((1, 16, 7, 7), DType.U8))
    y = _qconv(g, x, co, 3, 1, 0, rng, out_zp=9)
    sm = g.add1(rd.reduce_sum, [g.add1(ew.cast, [y], to=DType.I32)], axes=(2, 3), keepdims=True)
    if requant:
        k = co if per_channel else 1
        sm = g.add1(q.requant, [sm], multiplier=tuple(int(v) for v in rng.integers(2**30, 2**31 - 1, k)),
                    shift=tuple(int(v) for v in rng.integers(35, 38, k)), zero_point=3, in_zero_point=49 * 9,
                    qmin=0, qmax=255, dtype=DType.U8, axis=1)
    g.outputs = [g.add1(shape.reshape, [sm], shape=(1, co))]
    kinds = sorted(grp.kind for grp in kernels(g, TARGET)[1])
    assert kinds == ["int_global_sum", "qconv"]
    exe = build(g, TARGET)
    xs = _ints(rng, (1, 16, 7, 7), np.uint8)
    got, want = exe.run([xs])[0], interp.run(g, xs)[0]
    assert np.unique(want).size > 4
    np.testing.assert_array_equal(got, want)
    calls = re.findall(r"call_tir\(cls\.([a-z_0-9]+?)_\d+,", exe.source("relax"))
    assert "unpack_nchwc" not in calls


def test_fastpath_residual_requants_in_int32_forms():
    """ResNet-50's bottleneck tail as the dyadic pass writes it (per-channel conv requant to int8, the int8
    and the uint8 block input rescaled to the int32 common scale, requant to uint8): the int32 forms are
    chosen (hi for the int32 inputs, shl for the exact power-of-two rescale, split for the other 8-bit one) and
    the kernel stays bit-exact."""
    rng = np.random.default_rng(5)
    g = Graph()
    x = g.add_input("x", TensorType((1, 32, 7, 7), DType.U8))
    w = g.const(rng.integers(-127, 128, (32, 32, 1, 1)).astype(np.int8), "w")
    y = g.add1(q.conv, [x, w], strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), groups=1, x_zero_point=0)
    a = g.add1(q.requant, [y], multiplier=tuple(int(v) for v in rng.integers(2**30, 2**31 - 1, 32)),
               shift=tuple(int(v) for v in rng.integers(38, 42, 32)), zero_point=0, in_zero_point=0,
               qmin=-128, qmax=127, dtype=DType.I8, axis=1)
    s = g.add1(ew.add, [_to_i32(g, a, 1 << 30, 14), _to_i32(g, x, 2072281600, 13)])
    g.outputs = [g.add1(q.requant, [s], multiplier=(1200125568,), shift=(48,), zero_point=0, in_zero_point=0,
                        qmin=0, qmax=255, dtype=DType.U8, axis=1)]
    (grp,) = kernels(g, TARGET)[1]
    sp = grp.spec
    assert grp.kind == "qconv" and len(grp.nodes) == 6
    assert (sp.rq1.form, sp.rq1b.form, sp.rq2.form, sp.rq3.form) == ("hi", "shl", "split", "hi")
    xs = _ints(rng, (1, 32, 7, 7), np.uint8)
    np.testing.assert_array_equal(build(g, TARGET).run([xs])[0], interp.run(g, xs)[0])


def test_int8_residual_conv_writes_over_the_dying_residual():
    """A uint8 bottleneck: the stem's result is the residual of the closing conv and dies there, so that conv
    writes its uint8 result over it (call_tir_inplace); still bit-exact, run after run."""
    rng = np.random.default_rng(3)
    g = Graph()
    x = g.add_input("x", TensorType((1, 16, 10, 10), DType.U8))
    a = _qconv(g, x, 32, 3, 1, 7, rng, DType.U8, out_zp=2)              # the residual: a kernel's result
    b = _qconv(g, a, 32, 3, 1, 2, rng, DType.U8, out_zp=5)
    c = g.add1(q.conv, [b, g.const(rng.integers(-127, 128, (32, 32, 1, 1)).astype(np.int8), "w3")],
               strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), groups=1, x_zero_point=5)
    s = g.add1(ew.add, [_to_i32(g, c, 1 << 30, 31), _to_i32(g, a, 3 << 28, 29, in_zp=2)])
    y = g.add1(q.requant, [s], multiplier=(1 << 30,), shift=(31,), zero_point=0, in_zero_point=0,
               qmin=0, qmax=255, dtype=DType.U8, axis=1)
    g.outputs = [g.add1(q.dequantize, [y], scale=(0.05,), zero_point=(0,), axis=1)]
    fg, _ = kernels(g, TARGET)
    assert sorted(n.attrs["inplace"] for n in fg.nodes if n.op.name == "k.fused")[-1] >= 0
    exe = build(g, TARGET)
    assert exe.source("relax").count("call_tir_inplace") == 1
    xs = [_ints(rng, (1, 16, 10, 10), np.uint8) for _ in range(2)]
    for xv in xs + xs:
        np.testing.assert_array_equal(exe.run([xv])[0], interp.run(g, xv)[0])


def test_int8_conv_weights_are_the_kernels_packed_constants():
    """pack_weights stores each VNNI conv's weight in the kernel's own packed form: the IR constant is
    exactly what qconv2d.pack_weight makes for the kernel's spec (the emitter passes it as is)."""
    from compiler.backends.tvm_fused import integer, kernel_spec
    from compiler.ops import kernel, layout as lay
    rng = np.random.default_rng(4)
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 12, 12), DType.U8))
    a = _qconv(g, x, 32, 3, 1, 7, rng, DType.U8, out_zp=2)
    g.outputs = [g.add1(q.dequantize, [_qconv(g, a, 20, 1, 1, 2, rng, DType.U8)], scale=(0.05,),
                        zero_point=(0,), axis=1)]
    fg, _ = kernels(g, TARGET)
    convs = [n for n in fg.nodes if n.op is kernel.fused and n.attrs["kernel"] == "qconv"]
    assert len(convs) == 2
    for n in convs:
        w = kernel.anchor_of(n.attrs["body"]).inputs[1]
        assert w.producer.op is lay.unpack_weight and w.producer.attrs["form"] == "vnni"
        oihw, packed = integer.weight_of(w)
        np.testing.assert_array_equal(packed, K.pack_weight(kernel_spec(n), oihw))
    xs = _ints(rng, (1, 3, 12, 12), np.uint8)
    np.testing.assert_array_equal(build(g, TARGET).run([xs])[0], interp.run(g, xs)[0])


def test_int8_matmul_weights_are_the_kernels_packed_constants():
    """An int8 linear layer's weight is stored in the VNNI matmul's form: the IR constant is exactly what
    qmatmul.pack_weight makes for the kernel's spec, and the emitter passes it as is."""
    from compiler.backends.tvm_fused import integer, kernel_spec
    from compiler.backends.tvm_kernels import qmatmul as kqm
    from compiler.ops import kernel, layout as lay
    rng = np.random.default_rng(5)
    g = Graph()
    x = g.add_input("x", TensorType((3, 22), DType.U8))
    w = g.const(rng.integers(-127, 128, (22, 40)).astype(np.int8), "w")
    g.outputs = [g.add1(q.matmul, [x, w], a_zero_point=9, b_zero_point=0)]
    fg, _ = kernels(g, TARGET)
    (n,) = [n for n in fg.nodes if n.op is kernel.fused and n.attrs["kernel"] == "qmatmul"]
    wv = kernel.anchor_of(n.attrs["body"]).inputs[1]
    assert wv.producer.op is lay.unpack_weight and wv.producer.attrs["form"] == "vnni_matmul"
    plain, packed = integer.weight_of(wv)
    np.testing.assert_array_equal(packed, kqm.pack_weight(kernel_spec(n), plain))
    xs = _ints(rng, (3, 22), np.uint8)
    np.testing.assert_array_equal(build(g, TARGET).run([xs])[0], interp.run(g, xs)[0])


@pytest.mark.parametrize("c,stride,xdt,xzp", [(32, 1, DType.U8, 7), (24, 2, DType.I8, -3), (16, 1, DType.I8, 0)])
def test_depthwise_int8_conv_kernel_bit_exact(c, stride, xdt, xzp):
    """A depthwise q.conv + per-channel requant runs as one blocked int8 kernel (16- or 8-channel blocks),
    == compiler.interp."""
    rng = np.random.default_rng(c)
    g = Graph()
    x = g.add_input("x", TensorType((1, c, 13, 13), xdt))
    w = g.const(rng.integers(-127, 128, (c, 1, 3, 3)).astype(np.int8), "w")
    b = g.const(rng.integers(-5000, 5000, (c,)).astype(np.int32), "b")
    acc = g.add1(q.conv, [x, w, b], strides=(stride, stride), pads=(1, 1, 1, 1), dilations=(1, 1), groups=c,
                 x_zero_point=xzp)
    m, sh = _mc(rng, c)
    y = g.add1(q.requant, [acc], multiplier=tuple(int(v) for v in m), shift=tuple(int(v) for v in sh), zero_point=5,
               in_zero_point=0, qmin=0, qmax=255, dtype=DType.U8, axis=1)
    g.outputs = [g.add1(q.dequantize, [y], scale=(0.1,), zero_point=(5,), axis=1)]
    exe = build(g, TARGET)
    xs = _ints(rng, (1, c, 13, 13), xdt.numpy)
    np.testing.assert_array_equal(exe.run([xs])[0], interp.run(g, xs)[0])
    calls = re.findall(r"call_tir\(cls\.([a-z_0-9]+?)_\d+,", exe.source("relax"))
    assert calls.count("qdepthwise") == 1


@pytest.mark.parametrize("co,depthwise", [(32, False), (24, False), (32, True)])
def test_activation_table_fused_in_the_int8_conv_write_back(co, depthwise):
    """q.conv -> q.requant -> q.table (SiLU's lookup) is one kernel, blocked or plain output, == interp."""
    rng = np.random.default_rng(co)
    g = Graph()
    x = g.add_input("x", TensorType((1, 32, 9, 9), DType.U8))
    shape_w = (co, 1, 3, 3) if depthwise else (co, 32, 1, 1)
    acc = g.add1(q.conv, [x, g.const(rng.integers(-127, 128, shape_w).astype(np.int8), "w")], strides=(1, 1),
                 pads=(1, 1, 1, 1) if depthwise else (0, 0, 0, 0), dilations=(1, 1), groups=32 if depthwise else 1,
                 x_zero_point=3)
    m, sh = _mc(rng, co)
    y = g.add1(q.requant, [acc], multiplier=tuple(int(v) for v in m), shift=tuple(int(v) for v in sh), zero_point=0,
               in_zero_point=0, qmin=-128, qmax=127, dtype=DType.I8, axis=1)
    t = g.add1(q.table, [y, g.const(_ints(rng, (256,), np.uint8), "silu_table")])
    g.outputs = [g.add1(q.dequantize, [t], scale=(0.1,), zero_point=(0,), axis=1)]
    (grp,) = [k for k in kernels(g, TARGET)[1] if k.kind == "qconv"]
    assert [n.op.name for n in grp.nodes] == ["q.conv", "q.requant", "q.table"]
    exe = build(g, TARGET)
    xs = _ints(rng, (1, 32, 9, 9), np.uint8)
    np.testing.assert_array_equal(exe.run([xs])[0], interp.run(g, xs)[0])
    calls = re.findall(r"call_tir\(cls\.([a-z_0-9]+?)_\d+,", exe.source("relax"))
    assert "table" not in calls
    if "avx512vbmi" in cpu_features(TARGET.cpu):        # the lookup as register permutes, not lane by lane
        assert re.search(r"\tvperm[it]2b\t", exe.source("asm"))


def _fconv(g, x, co, rng, k=1, groups=1):
    from compiler.ops import linalg
    ci = x.type.shape[1]
    w = g.const((rng.standard_normal((co, ci // groups, k, k)) / np.sqrt(ci // groups * k * k)).astype(np.float32))
    return g.add1(linalg.conv, [x, w, g.const((0.1 * rng.standard_normal(co)).astype(np.float32))],
                  strides=(1, 1), pads=(k // 2,) * 4, dilations=(1, 1), groups=groups)


def test_mobilenet_block_with_8_channel_blocks_stays_blocked_and_bit_exact():
    """MobileNetV3's 24 -> 72 -> 24 (+ residual) -> 40 inverted residual with a squeeze-excite gate, integer-only:
    the 24/72/40-channel activations (multiples of 8, not 16) stay in 8-channel blocks from the input's quantize
    to the last conv (no layout.pack / unpack between kernels; the residual and the global sum fused), and the
    TVM build is bit-exact with the interpreter."""
    import compiler
    from compiler.api import final_ir
    from compiler.ops import kernel
    from compiler.ops import layout as lay
    from passes.quantize import QuantConfig
    from passes.quantize_pipeline import quantize_graph
    rng = np.random.default_rng(7)
    g = Graph()
    x = g.add_input("x", TensorType((1, 24, 10, 10), DType.F32))
    e = g.add1(ew.hard_swish, [_fconv(g, x, 72, rng)])
    d = g.add1(ew.relu, [_fconv(g, e, 72, rng, k=3, groups=72)])
    s = g.add1(rd.reduce_mean, [d], axes=(2, 3), keepdims=True)
    gate = g.add1(ew.hard_sigmoid, [_fconv(g, g.add1(ew.relu, [_fconv(g, s, 24, rng)]), 72, rng)], alpha=1 / 6,
                  beta=0.5)
    r = g.add1(ew.add, [_fconv(g, g.add1(ew.mul, [d, gate]), 24, rng), x])
    g.outputs = [_fconv(g, r, 40, rng)]
    calib = [rng.standard_normal((1, 24, 10, 10)).astype(np.float32) for _ in range(4)]
    ig, _ = quantize_graph(g, calib, QuantConfig(integer_only=True))
    fg, _ = final_ir(ig, "llvm -num-threads=1")
    convs = [i for i, n in enumerate(fg.nodes) if n.op is kernel.fused and n.attrs["kernel"] == "qconv"]
    assert len(convs) == 6
    between = [n.op.name for n in fg.nodes[convs[0]:convs[-1]] if n.op in (lay.pack, lay.unpack)]
    assert between == []
    blocks = {n.outputs[0].type.shape[4] for n in fg.nodes[convs[0]:convs[-1] + 1] if n.outputs[0].type.rank == 5}
    assert blocks == {8}
    kinds = [n.attrs["kernel"] for n in fg.nodes if n.op is kernel.fused]
    assert kinds.count("reduce") == 1 and sum(n.op is ew.add for n in fg.nodes) == 0   # the residual is fused
    xs = rng.standard_normal((1, 24, 10, 10)).astype(np.float32)
    want = interp.run(ig, xs)[0]
    assert np.unique(want).size > 16
    np.testing.assert_array_equal(compiler.compile(ig, target="llvm -num-threads=1").run(xs)[0], want)


@pytest.mark.parametrize("co,tile,lanes", [(32, (1, 16), 64), (32, (2, 2), 32), (32, (1, 3), 16),
                                           (24, (1, 8), 64), (24, (1, 6), 16), (24, (1, 3), 8)])
def test_the_conv_looks_up_its_table_a_register_at_a_time(co, tile, lanes):
    """A blocked conv with a 256-entry table: the requant is its own stage (`pre_table`) and the lookup runs over
    the tile row's pixels 64 lanes at a time where they divide it (32, 16, 8 otherwise), 16- and 8-channel blocks
    (24 channels); equal to the reference followed by the lookup."""
    spec = K.QConvSpec(1, 32, 6, 48, co, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), "uint8", 3, 16,
                       K.Requant(0, 0, -128, 127, "int8"), table="uint8")
    func = K.make_qconv2d(spec, tile)
    assert 'T.sblock("pre_table")' in func.script() and f"T.vectorized({lanes})" in func.script()
    lib, asm = _build(func)
    rng = np.random.default_rng(lanes)
    x, w = _ints(rng, (1, 32, 6, 48), np.uint8), _ints(rng, (co, 32, 3, 3), np.int8)
    b = rng.integers(-20000, 20000, co).astype(np.int32)
    mc, table = _mc(rng, co), _ints(rng, (256,), np.uint8)
    args = [K.pack_data(spec, x), K.pack_weight(spec, w), K.pack_bias(spec, w, b),
            K.pack_requant(*mc, co, spec.cop, form=spec.rq1.form), table]
    dev = tvm.cpu()
    targs = [tvm.runtime.tensor(a, dev) for a in args] + [tvm.runtime.empty(K.out_shape(spec), "uint8", dev)]
    lib["main"](*targs)
    want = table[K.qconv2d_reference(spec, x, w, b, mc).astype(np.int32) + 128]
    np.testing.assert_array_equal(K.unpack_out(spec, targs[-1].numpy()), want)
