"""Matmuls of two int8 / uint8 activations on cuda (an attention's Q K^T and P V; compiler/backends/tvm_lower/cuda_gemm.py
`batch_matmul`): a GEMM per batch entry on the int8 inner product, the operands read as they are (the generic
lowering made int32 copies of both for an int32 SIMT matmul), int8 x int8 on mma.sync, uint8 x int8 with dp4a; in a
fused kernel with its requant epilogue, and with Q K^T's transpose of K read in place.

Checked without a GPU: the GPU program built for the CPU (tvm_cuda.build_for_cpu) equals the interpreter bit for
bit, over shapes the tiles do not divide and reductions that are not a multiple of 16; the cuda build's kernels and
their instructions; ptxas assembles them without spills."""
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
from compiler.ir import Graph  # noqa: E402
from compiler.ops import quant as q  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402
from tests.ptxas import assemble, usage  # noqa: E402

TARGET = Target.parse("cuda -arch=sm_90")


def _graph(lead, m, k, n, a_dtype):
    g = Graph()
    a = g.add_input("a", TensorType(lead + (m, k), a_dtype))
    b = g.add_input("b", TensorType(lead + (k, n), DType.I8))
    g.outputs = [g.add1(q.matmul, [a, b])]
    return g


def _feeds(g, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0 if v.type.dtype is DType.U8 else -128, 256 if v.type.dtype is DType.U8 else 128,
                         v.type.shape).astype(v.type.dtype.numpy) for v in g.inputs]


@pytest.mark.parametrize("lead,m,k,n,a_dtype", [
    ((2, 3), 40, 24, 50, DType.I8),        # K not a multiple of 16; rows and columns not of the tile
    ((2, 3), 40, 50, 20, DType.U8),        # P V: uint8 probabilities
    ((4,), 128, 64, 128, DType.I8),
    ((1, 2), 7, 5, 3, DType.U8),
])
def test_batch_matmul_of_two_activations_is_the_reference_bit_for_bit(lead, m, k, n, a_dtype):
    g = _graph(lead, m, k, n, a_dtype)
    feeds = _feeds(g)
    got = tvm_cuda.build_for_cpu(g, TARGET)(*feeds)[0]
    want = interp.run(g, *feeds)[0]
    assert got.dtype == want.dtype == np.int32 and np.array_equal(got, want)


def test_the_cuda_build_is_one_gemm_each_on_the_int8_inner_product():
    g = Graph()
    a = g.add_input("a", TensorType((2, 8, 128, 64), DType.I8))
    b = g.add_input("b", TensorType((2, 8, 64, 128), DType.I8))
    p = g.add_input("p", TensorType((2, 8, 128, 128), DType.U8))
    v = g.add_input("v", TensorType((2, 8, 128, 64), DType.I8))
    g.outputs = [g.add1(q.matmul, [a, b]), g.add1(q.matmul, [p, v])]
    exe = BACKEND.build(g, TARGET)
    assert exe.launches() == ["int8_batch_matmul_0", "int8_batch_matmul_1"]      # no int32 copies of the operands
    src = exe.source("cuda")
    kernels = re.split(r'extern "C" __global__', src)
    qk = next(k for k in kernels if "int8_batch_matmul_0_kernel(" in k and "{" in k)
    pv = next(k for k in kernels if "int8_batch_matmul_1_kernel(" in k and "{" in k)
    assert "mma.sync.aligned.m16n8k32" in qk and "__dp4a" in pv
    report = assemble(exe.source("ptx"))
    for name in ("int8_batch_matmul_0_kernel", "int8_batch_matmul_1_kernel"):
        assert usage(report, name)[1] == 0, name


def _encoder_final_ir():
    from examples.zoo import BertEncoder
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    xs = [rng.integers(0, 50, (2, 16)).astype(np.int64) for _ in range(3)]
    model = BertEncoder(vocab=50, hidden=64, heads=2, ffn=128, layers=1, seq=16).eval()
    g, _ = final_ir(model, "cuda -arch=sm_90", example_inputs=(torch.from_numpy(xs[0]),), quantize="int8",
                    integer_only=True, calibration=[[x] for x in xs[1:]])
    return g, xs[0]


def test_an_integer_encoders_attention_matmuls_are_fused_gemms_with_their_requant():
    """Q K^T (its K^T a transpose inside the fused kernel, read in place) and P V each one launch that writes the
    requantized result; the whole GPU program is bit-exact."""
    g, x = _encoder_final_ir()
    exe = BACKEND.build(g, TARGET)
    launches = exe.launches()
    bmm = [name for name in launches if name.startswith("int8_batch_matmul")]
    assert len(bmm) == 2, launches
    assert not any("requant" in name and "shiftmax" not in name for name in launches[launches.index(bmm[0]):
                                                                                       launches.index(bmm[1])]), launches
    relax_text = exe.source("relax")
    for name in bmm:
        out = re.search(rf"cls\.{name}, .*?out_ty=R\.Tensor\(\([^)]*\), dtype=\"(\w+)\"", relax_text).group(1)
        assert out in ("int8", "int16"), (name, out)       # the requantized scores / context, not an int32 sum
    got = tvm_cuda.build_for_cpu(g, TARGET)(x)
    for a, b in zip(got, interp.run(g, x)):
        np.testing.assert_array_equal(a, b)
