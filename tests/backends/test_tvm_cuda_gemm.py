"""The GPU's implicit GEMM for q.conv / q.matmul and float16 convs (tvm_lower/cuda_gemm.py,
tvm_kernels/cuda_gemm.py).

Its arithmetic (weight packing, the zero point folded into the bias, the im2col gather with padding,
uint8 operands shifted to int8 for tensor cores, tiles beyond the output, the slice back) runs
unscheduled on the CPU against the interpreter, for both inner products; the GPU schedules' primitives
keep a PrimFunc's meaning, and the CUDA build must then use WMMA int8 fragments (or `__dp4a`)."""
from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from tvm import relax  # noqa: E402

from compiler import interp  # noqa: E402
from compiler.backends.tvm import BACKEND  # noqa: E402
from compiler.backends.tvm_lower import cuda_gemm  # noqa: E402
from compiler.backends.tvm_lower.registry import LowerCtx, read, tvm_dtype  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import layout as lay, linalg, quant as q  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402

I8, U8, I16, F16 = DType.I8, DType.U8, DType.I16, DType.F16
RANGE = q.INT_RANGE
SETTINGS = settings(max_examples=10, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def ints(rng, shape, dt: DType) -> np.ndarray:
    lo, hi = RANGE[dt]
    return rng.integers(lo, hi + 1, shape, dtype=np.int64).astype(dt.numpy)


def run_unscheduled(g: Graph, lower, x: np.ndarray, inner: str, **kw) -> np.ndarray:
    """The graph's one node through `lower` (cuda_gemm.conv / matmul, unscheduled; `kw` its keywords), built for the
    CPU; x as the kernel reads it."""
    node = g.nodes[0]
    bb = relax.BlockBuilder()
    ctx = LowerCtx(bb, g, Target("llvm", num_threads=1), unscheduled=True)
    p = relax.Var("x", relax.TensorType(x.shape, tvm_dtype(g.inputs[0].type.dtype)))
    env = {id(g.inputs[0]): p}
    with bb.function("main", [p]):
        with bb.dataflow():
            y = lower(ctx, node, [read(env, v) for v in node.inputs], inner=inner, **kw)
            assert y is not None, "the int8 kernel declined"
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    ex = tvm.compile(bb.get(), target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def conv_graph(rng, n, ci, hw, co, k, strides, dil, pads, xdt, zp, bias):
    g = Graph()
    x = g.add_input("x", TensorType((n, ci) + hw, xdt))
    ins = [x, g.const(ints(rng, (co, ci) + k, I8), "w")]
    if bias:
        ins.append(g.const(rng.integers(-2**31, 2**31, co).astype(np.int32), "b"))
    g.outputs = [g.add1(q.conv, ins, strides=strides, pads=pads, dilations=dil, groups=1, x_zero_point=zp)]
    return g


@SETTINGS
@given(st.data())
def test_int8_gemm_conv_matches_the_interpreter(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    k = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    hw = tuple(data.draw(st.integers(k[i] + 2, 11)) for i in range(2))
    strides = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    dil = tuple(data.draw(st.integers(1, 2)) if hw[i] > 2 * k[i] else 1 for i in range(2))
    pads = tuple(data.draw(st.integers(0, 2)) for _ in range(4))
    xdt = data.draw(st.sampled_from([U8, I8]))
    zp = data.draw(st.integers(*RANGE[xdt]))
    g = conv_graph(rng, data.draw(st.integers(1, 2)), data.draw(st.sampled_from([1, 3, 8, 37])), hw,
                   data.draw(st.sampled_from([1, 5, 70])), k, strides, dil, pads, xdt, zp,
                   data.draw(st.booleans()))
    x = ints(rng, g.inputs[0].type.shape, xdt)
    inner = data.draw(st.sampled_from(["mma", "dp4a"]))
    np.testing.assert_array_equal(run_unscheduled(g, cuda_gemm.conv, x, inner), interp.run(g, x)[0])


@SETTINGS
@given(st.data())
def test_int8_gemm_conv_reads_and_writes_blocked_layouts(data):
    """NCHW{b}c in and / or out (passes/layout's GPU table): the gather reads x[n, c // b, y, x, c % b], and a
    blocked result (the GEMM's rows then pixels, its columns channels) equals the reference's, packed."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    in_block, out_block = data.draw(st.sampled_from([(16, 16), (8, 0), (0, 8), (16, 8), (4, 16)]))
    ci = data.draw(st.sampled_from({16: [16, 32], 4: [1, 3]}.get(in_block, [8, 24])))   # 4: an image, padded
    co = data.draw(st.sampled_from([8, 40] if out_block == 8 else [16, 48] if out_block else [5, 70]))
    k = data.draw(st.integers(1, 3))
    hw = (data.draw(st.integers(k + 1, 9)), data.draw(st.integers(k + 1, 9)))
    xdt = data.draw(st.sampled_from([U8, I8]))
    g = conv_graph(rng, data.draw(st.integers(1, 2)), ci, hw, co, (k, k), (data.draw(st.integers(1, 2)),) * 2,
                   (1, 1), (data.draw(st.integers(0, 1)),) * 4, xdt, data.draw(st.integers(*RANGE[xdt])), True)
    x = ints(rng, g.inputs[0].type.shape, xdt)
    fill = data.draw(st.integers(*RANGE[xdt]))           # padding channels (weight 0) count for nothing
    xb = lay.pack.reference([x], {"block": in_block, "fill": fill})[0] if in_block else x
    want = interp.run(g, x)[0]
    if out_block:
        want = lay.pack.reference([want], {"block": out_block, "fill": 0})[0]
    inner = data.draw(st.sampled_from(["mma", "dp4a"]))
    got = run_unscheduled(g, cuda_gemm.conv, xb, inner, in_block=in_block, out_block=out_block)
    np.testing.assert_array_equal(got, want)


def test_int8_gemm_conv_extreme_values_wrap_like_the_reference():
    """Every product at its largest, a long reduction and a bias near the int32 limit: the sum wraps
    modulo 2^32 as the reference's int64 -> int32 cast does."""
    rng = np.random.default_rng(1)
    g = conv_graph(rng, 1, 300, (5, 5), 3, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), U8, 0, False)
    g.nodes[0].inputs[1].const = np.full((3, 300, 3, 3), -128, np.int8)
    x = np.full((1, 300, 5, 5), 255, np.uint8)
    for inner in ("mma", "dp4a"):
        np.testing.assert_array_equal(run_unscheduled(g, cuda_gemm.conv, x, inner), interp.run(g, x)[0])


@SETTINGS
@given(st.data())
def test_int8_gemm_matmul_matches_the_interpreter(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    batch = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    m, k, n = data.draw(st.integers(1, 70)), data.draw(st.integers(1, 70)), data.draw(st.integers(1, 70))
    adt = data.draw(st.sampled_from([U8, I8]))
    a_zp = data.draw(st.integers(*RANGE[adt]))
    g = Graph()
    a = g.add_input("a", TensorType(batch + (m, k), adt))
    g.outputs = [g.add1(q.matmul, [a, g.const(ints(rng, (k, n), I8), "w")], a_zero_point=a_zp, b_zero_point=0)]
    x = ints(rng, batch + (m, k), adt)
    inner = data.draw(st.sampled_from(["mma", "dp4a"]))
    np.testing.assert_array_equal(run_unscheduled(g, cuda_gemm.matmul, x, inner), interp.run(g, x)[0])


def test_int8_gemm_declines_what_it_does_not_cover():
    rng = np.random.default_rng(0)
    g = conv_graph(rng, 1, 4, (6, 6), 4, (3, 3), (1, 1), (1, 1), (0, 0, 0, 0), I16, 0, False)
    ctx = LowerCtx(relax.BlockBuilder(), g, Target.parse("cuda -arch=sm_90"))
    assert cuda_gemm.conv(ctx, g.nodes[0], [None] * 2) is None           # int16 activations
    g = Graph()
    a = g.add_input("a", TensorType((4, 8), U8))
    g.outputs = [g.add1(q.matmul, [a, g.const(ints(rng, (8, 4), I8), "w")], a_zero_point=0, b_zero_point=3)]
    assert cuda_gemm.matmul(ctx, g.nodes[0], [None] * 2) is None         # a weight zero point


def test_where_the_tensor_core_rule_declines_the_gemm_falls_back_to_dp4a_on_its_own_reduction(monkeypatch):
    """WMMA pads the reduction to 16 (K = 16 * 9 = 144), dp4a's steps take 32 bytes: a GEMM the WMMA rule
    declines is rebuilt with K padded to 160 and scheduled with __dp4a."""
    from compiler.backends.tvm_kernels import cuda_wmma
    declined = []
    monkeypatch.setattr(cuda_wmma, "schedule", lambda *a, **k: declined.append(a[2]))     # -> None
    g = conv_graph(np.random.default_rng(0), 1, 16, (9, 9), 24, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), U8, 7, True)
    src = BACKEND.build(g, Target.parse("cuda -arch=sm_90 -mma=wmma")).cuda_source()
    assert declined == [144] and "__dp4a(" in src and "wmma" not in src
    assert "for (int k_0 = 0; k_0 < 5; ++k_0)" in src                          # 160 bytes in steps of 32


MMA_SYNC = "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32"


@pytest.mark.parametrize("option, marker", [("", MMA_SYNC), (" -mma=wmma", "wmma::mma_sync"),
                                            (" -int8=dp4a", "__dp4a(")])
def test_cuda_build_of_an_int8_conv_uses_tensor_cores_or_dp4a(option, marker):
    rng = np.random.default_rng(0)
    g = conv_graph(rng, 2, 16, (9, 9), 24, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), U8, 7, True)
    exe = BACKEND.build(g, Target.parse("cuda -arch=sm_90" + option))
    src = exe.cuda_source()
    assert marker in src
    assert not any("cast" in k for k in exe.kernels()), exe.kernels()   # no int32 copy of an operand
    if marker == "__dp4a(":
        return
    if marker == MMA_SYNC:      # 16 x 32-byte fragments: one ldmatrix.x4 each, no WMMA
        assert "ldmatrix.sync.aligned.m8n8.x4.shared.b16" in src and "wmma::" not in src
    else:
        assert "wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, signed char" in src and MMA_SYNC not in src
    # cuda_wmma.PIPELINE: the shared tiles double-buffered, step k + 1 stored as k's MMAs end
    step = re.search(r"\(\((\w+) \+ 1\) & 1\) \* \d+\)", src)          # the buffer step k + 1 is stored in
    assert step and f"(({step.group(1)} & 1) * " in src                  # and the one step k's MMAs read
    # K = 16 * 9 = 144: on mma.sync padded to 160 (an eighth at most: gpu_tile.fragment_k), 5 steps of one
    # 32-byte fragment; on WMMA not padded, 9 steps of one 16-byte fragment (16 channels per tap); the first in
    # the prologue. The gather's 4 bytes of a thread are loaded as one vector (4 channels H*W apart)
    steps = 4 if marker == MMA_SYNC else 8
    assert f"for (int {step.group(1)} = 0; {step.group(1)} < {steps}; ++{step.group(1)})" in src
    assert re.search(r"c_src_ptr\[v_\w*\.x\]", src) and not re.search(r"c_src_ptr\[[^\]]*_s(_\d+)?\)", src)
    # 24 channels x 25 pixels: a 32 x 32 block tile, one warp (dlight's 128 x 128: 16 warps, 512 threads)
    assert "__launch_bounds__(32) int8_conv2d" in src


def test_before_sm_80_the_tensor_cores_are_reached_through_wmma():
    """mma.sync m16n8k32 (int8) and m16n8k16 (float16) need sm_80: an sm_75 build stays on WMMA."""
    g = conv_graph(np.random.default_rng(0), 1, 64, (8, 8), 64, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), U8, 7, True)
    src = BACKEND.build(g, Target.parse("cuda -arch=sm_75")).cuda_source()
    assert "wmma::mma_sync" in src and "mma.sync.aligned" not in src


