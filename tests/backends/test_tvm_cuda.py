"""The TVM backend's cuda target: every graph compiles for sm_80 and sm_90 with no GPU, all
loops land in __global__ kernels, nvcc's PTX assembles with ptxas, and run() explains that a GPU
is needed. The `gpu` test runs the graphs on a GPU against compiler.interp."""
from __future__ import annotations

import functools
import shutil

import numpy as np
import pytest

pytest.importorskip("tvm")


from compiler import interp
from compiler.backends import tvm_cuda
from compiler.backends.tvm import BACKEND
from compiler.diagnostics import Unsupported
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import linalg, nn, shape
from compiler.ops import quant as q
from compiler.ops import reduce as rd
from compiler.target import Target
from compiler.types import DType, TensorType
from tests.ptxas import assemble

F32, I8, U8, I32 = DType.F32, DType.I8, DType.U8, DType.I32
ARCHS = ("sm_80", "sm_90")


def cnn() -> Graph:
    rng = np.random.default_rng(0)
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 16, 16), F32))
    w = g.const(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w")
    b = g.const(rng.standard_normal(8).astype(np.float32) * 0.1, "b")
    y = g.add1(linalg.conv, [x, w, b], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), groups=1)
    y = g.add1(ew.relu, [y])
    y = g.add1(nn.max_pool, [y], kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0), dilations=(1, 1))
    y = g.add1(rd.reduce_mean, [y], axes=(2, 3), keepdims=False)                      # (1, 8)
    fc = g.const(rng.standard_normal((8, 10)).astype(np.float32) * 0.3, "fc")
    y = g.add1(linalg.matmul, [y, fc])
    g.outputs = [g.add1(nn.softmax, [y], axis=-1)]
    return g


def transformer() -> Graph:
    rng = np.random.default_rng(1)
    s, d = 16, 32
    g = Graph()
    x = g.add_input("x", TensorType((1, s, d), F32))
    wq = g.const(rng.standard_normal((d, d)).astype(np.float32) * 0.2, "wq")
    bq = g.const(rng.standard_normal(d).astype(np.float32) * 0.1, "bq")
    h = g.add1(ew.add, [g.add1(linalg.matmul, [x, wq]), bq])
    h = g.add1(nn.layer_norm, [h, g.const(np.ones(d, np.float32), "gamma"),
                               g.const(np.zeros(d, np.float32), "beta")], axis=-1, epsilon=1e-5)
    h = g.add1(ew.gelu, [h])
    kt = g.add1(shape.transpose, [h], perm=(0, 2, 1))                                 # (1, d, s)
    att = g.add1(nn.softmax, [g.add1(linalg.matmul, [h, kt])], axis=-1)              # (1, s, s)
    g.outputs = [g.add1(ew.add, [g.add1(linalg.matmul, [att, h]), x])]
    return g


def integer() -> Graph:
    rng = np.random.default_rng(2)
    g = Graph()
    x = g.add_input("x", TensorType((1, 4, 8, 8), F32))
    xq = g.add1(q.quantize, [x], scale=0.05, zero_point=3, dtype=I8, qmin=-128, qmax=127)
    w = g.const(rng.integers(-127, 128, (8, 4, 3, 3)).astype(np.int8), "w")
    b = g.const(rng.integers(-1000, 1000, 8).astype(np.int32), "b")
    acc = g.add1(q.conv, [xq, w, b], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), groups=1,
                 x_zero_point=3)
    mult, sh = q.dyadic(0.05 * 0.01 / 0.1)
    y = g.add1(q.requant, [acc], multiplier=(mult,), shift=(sh,), zero_point=-2, in_zero_point=0,
               qmin=-128, qmax=127, dtype=I8, axis=1)
    y = g.add1(shape.reshape, [y], shape=(8, 64))
    w2 = g.const(rng.integers(-127, 128, (64, 16)).astype(np.int8), "w2")
    acc2 = g.add1(q.matmul, [y, w2], a_zero_point=-2, b_zero_point=0)
    g.outputs = [g.add1(q.dequantize, [acc2], scale=(0.001,), zero_point=(0,), axis=1), acc2]
    return g


GRAPHS = {"cnn": cnn, "transformer": transformer, "integer": integer}


