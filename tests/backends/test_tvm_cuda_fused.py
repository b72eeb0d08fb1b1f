"""The GPU target's fused integer kernels: each fused q.conv / q.matmul is one implicit GEMM whose write-back
computes its epilogue (the dyadic requant, a residual add with its requant, a lookup table, a matmul's bias), so
its int32 sum never reaches memory (compiler/backends/tvm_fused/cuda.py).

Without a GPU the meaning is checked on the CPU: tvm_cuda.build_for_cpu builds the same kernels unscheduled (the
GPU schedules' primitives keep a PrimFunc's meaning), bit-exact against the interpreter on the final IR; the
cuda build then shows the fused structure (no requant kernel of its own, int8 results out of the GEMMs)."""
from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from compiler import interp  # noqa: E402
from compiler.api import final_ir  # noqa: E402
from compiler.backends import tvm_cuda  # noqa: E402
from compiler.backends.tvm import BACKEND  # noqa: E402
from compiler.ops import kernel  # noqa: E402
from compiler.target import Target  # noqa: E402

nn = torch.nn


class ResidualSiLU(nn.Module):
    """A strided conv + SiLU (a q.table epilogue), a residual block (requant, add, requant), a 1x1 conv to 24
    channels with ReLU, a pool and a linear layer (bias, requant)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.SiLU())
        self.a = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1), nn.BatchNorm2d(16))
        self.c = nn.Sequential(nn.Conv2d(16, 24, 1), nn.ReLU())
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        y = self.stem(x)
        y = torch.relu(y + self.b(self.a(y)))
        y = self.c(y).mean(dim=(2, 3))
        return self.fc(y)


def _randomized(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def _encoder() -> tuple[nn.Module, list[np.ndarray]]:
    from examples.zoo import BertEncoder
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    return BertEncoder(vocab=50, hidden=64, heads=2, ffn=128, layers=1, seq=16).eval(), \
        [rng.integers(0, 50, (1, 16)).astype(np.int64) for _ in range(3)]


def _cnn() -> tuple[nn.Module, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return _randomized(ResidualSiLU()), [rng.standard_normal((1, 3, 20, 20)).astype(np.float32) for _ in range(3)]


MODELS = {"cnn": _cnn, "encoder": _encoder}


def _final(name: str, target: str, **kw):
    model, xs = MODELS[name]()
    g, _ = final_ir(model, target, example_inputs=(torch.from_numpy(xs[0]),), quantize="int8", integer_only=True,
                    calibration=[[x] for x in xs[1:]], **kw)
    return g, xs[0]


@pytest.mark.parametrize("name, option", [("cnn", ""), ("cnn", " -int8=dp4a"), ("encoder", "")])
def test_the_gpu_program_with_fused_epilogues_is_bit_exact(name, option):
    target = "cuda -arch=sm_90" + option
    g, x = _final(name, target)
    fused = [n for n in g.nodes if n.op is kernel.fused and n.attrs["kernel"] in ("qconv", "qmatmul")
             and len(n.attrs["body"].nodes) > 1]
    assert fused, "no fused integer conv or matmul with an epilogue in the final IR"
    got = tvm_cuda.build_for_cpu(g, Target.parse(target))(x)
    want = interp.run(g, x)
    assert np.std(want[0]) > 0
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_a_batch_of_two_is_bit_exact_with_its_images_folded_into_the_gemm_rows():
    """A blocked conv's GEMM rows are every image's pixels (padded once): the residual, the per-channel requant and
    the table in the write-back read the right image."""
    model, xs = _cnn()
    batch = [np.concatenate([xs[i], xs[i + 1][:, :, ::-1]]) for i in range(2)]     # two different images each
    target = "cuda -arch=sm_90"
    g, _ = final_ir(model, target, example_inputs=(torch.from_numpy(batch[0]),), quantize="int8", integer_only=True,
                    calibration=[[batch[1]]])
    assert g.inputs[0].type.shape[0] == 2
    got = tvm_cuda.build_for_cpu(g, Target.parse(target))(batch[0])[0]
    want = interp.run(g, batch[0])[0]
    assert not np.array_equal(want[0], want[1])
    np.testing.assert_array_equal(got, want)


def test_a_broken_epilogue_is_caught(monkeypatch):
    """The check above can fail: a requant that rounds one step off is seen."""
    from compiler.backends.tvm_fused import cuda
    g, x = _final("cnn", "cuda -arch=sm_90")
    real = cuda.requant_expr
    monkeypatch.setattr(cuda, "requant_expr", lambda v, m, c, rnd, *rest: real(v + 1, m, c, rnd, *rest))
    got = tvm_cuda.build_for_cpu(g, Target.parse("cuda -arch=sm_90"))(x)
    assert not np.array_equal(got[0], interp.run(g, x)[0])


def test_the_cuda_build_writes_8_bit_results_out_of_its_int8_convs():
    """Each int8 conv's GEMM writes its requantized 8-bit result: no int32 conv result between kernels."""
    g, _ = _final("cnn", "cuda -arch=sm_90")
    exe = BACKEND.build(g, Target.parse("cuda -arch=sm_90"))
    relax_text = exe.source("relax")
    convs = re.findall(r'R\.call_tir\(cls\.int8_conv2d_\d+, .*?dtype="(\w+)"\)\)', relax_text)
    assert len(convs) == 4 and set(convs) <= {"int8", "uint8"}, convs
    assert "cls.table" not in relax_text                 # the stem's SiLU table is in its conv's write-back
    assert exe.cuda_source().count("mma.sync.aligned.m16n8k32") >= 4     # (int8 fragments of 16 x 16 x 32)