def test_the_int8_wmma_step_is_the_largest_of_4_2_1_fragments_dividing_the_reduction():
    """... and a conv's channels per tap where one does (a step then never straddles two taps); of mma.sync's
    32-byte fragments 2 or 1 (64 bytes at most)."""
    from compiler.gpu_tile import k_steps
    assert [k_steps(kp) for kp in (576, 160, 32, 64, 4096)] == [4, 2, 2, 4, 4]
    assert [k_steps(kp, ci) for kp, ci in ((576, 64), (160, 16), (448, 48), (288, 32), (96, 8), (4096, 0))] == \
        [4, 1, 1, 2, 2, 4]
    assert [k_steps(kp, ci, 32) for kp, ci in ((576, 64), (160, 16), (224, 4), (4096, 0), (1152, 128))] == \
        [2, 1, 1, 2, 2]


def test_int8_fragments_reduce_over_32_where_padding_to_32_costs_an_eighth_at_most():
    """gpu_tile.fragment_k: mma.sync m16n8k32 where K rounded up to 32 is at most 9/8 of K rounded up to 16
    (ResNet's 4-channel 7x7 stem: 196 -> 224 against 208; a 16-channel 3x3 conv: 144 -> 160), else WMMA's 16
    (a 16-channel 1x1 conv would double); float16 and -mma=wmma always 16."""
    from compiler.backends.tvm_kernels.cuda_gemm import mma_k
    from compiler.gpu_tile import fragment_k
    assert [fragment_k(k, False) for k in (196, 144, 576, 64, 16, 48, 80, 4608)] == [32, 32, 32, 32, 16, 16, 16, 32]
    assert fragment_k(576, True) == 16 and fragment_k(576, False, mma=False) == 16
    assert [mma_k(576, False, inner) for inner in ("mma", "wmma", "dp4a")] == [32, 16, 0]


