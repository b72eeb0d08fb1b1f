"""The GPU's tensor-core block tiles: the analytic model's candidates, features and choices
(costmodel/gpu_tiles.py), choose_tiles writing them into the cuda IR, and the CUDA build using them
(tvm_kernels/cuda_wmma.py): each tile lowers, and its block has the warps the tile names."""
from __future__ import annotations

import re

import numpy as np
import pytest

from costmodel import gpu_tiles as G
from tests.conftest import has_module
from tests.ptxas import assemble

needs_tvm = pytest.mark.skipif(not has_module("tvm"), reason="apache-tvm is not installed")

# ResNet-18's last stage at batch 32, blocked: the batch's 7 x 7 pixels x 512 channels, 3 x 3 x 512 deep
STAGE4_B32 = G.GpuGemm(1, 32 * 49, 512, 4608, False, 512)


def test_candidates_stop_at_the_first_side_that_covers_an_axis():
    tiles = G.candidate_tiles(G.GpuGemm(1, 49, 512, 576, False))
    assert sorted({t[0] for t in tiles}) == [16, 32, 64] and sorted({t[1] for t in tiles}) == [16, 32, 64, 128]
    assert G.candidate_tiles(G.GpuGemm(4, 8, 16, 32, True)) == [(16, 16)]


def test_features_are_named_and_count_blocks_waves_and_padding():
    gpu = G.gpu_of("sm_90")
    f = G.features(STAGE4_B32, (128, 128), gpu)
    assert tuple(f) == G.FEATURE_NAMES
    assert round(2 ** f["log_blocks"]) == 13 * 4 == 52 and f["sm_fill"] == pytest.approx(52 / 132)
    # int8 on mma.sync's 32-byte fragments: steps of 2 (64 bytes), 4608 / 64 of them
    assert f["warps"] == 16 and f["rounds"] == 1 and f["k_step"] == 2 and f["steps"] == 72
    assert f["pad_work"] == pytest.approx(13 * 128 / 1568)
    small = G.features(G.GpuGemm(1, 40, 20, 24, True), (64, 32), gpu)
    assert small["pad_work"] == pytest.approx(64 * 32 * 32 / (40 * 20 * 24)) and small["warps"] == 2


def test_a_gemm_with_fewer_blocks_than_sms_gets_a_smaller_tile():
    """dlight's 128 x 128 leaves 80 of an H100's 132 SMs idle on ResNet-18's last stage at batch 32: the model
    splits it into more blocks; a GEMM that fills the SMs many times keeps the rule's tile."""
    from compiler.gpu_tile import block_tile
    gpu = G.gpu_of("sm_90")
    tile = G.choose(STAGE4_B32, "sm_90")
    f = G.features(STAGE4_B32, tile, gpu)
    assert 2 ** f["log_blocks"] >= gpu.sms * 0.75 > 52
    assert G.estimate(STAGE4_B32, tile, gpu) < 0.75 * G.estimate(STAGE4_B32, block_tile(1568, 512), gpu)
    big = G.GpuGemm(1, 32 * 3136, 64, 576, False, 64)                  # ResNet-18's first stage at batch 32
    assert G.choose(big, "sm_90") == block_tile(big.rows, big.cols) == (128, 64)


def test_every_candidate_fits_an_sm_and_the_architecture_is_read_from_the_target():
    for spec in (STAGE4_B32, G.GpuGemm(1, 4096, 1536, 384, True)):
        for t in G.candidate_tiles(spec):
            assert G.shared_bytes(spec, t) <= G.gpu_of("sm_80").shared_per_sm
    assert [G.arch_of(t) for t in ("cuda -arch=sm_90", "cuda", None)] == ["sm_90", "sm_80", "sm_80"]
    assert G.gpu_of("sm_86") is G.GPUS["sm_80"] and G.gpu_of("sm_100") is G.GPUS["sm_90"]
    assert G.gpu_of("sm_70") is G.GPUS["sm_80"]


def _conv_graph(rng, half: bool, co: int = 48, hw: int = 12, n: int = 2):
    """conv 16 -> co 3x3, ReLU, conv co -> 16 1x1 for cuda, integer-only or float16: the first conv one fused
    kernel whose result stays in the GEMM's type (a float16 conv whose result leaves as float32 runs op by op)."""
    import compiler
    from compiler.ir import Graph
    from compiler.ops import elementwise as ew
    from compiler.ops import linalg
    from compiler.types import DType, TensorType
    g = Graph()
    x = g.add_input("x", TensorType((n, 16, hw, hw), DType.F32))
    conv = dict(strides=(1, 1), dilations=(1, 1), groups=1)
    w1 = g.const(rng.standard_normal((co, 16, 3, 3)).astype(np.float32) * 0.1, "w1")
    w2 = g.const(rng.standard_normal((16, co, 1, 1)).astype(np.float32) * 0.1, "w2")
    y = g.add1(ew.relu, [g.add1(linalg.conv, [x, w1], pads=(1, 1, 1, 1), **conv)])
    g.outputs = [g.add1(linalg.conv, [y, w2], pads=(0, 0, 0, 0), **conv)]
    kw = dict(precision="fp16") if half else dict(
        quantize="int8", integer_only=True,
        calibration=[[rng.standard_normal((n, 16, hw, hw)).astype(np.float32)] for _ in range(2)])
    return compiler.api.final_ir(g, "cuda -arch=sm_90", **kw)[0]


