"""The int8 matmul on Intel AMX tiles: same operands as the VNNI kernel, bit-exact with the reference; built for any
AMX CPU anywhere, run where the host has AMX; a host LLVM misnames gets its AMX CPU back."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")

import tvm  # noqa: E402

from compiler import host  # noqa: E402
from compiler.backends.tvm_kernels import amx  # noqa: E402
from compiler.backends.tvm_kernels import qmatmul as QM  # noqa: E402
from compiler.backends.tvm_kernels.qconv2d import Requant  # noqa: E402

HAS_AMX = "amx_int8" in host.host_cpu_flags() and host.request_amx()
SPR = tvm.target.Target({"kind": "llvm", "mcpu": "sapphirerapids", "num-cores": 1})


def _operands(m, k, n, a_dtype, a_zp, rq, seed=0):
    rng = np.random.default_rng(seed)
    lo, hi = (-128, 128) if a_dtype == "int8" else (0, 256)
    a = rng.integers(lo, hi, (m, k)).astype(a_dtype)
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    b = rng.integers(-5000, 5000, n).astype(np.int32)
    mc = (np.full(n, 1 << 30, np.int64), np.full(n, 44, np.int64)) if rq else None
    return a, w, b, mc


def _args(spec, a, w, b, mc):
    args = [a, QM.pack_weight(spec, w), QM.pack_bias(spec, w, 0, b)]
    if spec.rq is not None:
        args.append(QM.pack_requant(*mc, spec))
    return args + [np.zeros(QM.out_shape(spec), spec.out_dtype)]


def test_amx_tile_pick_fits_the_eight_tile_registers_and_the_shape():
    for m, n16 in [(16, 2), (128, 24), (48, 3), (32, 96), (256, 6), (48, 9)]:
        rm, rn = QM.pick_amx_tile(m, n16)
        assert amx.block_fits(rm, rn) and (m // 16) % rm == 0 and n16 % rn == 0
    assert QM.pick_amx_tile(128, 24) == (2, 2)            # 4 accumulators, 2 A and 2 B tiles
    assert not amx.block_fits(1, 4) and amx.block_fits(1, 3)
    assert QM.amx_fits(128, 384, 384) and QM.amx_fits(196, 96, 384) and QM.amx_fits(20, 40, 32)
    assert not QM.amx_fits(1, 384, 384) and not QM.amx_fits(128, 16, 384)          # a row, a short reduction
    assert not QM.amx_fits(128, 384, 16) and not QM.amx_fits(128, 384, 80) and QM.amx_fits(128, 384, 48)
    spec = QM.QMatmulSpec(196, 96, 384, amx=True)
    assert (spec.mp, spec.kp) == (208, 128) and (QM.QMatmulSpec(196, 96, 384).mp, QM.QMatmulSpec(196, 96, 384).kp) == (196, 96)


def test_amx_kernel_builds_for_an_amx_cpu_on_any_host():
    spec = QM.QMatmulSpec(32, 128, 32, "uint8", 0, None, amx=True)
    f = QM.make_qmatmul(spec)
    assert f.attrs["tvm_kernels.schedule"] == "amx"
    lib = tvm.compile(f, target=SPR)
    asm = lib.mod.inspect_source("asm") if hasattr(lib, "mod") else lib.inspect_source("asm")
    assert "ldtilecfg" in asm and "tdpbusd" in asm and "tilerelease" in asm
    assert "vpdpbusd" not in asm                          # the reduction is all on the tiles


@pytest.mark.skipif(not HAS_AMX, reason="needs a CPU with AMX-INT8 (cpuinfo amx_int8)")
@pytest.mark.parametrize("m,k,n,a_dtype,a_zp,rq", [
    (16, 64, 32, "uint8", 3, False),
    (128, 384, 40, "int8", 0, True),          # n padded to 48: three column blocks, one AMX column per block
    (64, 128, 96, "int8", -5, True),
    (32, 1536, 64, "uint8", 128, True),
    (48, 64, 96, "int8", 0, True),            # 3 row tiles, 6 column blocks: blocks of 1 x 3 tiles
    (196, 96, 384, "int8", 0, True),          # ConvNeXt's 14 x 14 rows: padded to 208; k padded to 128
    (20, 40, 32, "uint8", 7, False),          # both padded: 32 rows, a 64-deep reduction
])
def test_amx_matmul_is_bit_exact_with_the_reference_and_the_vnni_kernel(m, k, n, a_dtype, a_zp, rq):
    """Both kernels, the requant in the int64 form and in the int32 "hi" form the compiler picks for it."""
    from compiler.backends.tvm_kernels.requant import requant_form
    a, w, b, mc = _operands(m, k, n, a_dtype, a_zp, rq)
    forms = ("i64", requant_form(*mc, 0, 2, (-2**31, 2**31 - 1), (-128, 127))) if rq else (None,)
    assert forms[-1] in ("hi", None)
    for form in forms:
        requant = Requant(0, 2, -128, 127, "int8", form) if rq else None
        outs = {}
        for use in (True, False):
            spec = QM.QMatmulSpec(m, k, n, a_dtype, a_zp, requant, amx=use)
            args = [tvm.runtime.tensor(x) for x in _args(spec, a, w, b, mc)]
            tvm.compile(QM.make_qmatmul(spec), target=SPR)(*args)
            outs[use] = args[-1].numpy()[:, :n]
        ref = QM.qmatmul_reference(QM.QMatmulSpec(m, k, n, a_dtype, a_zp, requant), a, w, 0, b, mc)
        np.testing.assert_array_equal(outs[True], ref)
        np.testing.assert_array_equal(outs[True], outs[False])


def test_a_host_llvm_names_without_its_amx_gets_an_amx_cpu(monkeypatch):
    spr = host.cpu_features("sapphirerapids")
    if "amx-int8" not in spr:
        pytest.skip("this LLVM does not know sapphirerapids")
    flags = {host.ISA_FLAGS[f] for f in spr if f in host.ISA_FLAGS}
    monkeypatch.setattr(host, "host_cpu_flags", lambda: frozenset(flags))
    assert host.with_host_matrix_units("rocketlake") == "sapphirerapids"
    assert host.with_host_matrix_units("sapphirerapids") == "sapphirerapids"
    monkeypatch.setattr(host, "host_cpu_flags", lambda: frozenset(flags - {"amx_int8", "amx_tile"}))
    assert host.with_host_matrix_units("rocketlake") == "rocketlake"     # no AMX here: LLVM's name stands
    monkeypatch.setattr(host, "host_cpu_flags", lambda: frozenset(flags - {"avx512_fp16"}))
    assert host.with_host_matrix_units("rocketlake") == "rocketlake"     # an extension the AMX CPUs have is missing


def _mlp(rows: int):
    from compiler.ir import Graph
    from compiler.ops import elementwise as ew, linalg
    from compiler.types import DType, TensorType
    rng = np.random.default_rng(0)
    g = Graph()
    h = g.add_input("x", TensorType((rows, 96), DType.F32))
    for k, n in ((96, 128), (128, 48)):
        h = g.add1(linalg.matmul, [h, g.const(rng.normal(0, 0.2, (k, n)).astype(np.float32))])
        h = g.add1(ew.add, [h, g.const(rng.normal(0, 0.1, n).astype(np.float32))])
        if n != 48:
            h = g.add1(ew.relu, [h])
    g.outputs = [h]
    return g, [[rng.normal(0, 1, (rows, 96)).astype(np.float32)] for _ in range(4)]


@pytest.mark.skipif(not HAS_AMX, reason="needs a CPU with AMX-INT8 (cpuinfo amx_int8)")
def test_an_integer_only_mlp_compiled_for_this_amx_host_runs_its_final_ir_bit_exact(monkeypatch):
    """compile(quantize="int8", integer_only=True) for the host: both linear layers (50 rows: padded to 64; k = 96
    padded to 128) take the AMX kernel, and the executable's output equals the interpreter's on the final IR."""
    import compiler
    from compiler import interp
    from compiler.backends.tvm_kernels import qmatmul as kqm
    seen = []
    make = kqm.make_qmatmul

    def spy(spec, tile=None):
        seen.append(spec.amx)
        return make(spec, tile)
    g, calib = _mlp(50)
    monkeypatch.setattr(kqm, "make_qmatmul", spy)
    cm = compiler.compile(g, "llvm -num-threads=1", quantize="int8", calibration=calib, integer_only=True)
    assert host.cpu_features(cm.target.cpu) >= {"amx-int8", "amx-tile"} and seen == [True, True]
    x = calib[1][0]
    np.testing.assert_array_equal(cm.run(x)[0], interp.run(cm.graph, x)[0])


@pytest.mark.skipif(not HAS_AMX, reason="needs a CPU with AMX-INT8 (cpuinfo amx_int8)")
@pytest.mark.parametrize("bsz,m,k,n,a_dtype,b_dtype,b_zp,transpose_b", [
    (6, 128, 64, 128, "int8", "int8", 0, True),       # BERT's Q K^T: K read as stored
    (6, 128, 128, 64, "uint8", "int8", 0, False),     # its P V
    (2, 32, 192, 48, "int8", "uint8", 128, False),    # 3 column blocks; b recentred by its zero point
])
def test_amx_batched_matmul_is_bit_exact_with_the_reference(bsz, m, k, n, a_dtype, b_dtype, b_zp, transpose_b):
    from compiler.backends.tvm_kernels import qbmm as B
    assert B.amx_fits(m, k, n)
    rq = (Requant(0, 0, -128, 127, "int8"), 1188614912, 36)
    s = B.QBmmSpec(bsz, m, k, n, a_dtype, 0, b_dtype, b_zp, transpose_b, *rq, amx=True)
    rng = np.random.default_rng(k + n)
    info_a, info_b = np.iinfo(a_dtype), np.iinfo(b_dtype)
    a = rng.integers(info_a.min, info_a.max + 1, (bsz, m, k)).astype(a_dtype)
    b = rng.integers(info_b.min, info_b.max + 1, s.b_shape).astype(b_dtype)
    pack, mm = tvm.compile(B.make_pack(s), target=SPR), tvm.compile(B.make_qbmm(s), target=SPR)
    panel, bias = tvm.runtime.empty(B.panel_shape(s), "int8"), tvm.runtime.empty((bsz, n), "int32")
    out = tvm.runtime.empty(B.out_shape(s), s.out_dtype)
    pack(tvm.runtime.tensor(b), panel, bias)
    mm(tvm.runtime.tensor(a), panel, bias, out)
    np.testing.assert_array_equal(out.numpy(), B.qbmm_reference(s, a, b))
    asm = mm.mod.inspect_source("asm") if hasattr(mm, "mod") else mm.inspect_source("asm")
    assert "tdpbusd" in asm and "vpdpbusd" not in asm


def test_the_final_ir_of_an_amx_target_carries_each_matmuls_amx_block_as_its_tile():
    """The AMX decision is the target's and shows in the IR: on sapphirerapids each int8 linear layer's tile is
    the AMX kernel's block (16-row tiles, 16-column blocks); on a VNNI-only CPU it is the VNNI kernel's."""
    from compiler.api import final_ir
    from compiler.backends.tvm_fused import kernel_spec, parse
    from compiler.backends.tvm_fused.int_matmul import qmatmul_plan
    from compiler.target import Target
    g, calib = _mlp(64)
    tiles = {}
    for cpu in ("sapphirerapids", "icelake-server"):
        target = Target.parse(f"llvm -mcpu={cpu} -num-threads=1")
        fg, _ = final_ir(g, target, quantize="int8", calibration=calib, integer_only=True)
        nodes = [n for n in fg.nodes if n.op.name == "k.fused" and n.attrs["kernel"] == "qmatmul"]
        assert len(nodes) == 2
        specs = [kernel_spec(n, target) for n in nodes]
        assert all(s.amx == (cpu == "sapphirerapids") for s in specs)
        assert all(qmatmul_plan(parse(n), target)[0] == s for n, s in zip(nodes, specs))
        tiles[cpu] = [tuple(n.attrs["tile"]) for n in nodes]
    assert tiles["sapphirerapids"] == [QM.pick_amx_tile(64, 8), QM.pick_amx_tile(64, 3)] == [(2, 2), (1, 3)]
