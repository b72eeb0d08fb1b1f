"""The convs on AMX tiles: the 3x3 conv on 8-bit data (tvm_kernels/qconv2d_amx.py) and the 1x1 conv on int16 data
(qconv1x1_amx.py, two byte planes): which convs they take, their weight forms, their tile picks; bit-exact with
the reference through every epilogue (requant, residual, staged table), strides 1 and 2, rows and images that are
and are not multiples of 16 pixels; built for an AMX CPU anywhere, run where the host has AMX; an integer-only
compile that puts them in its final IR."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")

import tvm  # noqa: E402

from compiler import host, layouts  # noqa: E402
from compiler.backends.tvm_kernels import amx, qconv1x1_amx as A1, qconv2d_amx as A, qconv2d as K  # noqa: E402

HAS_AMX = "amx_int8" in host.host_cpu_flags() and host.request_amx()
SPR = tvm.target.Target({"kind": "llvm", "mcpu": "sapphirerapids", "num-cores": 1})
needs_amx = pytest.mark.skipif(not HAS_AMX, reason="needs a CPU with AMX-INT8")


def _spec(ci, co, h, w, k=3, s=1, xdt="uint8", zp=3, **kw):
    return K.QConvSpec(1, ci, h, w, co, k, k, (s, s), (k // 2,) * 4, (1, 1), xdt, zp, 16, amx=True, **kw)


def _ints(rng, shape, dt):
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max + 1, shape).astype(dt)


def _spec1(ci, co, h, w, **kw):
    return K.QConvSpec(1, ci, h, w, co, 1, 1, x_dtype="int16", x_zp=-9, in_block=16, amx=True, **kw)


def test_the_amx_conv_takes_3x3_convs_on_16_channel_blocks_of_8_bit_data():
    assert A.fits(_spec(64, 64, 8, 8)) and A.fits(_spec(32, 80, 8, 8, s=2, xdt="int8"))
    assert A.fits(K.QConvSpec(1, 32, 8, 8, 32, 3, 4, amx=False, in_block=16))      # 4 taps wide
    for bad in [dict(ci=16), dict(co=24), dict(k=1), dict(k=5)]:                    # 1 input block, 8-ch output,
        args = dict(ci=64, co=64, h=8, w=8) | bad                                    # 1x1 and 5x5 kernels
        with pytest.raises(ValueError, match="AMX conv"):
            _spec(**args)
    assert A.fits(_spec(16, 32, 8, 8, xdt="int16")) and A.pick_tile16(2) == (1, 2)    # int16: 2 byte planes
    assert A.default_tile(_spec(16, 48, 8, 8, xdt="int16"), 8) == (1, 1)


def test_the_amx_1x1_conv_takes_int16_data_with_a_reduction_long_enough():
    assert A1.fits(_spec1(64, 64, 40, 40)) and A1.fits(_spec1(672, 112, 14, 14))     # 7 blocks: a long reduction
    spec = _spec1(64, 64, 5, 7)
    assert spec.xz == -9 + 32768 and K.amx_module(spec) is A1                       # the bytes of x + 32768
    for bad in [dict(ci=48), dict(co=40), dict(ci=80, co=240)]:     # too short; 8-channel output; 15 blocks, 80 ch
        with pytest.raises(ValueError, match="AMX conv"):
            _spec1(**(dict(ci=64, co=64, h=4, w=4) | bad))
    with pytest.raises(ValueError, match="AMX conv"):
        K.QConvSpec(1, 64, 4, 4, 64, 1, 1, x_dtype="int8", in_block=16, amx=True)       # 8-bit 1x1: VNNI
    rng = np.random.default_rng(1)
    w = _ints(rng, (40, 70, 1, 1), np.int8)
    p = layouts.pack_rows_conv_weight(w)
    assert p.shape == (3, 32, 16, 4) and p[1, 16, 5, 2] == w[21, 66, 0, 0] and p[1, 17, 5, 2] == 0 == p[2, 0, 9, 0]
    np.testing.assert_array_equal(layouts.unpack_conv_weight(p, "vnni_rows", (40, 70)), w)


def test_the_amx_weight_form_holds_each_tap_where_the_tile_row_reads_it():
    rng = np.random.default_rng(0)
    w = _ints(rng, (40, 20, 3, 3), np.int8)
    p = layouts.pack_amx_conv_weight(w)
    assert p.shape == (3, 2, 3, 16, 16, 4)
    for o, cb, r, q, j, t in [(0, 0, 0, 0, 0, 0), (2, 1, 2, 9, 5, 3), (1, 0, 1, 15, 15, 3), (0, 1, 0, 2, 7, 1)]:
        k, co, ci = 4 * q + t, 16 * o + j, 16 * cb + (4 * q + t) % 16
        want = w[co, ci, r, k // 16] if co < 40 and ci < 20 and k // 16 < 3 else 0
        assert p[o, cb, r, q, j, t] == want
    np.testing.assert_array_equal(layouts.unpack_conv_weight(p, "vnni_amx", (40, 20, 3)), w)


def test_the_tile_pick_fits_the_registers_and_the_row():
    assert A.pick_tile(40, 4) == (1, 2)        # 48-pixel row: 3 tiles; 4 blocks: 1 A + 2 B tiles per step
    assert A.pick_tile(40, 5) == (3, 1)        # 5 blocks: one B tile, the row's 3 A tiles
    assert A.pick_tile(20, 4) == (2, 2)
    for ow, n16 in [(40, 4), (40, 5), (80, 2), (10, 16), (160, 6), (7, 3)]:
        rm, rn = A.pick_tile(ow, n16)
        assert amx.block_fits(rm, rn) and (A.acc_width(ow) // 16) % rm == 0 and n16 % rn == 0


def test_the_amx_conv_builds_for_an_amx_cpu_on_any_host():
    func = K.make_qconv2d(_spec(64, 64, 10, 40))
    assert func.attrs["tvm_kernels.schedule"] == "amx"
    asm = tvm.compile(func, target=SPR).mod.inspect_source("asm")
    assert "ldtilecfg" in asm and "tdpbusd" in asm and "tilerelease" in asm
    assert "vpdpbusd" not in asm                  # the whole reduction on the tiles


CASES_1X1 = [  # ci, co, h, w, epilogue, tile
    (64, 64, 5, 7, "i16", None),          # 35 pixels: the last 16-pixel tile has 3
    (112, 96, 4, 4, "int32", (1,)),
    (272, 48, 3, 5, "residual", None),    # 3 output blocks, one per call; the reduction padded to 320
    (64, 32, 8, 8, "table", (2,)),
]


@needs_amx
@pytest.mark.parametrize("case", CASES_1X1, ids=lambda c: f"{c[0]}x{c[1]}_{c[2]}x{c[3]}_{c[4]}")
def test_the_amx_1x1_conv_on_int16_is_bit_exact(case):
    """Data over the whole int16 range (both bytes of x + 32768 matter), through the int16 epilogues."""
    ci, co, h, w, epi, tile = case
    rng = np.random.default_rng(ci + co)
    rq1 = rq2 = rq3 = res_dt = table_dt = None
    if epi == "i16":
        rq1 = K.Requant(3, -5, -32768, 32767, "int16")
    elif epi == "table":
        rq1, table_dt = K.Requant(0, 0, -128, 127, "int8"), "int16"
    elif epi == "residual":
        rq1, res_dt = K.Requant(0, 0, -2**31, 2**31 - 1, "int32"), "int16"
        rq2, rq3 = K.Requant(0, 0, -2**31, 2**31 - 1, "int32"), K.Requant(0, 1, -32768, 32767, "int16")
    spec = _spec1(ci, co, h, w, rq1=rq1, residual_dtype=res_dt, rq2=rq2, rq3=rq3, table=table_dt)
    func = K.make_qconv2d(spec, tile)
    assert func.attrs["tvm_kernels.schedule"] == "amx"
    lib = tvm.compile(func, target=SPR)
    x, wt = _ints(rng, (1, ci, h, w), np.int16), _ints(rng, (co, ci, 1, 1), np.int8)
    b = rng.integers(-20000, 20000, co).astype(np.int32)
    mcs = [(rng.integers(2**29, 2**31 - 1, co), rng.integers(34, 40, co)) for _ in range(2)]
    args = [K.pack_data(spec, x), K.pack_weight(spec, wt), K.pack_bias(spec, wt, b)]
    if rq1 is not None:
        args.append(K.pack_requant(*mcs[0], co, spec.cop, form=rq1.form))
    res = table = None
    if res_dt is not None:
        res = _ints(rng, (1, co, h, w), np.int16)
        args += [np.ascontiguousarray(res.reshape(1, co // 16, 16, h, w).transpose(0, 1, 3, 4, 2)),
                 K.pack_requant(*mcs[1], co, spec.cop, form=rq2.form), K.pack_requant(np.full(co, 2**30),
                                                                                        np.full(co, 31), co, spec.cop)]
    if table_dt is not None:
        table = _ints(rng, (256,), np.int16)
        args.append(table)
    dev = tvm.cpu()
    targs = [tvm.runtime.tensor(a) for a in args] + [tvm.runtime.empty(K.out_shape(spec), spec.out_dtype, dev)]
    lib["main"](*targs)
    want = K.qconv2d_reference(spec, x, wt, b, mcs[0], res, mcs[1], (np.full(co, 2**30), np.full(co, 31)))
    if table is not None:
        want = table[want.astype(np.int32) + 128]
    np.testing.assert_array_equal(K.unpack_out(spec, targs[-1].numpy()), want)


CASES = [  # ci, co, h, w, stride, x dtype, epilogue, tile
    (64, 64, 6, 40, 1, "uint8", "int32", None),          # 40 pixels: the last tile has 8 valid
    (32, 80, 5, 33, 1, "int8", "i8", None),              # 80 channels: rn 1; 33 pixels
    (32, 64, 9, 64, 2, "uint8", "u8", (2, 2)),           # stride 2: tile rows 32 bytes apart
    (48, 32, 4, 16, 1, "int8", "residual", (1, 2)),
    (32, 32, 5, 20, 1, "uint8", "table", (1, 1)),
    (64, 48, 3, 12, 2, "int8", "table", (1, 3)),
    (16, 32, 6, 40, 1, "int16", "int32", None),         # int16: one channel block, two byte planes
    (32, 48, 5, 33, 2, "int16", "table", None),         # 3 output blocks: one per call; stride 2
    (32, 64, 4, 20, 1, "int16", "residual", (1, 2)),
]


@needs_amx
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}_{c[2]}x{c[3]}s{c[4]}_{c[5]}_{c[6]}")
def test_the_amx_conv_is_bit_exact(case):
    ci, co, h, w, s, xdt, epi, tile = case
    rng = np.random.default_rng(ci + co + w)
    rq1 = rq2 = rq3 = res_dt = table_dt = None
    if epi == "u8":
        rq1 = K.Requant(0, 3, 0, 255, "uint8")
    elif epi in ("i8", "table"):
        rq1, table_dt = K.Requant(5, -2, -128, 120, "int8"), ("uint8" if epi == "table" else None)
    elif epi == "residual":
        rq1, res_dt = K.Requant(0, 0, -2**31, 2**31 - 1, "int32"), "uint8"
        rq2, rq3 = K.Requant(4, 0, -2**31, 2**31 - 1, "int32"), K.Requant(0, 1, 0, 255, "uint8")
    spec = _spec(ci, co, h, w, s=s, xdt=xdt, zp=5 if xdt == "uint8" else -3, rq1=rq1, residual_dtype=res_dt,
                 rq2=rq2, rq3=rq3, table=table_dt)
    lib = tvm.compile(K.make_qconv2d(spec, tile), target=SPR)
    x, wt = _ints(rng, (1, ci, h, w), xdt), _ints(rng, (co, ci, 3, 3), np.int8)
    b = rng.integers(-20000, 20000, co).astype(np.int32)
    mcs = [(rng.integers(2**29, 2**31 - 1, co), rng.integers(34, 40, co)) for _ in range(3)]
    mcs[2] = (np.full(co, 2**30), np.full(co, 31))
    args = [K.pack_data(spec, x), K.pack_weight(spec, wt), K.pack_bias(spec, wt, b)]
    if rq1 is not None:
        args.append(K.pack_requant(*mcs[0], co, spec.cop, form=rq1.form))
    oh, ow = K.output_hw(spec)
    res = table = None
    if res_dt is not None:
        res = _ints(rng, (1, co, oh, ow), np.uint8)
        args += [np.ascontiguousarray(res.reshape(1, co // 16, 16, oh, ow).transpose(0, 1, 3, 4, 2)),
                 K.pack_requant(*mcs[1], co, spec.cop, form=rq2.form), K.pack_requant(*mcs[2], co, spec.cop)]
    if table_dt is not None:
        table = _ints(rng, (256,), np.uint8)
        args.append(table)
    dev = tvm.cpu()
    targs = [tvm.runtime.tensor(a, dev) for a in args] + [tvm.runtime.empty(K.out_shape(spec), spec.out_dtype, dev)]
    lib["main"](*targs)
    want = K.qconv2d_reference(spec, x, wt, b, mcs[0], res, mcs[1], mcs[2])
    if table is not None:
        want = table[want.astype(np.int32) + 128]
    np.testing.assert_array_equal(K.unpack_out(spec, targs[-1].numpy()), want)


def _cnn():
    """A small detector-style CNN: a 3-channel stem, 3x3 convs with SiLU (sigmoid x mul: a table after
    quantization) on 16/32/48/64 channels, stride 2 and a residual add."""
    from compiler.ir import Graph
    from compiler.ops import elementwise as ew, linalg
    from compiler.types import DType, TensorType
    rng = np.random.default_rng(3)
    g = Graph()

    def conv(x, co, s=1, silu=True):
        ci = x.type.shape[1]
        w = g.const((rng.standard_normal((co, ci, 3, 3)) / np.sqrt(9 * ci)).astype(np.float32))
        y = g.add1(linalg.conv, [x, w, g.const((0.1 * rng.standard_normal(co)).astype(np.float32))],
                   strides=(s, s), pads=(1, 1, 1, 1), dilations=(1, 1), groups=1)
        return g.add1(ew.mul, [y, g.add1(ew.sigmoid, [y])]) if silu else y
    x = g.add_input("x", TensorType((1, 3, 24, 72), DType.F32))
    h = conv(conv(x, 16, 2), 32)           # 3 and 16 input channels: the VNNI kernel
    h = conv(h, 32)                        # 32 -> 32 at 12 x 36: 36 pixels, a 48-pixel accumulator row
    h = g.add1(ew.add, [conv(h, 32), h])
    h = conv(h, 64, 2)                     # stride 2
    g.outputs = [conv(h, 48, silu=False)]  # 3 output blocks
    return g, [[rng.standard_normal((1, 3, 24, 72)).astype(np.float32)] for _ in range(4)]


def test_the_final_ir_of_an_amx_target_packs_each_3x3_convs_weight_for_the_tiles():
    """The AMX decision is the target's and shows in the IR: on sapphirerapids the 3x3 convs with 32 or more
    input channels read the vnni_amx form and carry the AMX block as their tile; on a VNNI-only CPU every conv
    reads the vnni form."""
    from compiler.api import final_ir
    from compiler.backends.tvm_fused import kernel_spec
    from compiler.ops import layout as lay
    from compiler.target import Target
    g, calib = _cnn()
    for cpu in ("sapphirerapids", "icelake-server"):
        target = Target.parse(f"llvm -mcpu={cpu} -num-threads=1")
        fg, _ = final_ir(g, target, quantize="int8", calibration=calib, integer_only=True)
        nodes = [n for n in fg.nodes if n.op.name == "k.fused" and n.attrs["kernel"] == "qconv"]
        forms = [next(b.attrs["form"] for b in n.attrs["body"].nodes if b.op is lay.unpack_weight) for n in nodes]
        specs = [kernel_spec(n, target) for n in nodes]
        if cpu == "sapphirerapids":
            assert forms == ["vnni", "vnni", "vnni_amx", "vnni_amx", "vnni_amx", "vnni_amx"]
            assert [s.amx for s in specs] == [False, False, True, True, True, True]
            assert [tuple(n.attrs["tile"]) for n in nodes[2:]] == \
                [A.pick_tile(K.output_hw(s)[1], s.cop // 16) for s in specs[2:]]
        else:
            assert set(forms) == {"vnni"} and not any(s.amx for s in specs)


@needs_amx
def test_an_integer_only_cnn_compiled_for_this_amx_host_runs_its_final_ir_bit_exact(monkeypatch):
    """compile(quantize="int8", integer_only=True) for the host: four convs take the AMX kernel (residual, SiLU
    tables, stride 2 among them) and the executable's output equals the interpreter's on the final IR."""
    import compiler
    from compiler import interp
    seen = []
    make = K.make_qconv2d

    def spy(spec, tile=None):
        seen.append(spec.amx)
        return make(spec, tile)
    g, calib = _cnn()
    monkeypatch.setattr(K, "make_qconv2d", spy)
    cm = compiler.compile(g, "llvm -num-threads=1", quantize="int8", calibration=calib, integer_only=True)
    assert sorted(seen) == [False, False, True, True, True, True]
    x = calib[1][0]
    want = interp.run(cm.graph, x)[0]
    assert np.unique(want).size > 32
    np.testing.assert_array_equal(cm.run(x)[0], want)


def _pointwise_net():
    """Convs at 16 bits: 1x1 64 -> 128 -> 64 with a residual and a 3x3 (AMX), then a 1x1 64 -> 48 (VNNI: 3 output
    blocks, a short reduction)."""
    from compiler.ir import Graph
    from compiler.ops import elementwise as ew, linalg
    from compiler.types import DType, TensorType
    rng = np.random.default_rng(5)
    g = Graph()

    def conv(x, co, k=1):
        ci = x.type.shape[1]
        w = g.const((rng.standard_normal((co, ci, k, k)) / np.sqrt(k * k * ci)).astype(np.float32))
        return g.add1(linalg.conv, [x, w, g.const((0.1 * rng.standard_normal(co)).astype(np.float32))],
                      strides=(1, 1), pads=(k // 2,) * 4, dilations=(1, 1), groups=1)
    x = g.add_input("x", TensorType((1, 64, 10, 12), DType.F32))
    h = g.add1(ew.add, [conv(g.add1(ew.relu, [conv(x, 128)]), 64), x])
    g.outputs = [conv(g.add1(ew.relu, [conv(h, 64, 3)]), 48)]
    return g, [[rng.standard_normal((1, 64, 10, 12)).astype(np.float32)] for _ in range(4)]


def test_the_final_ir_of_an_amx_target_packs_int16_convs_for_the_tiles():
    from compiler.api import final_ir
    from compiler.backends.tvm_fused import kernel_spec
    from compiler.ops import layout as lay
    from compiler.target import Target
    g, calib = _pointwise_net()
    target = Target.parse("llvm -mcpu=sapphirerapids -num-threads=1")
    fg, _ = final_ir(g, target, quantize="int8", calibration=calib, integer_only=True, keep_16bit=["all"])
    nodes = [n for n in fg.nodes if n.op.name == "k.fused" and n.attrs["kernel"] == "qconv"]
    forms = [next((b.attrs["form"] for b in n.attrs["body"].nodes if b.op is lay.unpack_weight), None)
             for n in nodes]
    specs = [kernel_spec(n, target) for n in nodes]
    assert [s.amx for s in specs] == [True, True, True, False]
    assert forms[:3] == ["vnni_rows", "vnni_rows", "vnni_amx"]
    assert [tuple(n.attrs["tile"]) for n in nodes[:2]] == [(2,), (2,)]


@needs_amx
def test_an_int16_net_compiled_for_this_amx_host_runs_its_final_ir_bit_exact():
    import compiler
    from compiler import interp
    g, calib = _pointwise_net()
    cm = compiler.compile(g, "llvm -num-threads=1", quantize="int8", calibration=calib, integer_only=True,
                          keep_16bit=["all"])
    assert "qconv2d_amx" in cm.executable.source("relax")
    x = calib[2][0]
    want = interp.run(cm.graph, x)[0]
    assert np.unique(want).size > 32
    np.testing.assert_array_equal(cm.run(x)[0], want)