@needs_tvm
@pytest.mark.parametrize("half", [pytest.param(False, marks=pytest.mark.slow), True])     # int8: calibration
def test_choose_tiles_writes_the_models_tile_into_the_cuda_ir_and_the_build_uses_it(half):
    from compiler.backends.tvm import BACKEND
    from compiler.backends.tvm_fused import cuda
    from compiler.backends.tvm_fused.body import parse
    from compiler.ops import kernel
    from compiler.target import Target
    target = Target.parse("cuda -arch=sm_90")
    g = _conv_graph(np.random.default_rng(0), half)
    convs = [n for n in g.nodes if n.op is kernel.fused and n.attrs["kernel"] in ("qconv", "conv")]
    assert len(convs) == 2
    spec = cuda.gemm_spec(parse(convs[0]), target)
    assert spec == G.GpuGemm(1, 2 * 144, 48, 144, half, 16)              # blocked: the batch's pixels x channels
    tile = tuple(convs[0].attrs["tile"])
    assert tile == G.choose(spec, "sm_90")
    src = BACKEND.build(g, target).cuda_source()
    from compiler.gpu_tile import warps_and_fragments
    threads = 32 * warps_and_fragments(tile[0])[0] * warps_and_fragments(tile[1])[0]
    name = "f16_conv2d" if half else "int8_conv2d"
    assert re.search(rf"__launch_bounds__\({threads}\) {name}_0", src), (tile, threads)


@needs_tvm
@pytest.mark.slow
@pytest.mark.parametrize("half", [False, True])
def test_every_candidate_tile_lowers_and_assembles(half):
    """Each of the 16 tiles (sides 16..128) forced on one conv: TVM lowers it on tensor cores (the accumulators'
    staging in static shared memory where the tile is not 128 x 128), the block has its warps, and ptxas
    assembles the PTX."""
    import shutil
    from compiler.backends.tvm import BACKEND
    from compiler.ir import Node
    from compiler.ops import kernel
    from compiler.target import Target
    from compiler.gpu_tile import warps_and_fragments
    g = _conv_graph(np.random.default_rng(1), half, co=160, hw=14, n=1)
    i = next(i for i, n in enumerate(g.nodes) if n.op is kernel.fused and n.attrs["kernel"] in ("qconv", "conv"))
    for tile in [(r, c) for r in G.SIDES for c in G.SIDES]:
        n = g.nodes[i]
        g.nodes[i] = Node(n.op, n.inputs, {**n.attrs, "tile": tile}, n.outputs, n.name, n.loc)
        exe = BACKEND.build(g, Target.parse("cuda -arch=sm_90"))
        threads = 32 * warps_and_fragments(tile[0])[0] * warps_and_fragments(tile[1])[0]
        name = "f16_conv2d" if half else "int8_conv2d"
        assert re.search(rf"__launch_bounds__\({threads}\) {name}_0", exe.cuda_source()), tile
        # on mma.sync: float16 m16n8k16, int8 (K = 144 -> 160) m16n8k32 (a tile the schedule failed for would fall
        # back to dlight's SIMT matmul or dp4a)
        assert f"mma.sync.aligned.m16n8k{16 if half else 32}" in exe.cuda_source(), tile
        if shutil.which("ptxas"):
            assemble(exe.ptx())


@needs_tvm
def test_the_gemm_ranked_has_the_fragments_the_targets_tensor_cores_take():
    """An int8 conv reducing over 144 (16 channels x 3 x 3) takes fragments of 32 on mma.sync (160: an eighth at
    most over 16's 144) and of 16 on WMMA (-mma=wmma): the tile model's shared memory and padding follow."""
    from compiler.backends.tvm_fused import cuda
    from compiler.backends.tvm_fused.body import parse
    from compiler.ops import kernel
    from compiler.target import Target
    g = _conv_graph(np.random.default_rng(0), False)
    conv = next(n for n in g.nodes if n.op is kernel.fused and n.attrs["kernel"] == "qconv")
    sync, wmma = (cuda.gemm_spec(parse(conv), Target.parse("cuda -arch=sm_90" + o)) for o in ("", " -mma=wmma"))
    assert (sync.k, sync.mma, sync.fragment, sync.kp) == (144, True, 32, 160)
    assert (wmma.k, wmma.mma, wmma.fragment, wmma.kp) == (144, False, 16, 144)
    assert G.shared_bytes(sync, (64, 64)) != G.shared_bytes(wmma, (64, 64))
    assert cuda.gemm_spec(parse(conv), Target.parse("cuda -arch=sm_75")).fragment == 16     # WMMA before sm_80