def test_the_gpu_convs_read_and_write_channel_blocks_a_word_at_a_time():
    """assign_gpu_layouts: the 3-channel stem reads NCHW{4}c (the quantize kernel pads the image to 4 channels),
    each int8 conv after it NCHW{16}c, and each writes NCHW{16}c (the 24-channel one {8}c), the residual read
    blocked in the write-back; every gather loads a thread's channels as one vector (from NCHW: 4 byte loads H*W
    apart; the 3-channel image: a byte loop): the stem a pixel's 4 as a 32-bit word, the others a block's 16 as
    one 128-bit load (cuda_wmma.load_vector; the 16 bytes 0x80 that shift uint8 to int8 written as 4 words,
    tvm_cuda_source); the write-back stores 4 int8 channels as one word."""
    g, _ = _final("cnn", "cuda -arch=sm_90")
    convs = [n for n in g.nodes if n.op is kernel.fused and n.attrs["kernel"] == "qconv"]
    assert [n.inputs[0].type.shape[1:] for n in convs] == [(1, 20, 20, 4), (1, 10, 10, 16), (1, 10, 10, 16),
                                                            (1, 10, 10, 16)]
    assert [n.outputs[0].type.shape[-1] for n in convs] == [16, 16, 16, 8]
    src = BACKEND.build(g, Target.parse("cuda -arch=sm_90")).cuda_source()
    bodies = dict(re.findall(r'__global__ void __launch_bounds__\(\d+\) (int8_conv2d_\d+)_kernel\(.*?\) \{(.*?)\n\}\n',
                             src, re.S))
    assert len(bodies) == 4, sorted(bodies)
    for name, body in bodies.items():
        assert re.search(r"\*\(uint\*\)\(out_ptr \+", body) and "out_ptr[" not in body, name
        assert "r_src_ptr[" not in body, name
        if name == "int8_conv2d_0":
            assert re.search(r"\*\(int\*\)\(r_src_ptr \+", body)
        else:
            assert re.search(r"\*\(uint4\*\)\(r_src_ptr \+", body), name
    assert "make_uint4(0x80808080u, 0x80808080u, 0x80808080u, 0x80808080u)" in src


def test_a_blocked_conv_result_reaches_the_next_kernel_as_a_view_not_a_copy():
    """Each conv GEMM writes (n, c / b, h * w, b), which the next kernel reads as (n, c / b, h, w, b): a view
    (vm.builtin.reshape; tvm.compile's RewriteDataflowReshape), so the program launches the IR's kernels and no
    copy kernel between them."""
    g, _ = _final("cnn", "cuda -arch=sm_90")
    launches = BACKEND.build(g, Target.parse("cuda -arch=sm_90")).launches()
    assert not [k for k in launches if k.startswith("reshape")], launches
    assert sum(k.startswith("int8_conv2d") for k in launches) == sum(
        n.op is kernel.fused and n.attrs["kernel"] == "qconv" for n in g.nodes)