def test_the_staging_loads_up_to_16_bytes_a_thread_where_the_operand_is_contiguous():
    """cuda_wmma.load_vector: a packed weight or a 16-channel block of int8 in one 128-bit load (float16: 8), an
    8-channel block in 8 bytes, never below 4 elements, and never more than the tile's elements per thread."""
    from compiler.backends.tvm_kernels.cuda_wmma import load_vector
    assert [load_vector(run, half, 128 * 64, 256) for run, half in ((576, False), (576, True), (16, False),
                                                                     (8, False), (4, False), (1, False))] == \
        [16, 8, 16, 8, 4, 4]
    assert [load_vector(576, False, rows * 16, 32) for rows in (16, 32, 64)] == [8, 16, 16]


def test_an_8_or_16_byte_constant_vector_is_written_as_words():
    """TVM 0.27 prints an int8x16 (int8x8) constant as make_int4 (make_int2) of 16 (8) bytes, which nvcc rejects;
    tvm_cuda_source.fix packs them into little-endian words (the first byte the lowest)."""
    from compiler.backends.tvm_cuda_source import fix
    uchars = ", ".join(f"(uchar){v}" for v in [1, 2, 3, 4] + [128] * 12)
    schars = ", ".join(["(signed char)-128"] * 15 + ["(signed char)-1"])
    assert fix(f"x = make_uint4({uchars});") == "x = make_uint4(0x04030201u, 0x80808080u, 0x80808080u, 0x80808080u);"
    assert fix(f"y = make_int4({schars});") == \
        "y = make_int4((int)0x80808080u, (int)0x80808080u, (int)0x80808080u, (int)0xff808080u);"
    eight = ", ".join(["(signed char)0"] * 7 + ["(signed char)5"])
    assert fix(f"w = make_int2({eight});") == "w = make_int2((int)0x00000000u, (int)0x05000000u);"
    assert fix("z = make_int4(1, 2, 3, 4);") == "z = make_int4(1, 2, 3, 4);"


