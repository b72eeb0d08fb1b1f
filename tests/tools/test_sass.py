"""benchmarks/sass.py: the main loop of a kernel's SASS (what benchmarks/gpu_layouts.py counts per MMA)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from benchmarks import sass

SASS = """
        .section        .text.k_kernel,"ax",@progbits
k_kernel:
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   S2R R0, SR_TID.X ;
.L_x_1:
        /*0020*/                   LDG.E R4, desc[UR4][R2.64] ;
        /*0030*/                   STS [R5], R4 ;
        /*0040*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0050*/                   LDSM.16.M88.2 R8, [R6] ;
        /*0060*/                   IMMA.16816.S8.S8 R12, R8.ROW, R10.COL, R12 ;
        /*0070*/                   IMMA.16816.S8.S8 R16, R9.ROW, R10.COL, R16 ;
        /*0080*/                   ISETP.NE.AND P0, PT, R7, RZ, PT ;
        /*0090*/               @P0 BRA `(.L_x_1) ;
.L_x_2:
        /*00a0*/                   STG.E desc[UR4][R2.64], R12 ;
        /*00b0*/               @P1 BRA `(.L_x_2) ;
        /*00c0*/                   EXIT ;
        .section        .text.plain_kernel,"ax",@progbits
plain_kernel:
        /*0000*/                   EXIT ;
"""


def test_the_main_loop_is_the_backward_branch_around_the_mmas():
    """From its label (the instruction after it) to the branch: 8 instructions, 2 of them MMAs; the store loop
    holds none, and a kernel without a loop has no main loop."""
    ks = sass.kernels(SASS)
    assert sorted(ks) == ["k_kernel", "plain_kernel"]
    assert sass.main_loop(ks["k_kernel"]) == (8, 2)
    assert sass.main_loop(ks["plain_kernel"]) is None


def test_a_warp_issues_the_code_outside_the_loop_once_and_the_loop_as_often_as_its_mmas_take():
    """k_kernel: 5 instructions outside its loop of 8 with 2 MMAs; a warp running 10 MMAs takes the loop 5 times:
    (5 + 5 * 8) / 10. A reduction unrolled whole (no loop) counts every instruction once."""
    body = sass.kernels(SASS)["k_kernel"]
    assert sass.issued_per_mma(body, 10) == pytest.approx(4.5)
    straight = body.replace("@P0 BRA `(.L_x_1)", "NOP")
    assert sass.main_loop(straight) is None and sass.issued_per_mma(straight, 2) == pytest.approx(13 / 2)
    with pytest.raises(ValueError):
        sass.issued_per_mma(sass.kernels(SASS)["plain_kernel"], 1)


def test_mmas_count_in_m16n8k16_units_by_their_shape():
    """An int8 m16n8k32 (one instruction, 4096 multiply-adds) is two m16n8k16; an m16n8k8 a half."""
    assert [sass.mma_units(op) for op in ("IMMA.16832.S8.S8", "IMMA.16816.S8.S8", "HMMA.16816.F32",
                                          "HMMA.1688.F32.TF32", "LDSM.16.M88.4")] == [2, 1, 1, 0.5, 0]
    k32 = SASS.replace("IMMA.16816.S8.S8", "IMMA.16832.S8.S8")
    assert sass.main_loop(sass.kernels(k32)["k_kernel"]) == (8, 4)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ptxas") is None or sass.nvdisasm() is None, reason="needs ptxas and nvdisasm")
def test_the_int8_conv_gemms_of_a_resnet_stem_issue_fewer_instructions_per_mma_on_mma_sync():
    """A ResNet stem (7x7 stride-2 conv of the 3-channel image, read NCHW{4}c) and a 3x3 64-channel conv,
    integer-only for sm_90, on tensor cores: a warp issues a bounded number of instructions per MMA (the stem's
    byte-by-byte gather of the plain image issued 31 per MMA in its main loop), fewer on mma.sync m16n8k32
    fragments (the default) than on WMMA's 16x16x16 (-mma=wmma): 5.6 over both, 9.5 the worst (the stem, whose
    7 steps nvcc unrolls), against 7.8 and 11.8 here."""
    torch = pytest.importorskip("torch")
    from benchmarks.gpu_layouts import issued
    from compiler.api import final_ir
    from compiler.backends.tvm import BACKEND
    from compiler.target import Target
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3), nn.ReLU(), nn.Conv2d(64, 64, 3, 1, 1), nn.ReLU()).eval()
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1, 3, 64, 64)).astype(np.float32) for _ in range(3)]
    per_mma = {}
    for option in ("", " -mma=wmma"):
        target = "cuda -arch=sm_90" + option
        g, _ = final_ir(model, target, example_inputs=(torch.from_numpy(xs[0]),), quantize="int8",
                        integer_only=True, calibration=[[x] for x in xs[1:]])
        exe = BACKEND.build(g, Target.parse(target))
        cubin = sass.assemble(exe.ptx())[0]
        per_mma[option] = issued(g, exe, cubin, target)
    (mma_all, mma_worst), (wmma_all, wmma_worst) = per_mma[""], per_mma[" -mma=wmma"]
    assert 1 < mma_all < wmma_all and mma_worst < wmma_worst <= 16, per_mma