@pytest.mark.slow
def test_float16_convs_read_channel_blocks_a_vector_at_a_time():
    """--precision fp16: the blocked float16 convs (16 channels a tap) gather a thread's 4 channels as one 64-bit
    vector (8 channels: 128 bits, cuda_wmma.load_vector); with dlight's fixed 64-element step (four taps of 16
    channels in one step) TVM could not vectorize it (gpu_tile.k_steps now divides the channels per tap). The
    3-channel stem reads the image padded to NCHW{4}c (the cast kernel writes it) a pixel (64 bits) at a time,
    its steps spanning taps."""
    model, xs = _cnn()
    g, _ = final_ir(model, "cuda -arch=sm_90", example_inputs=(torch.from_numpy(xs[0]),), precision="fp16")
    convs = [n for n in g.nodes if n.op is kernel.fused and n.attrs["kernel"] == "conv"]
    assert [n.inputs[0].type.shape[-1] for n in convs[:3]] == [4, 16, 16]
    src = BACKEND.build(g, Target.parse("cuda -arch=sm_90")).cuda_source()
    bodies = dict(re.findall(r'__global__ void __launch_bounds__\(\d+\) (f16_conv2d_\d+)_kernel\(.*?\) \{(.*?)\n\}\n',
                             src, re.S))
    assert "fused_cast_pack_nchwc_kernel" in src                         # the image's cast writes the pad
    for name in ("f16_conv2d_0", "f16_conv2d_1", "f16_conv2d_2"):        # the stem, the two 16 -> 16 convs
        vector = "half4" if name == "f16_conv2d_0" else "uint4"
        assert re.search(rf"\*\({vector}\*\)\(r_src_ptr \+", bodies[name]) and "r_src_ptr[" not in bodies[name], name


def test_an_int16_conv_the_gemm_does_not_take_is_lowered_op_by_op():
    """A layer kept at 16 bits (no int8 GEMM for it) falls back to the op-by-op lowering, still exact."""
    g, x = _final("cnn", "cuda -arch=sm_90", keep_16bit=("first:1",))
    assert any(n.op is kernel.fused and n.attrs["kernel"] == "qconv"
               and n.attrs["body"].inputs[0].type.dtype.value == "int16" for n in g.nodes)
    got = tvm_cuda.build_for_cpu(g, Target.parse("cuda -arch=sm_90"))(x)
    np.testing.assert_array_equal(got[0], interp.run(g, x)[0])


@pytest.mark.slow
def test_float16_convs_carry_their_epilogues():
    """--precision fp16: the SiLU, the ReLU and the residual add are computed in their convs' write-back (body.compose's
    float16 scalar forms, as the CPU's fused kernels use them); the last conv, whose body ends in a cast to float32
    for the float32 mean, writes its float16 result widened (it was lowered op by op)."""
    model, xs = _cnn()
    target = "cuda -arch=sm_90"
    g, _ = final_ir(model, target, example_inputs=(torch.from_numpy(xs[0]),), precision="fp16")
    got = tvm_cuda.build_for_cpu(g, Target.parse(target))(xs[0])[0]
    want = interp.run(g, xs[0])[0]
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2 * np.abs(want).max())
    exe = BACKEND.build(g, Target.parse(target))
    kernels = exe.kernels()
    assert sum(k.startswith("f16_conv2d") for k in kernels) == 4, kernels
    assert not any("sigmoid" in k or "multiply" in k or "maximum" in k for k in kernels), kernels
    convs = [n for n in g.nodes if n.op is kernel.fused and n.attrs["kernel"] == "conv"]
    assert convs[-1].outputs[0].type.rank == 5 and convs[-1].outputs[0].type.dtype.value == "float32"