def test_a_bytewise_xor_of_words_is_one_xor_per_word():
    """TVM prints a uint8x16 XOR byte by byte through reinterpret_cast of each 32-bit component; fix makes each
    component's 4 byte XORs one (the same bits), and leaves a byte sequence that is not a whole word alone."""
    from compiler.backends.tvm_cuda_source import fix
    line = ("    reinterpret_cast<unsigned char*>(&(__1.{c}))[{i}] = (unsigned char)(((reinterpret_cast<const unsigned "
            "char*>(&(v_.{c}))[{i}])^(reinterpret_cast<const unsigned char*>(&(k.{c}))[{i}])));\n")
    code = "".join(line.format(c=c, i=i) for c in "xy" for i in range(4))
    assert fix(code) == "    __1.x = v_.x ^ k.x;\n    __1.y = v_.y ^ k.y;\n"
    partial = "".join(line.format(c="x", i=i) for i in range(3))
    assert fix(partial) == partial


def test_the_block_tile_is_as_narrow_as_an_axis_of_64_or_fewer_needs():
    from compiler.backends.tvm_kernels.cuda_wmma import staging_scope
    from compiler.gpu_tile import block_tile
    assert [block_tile(r, c) for r, c in ((3136, 64), (64, 3136), (48, 16), (65, 512), (20, 8), (33, 32))] == \
        [(128, 64), (64, 128), (64, 16), (128, 128), (32, 16), (64, 32)]
    assert [staging_scope(t) for t in ((128, 64), (128, 128), (64, 64), (32, 16))] == \
        ["shared", "shared.dyn", "shared", "shared"]