@functools.cache
def built(name: str, arch: str):
    g = GRAPHS[name]()
    return g, BACKEND.build(g, Target("cuda", arch=arch))


def inputs(g: Graph) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]


def primfuncs(exe) -> list[str]:
    """The PrimFuncs of the scheduled module (the Relax `main` excluded)."""
    return [ln.split("def ")[1].split("(")[0] for ln in exe.source("tir").splitlines()
            if ln.startswith("    def ") and not ln.startswith("    def main(")]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", list(GRAPHS))
def test_compiles_to_kernels(name, arch):
    _, exe = built(name, arch)
    assert "__global__" in exe.source("cuda")
    # one kernel per fused PrimFunc: none of them left its loops to the host
    funcs, kernels = primfuncs(exe), exe.kernels()
    assert funcs
    assert sorted(kernels) == sorted(f"{f}_kernel" for f in funcs), (funcs, kernels)


def test_host_has_no_kernel_loops():
    _, exe = built("cnn", "sm_90")
    host = exe._module.imports[0]
    assert host.kind == "llvm"
    ll = host.inspect_source("ll")
    # the host only packs arguments and launches: no float arithmetic loops
    assert "fmul" not in ll and "fadd" not in ll and "llvm.exp" not in ll


@pytest.mark.parametrize("name", list(GRAPHS))
def test_ptx_assembles(name):
    _, exe = built(name, "sm_90")
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed")
    ptx = exe.source("ptx")
    assert ".target sm_90" in ptx
    assert ptx.count(".entry") == len(exe.kernels())
    assert exe.source("ptx") is ptx            # cached
    assemble(ptx)


def test_ptx_sm80():
    _, exe = built("integer", "sm_80")
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed")
    assert ".target sm_80" in exe.source("ptx")


def test_integer_pow_is_bound_to_threads():
    """The hand-written (block-free, parallel-loop) integer pow becomes a GPU kernel too."""
    g = Graph()
    a = g.add_input("a", TensorType((3, 5), I32))
    g.outputs = [g.add1(ew.pow_, [a, g.const(np.full((3, 5), 3, np.int32), "e")])]
    exe = BACKEND.build(g, Target("cuda", arch="sm_80"))
    assert any(k.startswith("int_pow") for k in exe.kernels()), exe.kernels()


def test_unlowerable_rule_schedule_falls_back():
    """dlight places a cross-thread reduction in this grouped, dilated conv_transpose that TVM
    cannot lower; that PrimFunc is rescheduled with Fallback alone."""
    g = Graph()
    x = g.add_input("x", TensorType((2, 4, 4, 5), F32))
    w = g.const(np.random.default_rng(0).standard_normal((4, 2, 3, 2)).astype(np.float32), "w")
    g.outputs = [g.add1(linalg.conv_transpose, [x, w], strides=(1, 2), pads=(0, 1, 2, 0),
                        dilations=(2, 1), groups=2, output_padding=(0, 1))]
    exe = BACKEND.build(g, Target("cuda", arch="sm_90"))
    assert sorted(exe.kernels()) == sorted(f"{f}_kernel" for f in primfuncs(exe))


@pytest.mark.skipif(tvm_cuda.gpu_available(), reason="this host has a GPU")
def test_run_without_gpu_is_unsupported(tmp_path):
    g, exe = built("cnn", "sm_80")
    with pytest.raises(Unsupported, match="needs an NVIDIA GPU"):
        exe.run(inputs(g))
    lib = exe.library_bytes()
    assert lib and lib == BACKEND.build(cnn(), Target("cuda", arch="sm_80")).library_bytes()
    loaded = BACKEND.load(lib, None, Target("cuda", arch="sm_80"))    # no crash at load
    with pytest.raises(Unsupported, match="needs an NVIDIA GPU"):
        loaded.run(inputs(g))


def test_artifact_roundtrip(tmp_path):
    import compiler.runtime as rt
    from compiler.runtime import CompiledModel, Signature
    g, exe = built("integer", "sm_80")
    cm = CompiledModel(exe, Signature.of(g), Target("cuda", arch="sm_80"), "tvm", str(g))
    path = cm.save(tmp_path / "m.dyc")
    back = rt.load(path)
    assert str(back.target) == "cuda -arch=sm_80"
    if not tvm_cuda.gpu_available():
        with pytest.raises(Unsupported, match="needs an NVIDIA GPU"):
            back.run(*inputs(g))