@pytest.mark.slow
def test_a_float16_resnet_tail_stays_blocked_into_its_global_average_pool():
    """--precision fp16, ResNet's tail (convs, then a global average pool in float32): the last conv writes its
    float16 result widened to float32 in channel blocks, the pool reads the blocks, and nothing between the image's
    pack and the pool converts a layout; the GPU program built for the CPU matches the interpreter."""
    model = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 1, 1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    target = "cuda -arch=sm_90"
    g, _ = final_ir(model, target, example_inputs=(torch.from_numpy(x),), precision="fp16")
    want = interp.run(g, x)[0]
    np.testing.assert_allclose(tvm_cuda.build_for_cpu(g, Target.parse(target))(x)[0], want, rtol=1e-2,
                               atol=1e-2 * np.abs(want).max())
    launches = BACKEND.build(g, Target.parse(target)).launches()
    assert [k for k in launches if "conv2d" in k] == ["f16_conv2d_0", "f16_conv2d_1"], launches
    assert any("global_avg_pool2d" in k for k in launches), launches
    assert not any("unpack" in k or k.startswith("reshape") for k in launches), launches


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn", "encoder", "detector"])
def test_the_gpu_checks_models_are_bit_exact_in_int8_on_the_cpu(name, tmp_path):
    """benchmarks/gpu_prepare.py's ResNet-18, BERT-small and YOLOv8n, integer-only for cuda: the GPU program
    (fused epilogues, the GPU's chains, the convs on NCHW{16}c) built for the CPU equals the interpreter bit for bit."""
    from benchmarks.gpu_prepare import inputs, torch_model
    from examples.zoo import export_onnx
    xs = inputs(name, 1, 0)
    example = tuple(torch.from_numpy(x) for x in xs)
    path = export_onnx(torch_model(name), example if len(example) > 1 else example[0], tmp_path / f"{name}.onnx")
    target = "cuda -arch=sm_90"
    g, _ = final_ir(str(path), target, quantize="int8", integer_only=True,
                    calibration=[inputs(name, 1, 100 + i) for i in range(2)])
    blocked = sum(n.op is kernel.fused and n.attrs["kernel"] == "qconv" and n.outputs[0].type.rank == 5
                  for n in g.nodes)
    assert blocked >= (0 if name == "encoder" else 19), blocked        # the GPU layouts' NCHW{16}c convs
    got = tvm_cuda.build_for_cpu(g, Target.parse(target))(*xs)
    for a, b in zip(got, interp.run(g, *xs)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_b0", "yolov8n"])
def test_float16_epilogues_are_no_less_accurate_than_op_by_op(name):
    """--precision fp16 on the real architectures with SiLU / squeeze-excite epilogues: the fused convs' GPU program
    (built for the CPU) is as close to the interpreter's float16 program as the op-by-op one is. Each fused op is
    evaluated in float32 and rounded to float16 (body.compose's `compute`): computed in float16 itself, SiLU's
    rational sigmoid drifted (EfficientNet-B0: 0.77 of the output's largest value vs 0.35 op by op)."""
    from benchmarks.common import CACHE
    from examples.real_arch import export_onnx
    path = export_onnx(name, CACHE / "real_arch" / f"{name}.onnx")[0]
    err = {}
    for off in ((), ("fuse_kernels",)):
        g, _ = final_ir(str(path), "cuda -arch=sm_90", precision="fp16", disable_passes=off)
        x = np.random.default_rng(0).standard_normal(g.inputs[0].type.shape).astype(np.float32)
        want = interp.run(g, x)[0].astype(np.float32)
        got = tvm_cuda.build_for_cpu(g, Target.parse("cuda -arch=sm_90"))(x)[0].astype(np.float32)
        err[off] = float(np.abs(got - want).max() / np.abs(want).max())
    assert err[()] <= 1.2 * err[("fuse_kernels",)] + 2e-3, err


@pytest.mark.parametrize("blocked", [False, True])
def test_per_channel_requant_parameters_at_their_bounds_are_bit_exact(blocked):
    """The write-back reads a per-channel requant's (multiplier, shift) as int32 and computes its rounding term
    2^(shift-1): multipliers 0, 1 and 2^31 - 1, shifts 0 (no rounding term), 1 and 62, bit-exact with the
    interpreter on NCHW and NCHW{16}c; the CUDA conv kernel takes no int64 tensor."""
    from compiler.ir import Graph
    from compiler.ops import quant as q
    from compiler.types import DType, TensorType
    from passes.fusion import fuse
    from passes.layout import assign, gpu_kernel_layout
    rng = np.random.default_rng(3)
    g = Graph()
    x = g.add_input("x", TensorType((2, 16, 6, 6), DType.U8))
    w = g.const(rng.integers(-127, 128, (16, 16, 3, 3)).astype(np.int8), "w")
    b = g.const(rng.integers(-2**20, 2**20, 16).astype(np.int32), "b")
    c = g.add1(q.conv, [x, w, b], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), groups=1, x_zero_point=7)
    mult = [0, 1, 2**31 - 1, 2**31 - 1, 1 << 30, 12345, 2**31 - 1, 3] + [int(v) for v in rng.integers(1, 2**31, 8)]
    shift = [0, 1, 62, 0, 1, 20, 40, 5] + [int(v) for v in rng.integers(44, 50, 8)]
    g.outputs = [g.add1(q.requant, [c], multiplier=tuple(mult), shift=tuple(shift), zero_point=-3, in_zero_point=0,
                        qmin=-128, qmax=127, dtype=DType.I8, axis=1)]
    fg = fuse(g)[0]
    if blocked:
        fg = assign(fg, gpu_kernel_layout)
    convs = [n for n in fg.nodes if n.op is kernel.fused and n.attrs["kernel"] == "qconv"]
    assert len(convs) == 1 and (convs[0].outputs[0].type.rank == 5) == blocked
    xs = rng.integers(0, 256, (2, 16, 6, 6)).astype(np.uint8)
    want = interp.run(fg, xs)[0]
    assert len(np.unique(want)) > 20                        # neither all clipped nor all zero
    np.testing.assert_array_equal(tvm_cuda.build_for_cpu(fg, Target.parse("cuda -arch=sm_90"))(xs)[0], want)
    src = BACKEND.build(fg, Target.parse("cuda -arch=sm_90")).cuda_source()
    params = re.search(r'__global__ void (?:__launch_bounds__\(\d+\) )?int8_conv2d\w*\((.*?)\)', src).group(1)
    assert "int64_t*" not in params and "int*" in params, params