@SETTINGS
@given(st.data())
def test_float16_conv_gemm_matches_the_interpreter(data):
    """float16 operands, float32 sums rounded once: equal to the interpreter up to the order of the
    float32 sum (a float16 ulp at most)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    k = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    hw = tuple(data.draw(st.integers(k[i] + 2, 11)) for i in range(2))
    strides = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    pads = tuple(data.draw(st.integers(0, 2)) for _ in range(4))
    n, ci, co = data.draw(st.integers(1, 2)), data.draw(st.sampled_from([1, 3, 37])), data.draw(st.sampled_from([5, 70]))
    g = Graph()
    x = g.add_input("x", TensorType((n, ci) + hw, F16))
    ins = [x, g.const(rng.standard_normal((co, ci) + k).astype(np.float16), "w")]
    if data.draw(st.booleans()):
        ins.append(g.const(rng.standard_normal(co).astype(np.float16), "b"))
    g.outputs = [g.add1(linalg.conv, ins, strides=strides, pads=pads, dilations=(1, 1), groups=1)]
    xv = rng.standard_normal(x.type.shape).astype(np.float16)
    got = run_unscheduled(g, lambda ctx, node, args, inner: cuda_gemm.float_conv(ctx, node, args),
                          xv, "mma")
    want = interp.run(g, xv)[0]
    assert got.dtype == want.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=2e-3)


@SETTINGS
@given(st.data())
def test_float16_conv_gemm_reads_and_writes_blocked_layouts(data):
    """A float16 conv on NCHW{b}c in and / or out: the gather in (kh, kw, ci) order from the blocked input, the
    blocked result through an epilogue (here adding one), equal to the reference's, packed."""
    from compiler.backends.tvm_kernels.cuda_gemm import Epilogue
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    in_block, out_block = data.draw(st.sampled_from([(16, 16), (8, 0), (0, 8), (4, 16)]))
    ci = data.draw(st.sampled_from({16: [16, 64], 4: [3]}.get(in_block, [8, 24])))     # 4: an image, padded
    co = data.draw(st.sampled_from([8, 40] if out_block == 8 else [16, 48] if out_block else [5, 70]))
    k = data.draw(st.integers(1, 3))
    hw = (data.draw(st.integers(k + 1, 9)), data.draw(st.integers(k + 1, 9)))
    g = Graph()
    x = g.add_input("x", TensorType((data.draw(st.integers(1, 2)), ci) + hw, F16))
    w = g.const(rng.standard_normal((co, ci, k, k)).astype(np.float16), "w")
    pad = data.draw(st.integers(0, 1))
    g.outputs = [g.add1(linalg.conv, [x, w], strides=(1, 1), pads=(pad,) * 4, dilations=(1, 1), groups=1)]
    xv = rng.standard_normal(x.type.shape).astype(np.float16)
    xb = lay.pack.reference([xv], {"block": in_block, "fill": 7})[0] if in_block else xv
    plus_one = Epilogue("float16", (), lambda v, b, r, c, tensors: v + tvm.tirx.const(1.0, "float16"))
    got = run_unscheduled(g, lambda ctx, node, args, inner: cuda_gemm.float_conv(
        ctx, node, args, epilogue=plus_one, epi_key=("plus_one",), in_block=in_block, out_block=out_block), xb, "mma")
    want = interp.run(g, xv)[0] + np.float16(1.0)
    if out_block:
        want = lay.pack.reference([want], {"block": out_block, "fill": 0})[0]
    assert got.shape == want.shape and got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=4e-3)


def test_the_int8_target_option_parses_and_round_trips():
    from compiler.diagnostics import Unsupported
    t = Target.parse("cuda -arch=sm_90 -int8=dp4a")
    assert t.int8 == "dp4a" and Target.parse(str(t)) == t
    assert Target.parse("cuda -arch=sm_90").int8 == "mma" and str(Target.parse("cuda -arch=sm_90")) == "cuda -arch=sm_90"
    for text in ("cuda -arch=sm_90 -mma=wmma", "cuda -arch=sm_90 -int8=dp4a -mma=wmma"):
        assert str(Target.parse(text)) == text
    for bad in ("cuda -int8=imma", "llvm -int8=dp4a", "cuda -mma=wgmma", "llvm -mma=wmma"):
        with pytest.raises(Unsupported, match="-int8=|-mma="):
            Target.parse(bad)