def test_emit_errors():
    _, exe = built("cnn", "sm_80")
    assert "def main" in exe.source("relax")
    with pytest.raises(Unsupported):
        exe.source("mlir")
    cpu = BACKEND.build(cnn(), Target("llvm", num_threads=1))
    with pytest.raises(Unsupported, match="--target cuda"):
        cpu.source("cuda")
    with pytest.raises(Unsupported, match="architecture"):
        BACKEND.build(cnn(), Target("cuda", arch="sm_20"))


@pytest.mark.gpu
@pytest.mark.skipif(not tvm_cuda.gpu_available(), reason="needs an NVIDIA GPU (tvm.cuda(0).exist)")
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", list(GRAPHS))
def test_runs_on_gpu(name, arch):
    g, exe = built(name, arch)
    xs = inputs(g)
    want = interp.run(g, *xs)
    for _ in range(2):                         # the second run reuses the VM
        got = exe.run(xs)
        for w, o in zip(want, got):
            assert o.shape == w.shape and o.dtype == w.dtype
            if w.dtype.kind == "f":
                np.testing.assert_allclose(o, w, rtol=1e-4, atol=1e-4)
            else:
                np.testing.assert_array_equal(o, w)
    loaded = BACKEND.load(exe.library_bytes(), None, Target("cuda", arch=arch))
    for w, o in zip(want, loaded.run(xs)):
        np.testing.assert_allclose(o, w, rtol=1e-4, atol=1e-4)


def test_input_names_that_are_not_c_identifiers_give_ptx(tmp_path):
    """ONNX inputs may be called `gpu_0/data_0` (the model zoo does): the generated kernels name their
    parameters after the inputs, so the names become C identifiers first."""
    rng = np.random.default_rng(2)
    g = Graph()
    x = g.add_input("gpu_0/data_0", TensorType((1, 3, 8, 8), F32))
    w = g.const(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    g.outputs = [g.add1(ew.relu, [g.add1(linalg.conv, [x, w], strides=(1, 1), pads=(1, 1, 1, 1),
                                          dilations=(1, 1), groups=1)])]
    exe = BACKEND.build(g, Target.parse("cuda -arch=sm_90"))
    assert "gpu_0/data_0" not in exe.source("cuda")
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed")
    assert ".entry" in exe.source("ptx")


def test_nvcc_errors_come_first():
    msg = "Compilation error:\nnvcc -O3 ...\nkernels.cu(95): error: expected a \")\"\nmore context"
    assert tvm_cuda.nvcc_error(msg).splitlines()[:2] == ["Compilation error:",
                                                         'kernels.cu(95): error: expected a ")"']


def test_fp16_convs_of_64_channels_use_tensor_cores():
    """dlight tensorizes only above 64 rows / columns / reduction; our rule puts every float16 conv on
    tensor cores (a 64-channel conv and a 3-channel stem here), mma.sync m16n8k16 with float32 accumulators
    (WMMA's m16n16k16 with -mma=wmma)."""
    from passes.fp16 import convert_fp16
    rng = np.random.default_rng(0)
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 32, 32), F32))
    y = x
    for i, (ci, co) in enumerate([(3, 64), (64, 64)]):
        w = g.const(rng.standard_normal((co, ci, 3, 3)).astype(np.float32) * 0.1, f"w{i}")
        y = g.add1(ew.relu, [g.add1(linalg.conv, [y, w], strides=(1, 1), pads=(1, 1, 1, 1),
                                    dilations=(1, 1), groups=1)])
    g.outputs = [y]
    for option, markers in (("", ("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", "ldmatrix.sync")),
                            (" -mma=wmma", ("wmma::mma_sync", "wmma::accumulator, 16, 16, 16, float"))):
        src = BACKEND.build(convert_fp16(g), Target.parse("cuda -arch=sm_90" + option)).cuda_source()
        bodies = [k for k in src.split('extern "C" __global__')[1:] if "{" in k.split("\n")[0]]
        convs = {tvm_cuda.KERNEL_RE.search("__global__" + k).group(1): k for k in bodies
                 if "_conv2d" in k.split("(")[1]}
        assert len(convs) == 2, list(convs)
        for name, body in convs.items():
            assert all(m in body for m in markers), (option, name)
