"""The GPU's I-LayerNorm (compiler/backends/tvm_kernels/cuda_ivit.py): on cuda q.layernorm is one kernel, a block per
row, the Newton square root and the factor's division once per row (dlight's reduction schedule had inlined them into
every element: eleven 64-bit divisions an element).

Its arithmetic is checked without a GPU: the GPU program of a graph (tvm_cuda.build_for_cpu: the same TVMScript with
serial loops and global buffers) equals the interpreter bit for bit over int8 / uint8 / int16 inputs, every output
type, rows whose length the block's threads do not divide, constant rows (variance 0), shift 0 and clamped outputs;
the cuda build is that one kernel with two divisions, and ptxas assembles it without spills. Shiftmax (its TE
lowering, fused with the requant after it) divides by its row sum in 32 bits where its dividend has 31, and a short
row is read whole by each output (a thread per output), bit-exact."""
from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from compiler import interp  # noqa: E402
from compiler.backends import tvm_cuda  # noqa: E402
from compiler.backends.tvm import BACKEND  # noqa: E402
from compiler.backends.tvm_kernels import cuda_ivit  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import ivit  # noqa: E402
from compiler.ops.quant import INT_RANGE  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402
from tests.ptxas import assemble, usage  # noqa: E402

TARGET = Target.parse("cuda -arch=sm_90")
LOW = {DType.I8: -128, DType.U8: 0, DType.I16: -3000}
HIGH = {DType.I8: 128, DType.U8: 256, DType.I16: 3000}


def _graph(shape, dtype, out=DType.I8, shift=20, zp=0, seed=0, mult_bits=20):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    g = Graph()
    x = g.add_input("x", TensorType(shape, dtype))
    m = g.const(rng.integers(-2**mult_bits, 2**mult_bits, c).astype(np.int32), "m")
    b = g.const(rng.integers(-2**(shift + 6), 2**(shift + 6), c).astype(np.int64), "b")
    lo, hi = INT_RANGE[out]
    g.outputs = [g.add1(ivit.layernorm, [x, m, b], shift=shift, zero_point=zp, qmin=lo, qmax=hi, dtype=out)]
    return g


def _feed(shape, dtype, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.integers(LOW[dtype], HIGH[dtype], shape).astype(dtype.numpy)
    x[(0,) * (len(shape) - 1)] = x.reshape(-1)[0]          # a constant row: variance 0, factor (2^31-1) // 64
    return x


@pytest.mark.parametrize("shape,dtype,out,shift,zp", [
    ((2, 128, 512), DType.I8, DType.I8, 20, 0),
    ((3, 5, 96), DType.I16, DType.I16, 16, 0),
    ((7, 768), DType.U8, DType.U8, 22, 128),
    ((4, 100), DType.I8, DType.I32, 0, 0),            # shift 0, no rounding term; 100 over 32 threads
    ((6, 1), DType.I8, DType.I8, 12, 5),              # rows of one value
    ((2, 3, 300), DType.I16, DType.I8, 24, -3),       # 300 over 128 threads, clamped output
])
def test_gpu_layernorm_is_the_reference_bit_for_bit(shape, dtype, out, shift, zp):
    g = _graph(shape, dtype, out, shift, zp)
    x = _feed(shape, dtype)
    got = tvm_cuda.build_for_cpu(g, TARGET)(x)[0]
    ref = interp.run(g, x)[0]
    assert got.dtype == ref.dtype and np.array_equal(got, ref)
    if out is DType.I8 and shape[-1] > 1:
        assert len(np.unique(ref)) > 20                 # the test data spans the output range


def test_gpu_layernorm_is_one_kernel_that_divides_once_per_row():
    """One launch, its block's threads about a quarter of the row; the only divisions are the Newton step's and the
    factor's, both under `threadIdx.x == 0`."""
    exe = BACKEND.build(_graph((32, 128, 512), DType.I8), TARGET)
    src = exe.source("cuda")
    kernels = re.findall(r"__global__ void __launch_bounds__\((\d+)\) (\w+)\([^;{]*\)\s*\{", src)
    assert [(int(n), k.startswith("layernorm")) for n, k in kernels] == [(128, True)]
    assert cuda_ivit.threads(512) == 128
    body = src.split("__launch_bounds__(128) layernorm")[-1]
    assert body.count(" / ") == 2, "a division per element"
    regs, spills = usage(assemble(exe.source("ptx")), "layernorm_0_kernel")
    assert spills == 0 and regs <= 64


def test_threads_per_row():
    assert [cuda_ivit.threads(c) for c in (1, 96, 128, 384, 512, 768, 1024, 4096)] == [32, 32, 32, 128, 128, 256,
                                                                                         256, 256]



def _shiftmax_graph(shape, dtype, out, scale, n, bits):
    g = Graph()
    x = g.add_input("x", TensorType(shape, dtype))
    g.outputs = [g.add1(ivit.shiftmax, [x], scale=scale, axis=-1, n=n, dtype=out, dividend_bits=bits)]
    return g


@pytest.mark.parametrize("shape,dtype,out,scale,n,bits", [
    ((2, 4, 128, 128), DType.I16, DType.U8, 0.01, 15, 31),
    ((3, 100), DType.I8, DType.I8, 0.05, 10, 31),
    ((2, 77), DType.I16, DType.I32, 0.002, 8, 31),
    ((5, 300), DType.I16, DType.I16, 0.004, 12, 40),
    ((40, 16), DType.I8, DType.U8, 0.05, 10, 31),           # short rows (YOLOv8n's DFL: 16 bins)
    ((2, 3, 32, 32), DType.I16, DType.I16, 0.004, 12, 40),
])
def test_gpu_shiftmax_divides_in_32_bits_where_its_dividend_has_31(shape, dtype, out, scale, n, bits):
    """Shiftmax's factor (2^D - 1) // min(sum, 2^31 - 1), which dlight's schedule computes in every element: with
    D = 31 both operands are positive int32s and the division is a 32-bit one (a 64-bit division is emulated on a
    GPU). A row of at most SHORT_ROW values is read whole by each output, a thread per output with no reduction
    (no shared memory), where dlight gave every row a block of 256 threads. The GPU program is the reference bit
    for bit either way."""
    from compiler.backends.tvm_lower.ivit import SHORT_ROW
    g = _shiftmax_graph(shape, dtype, out, scale, n, bits)
    src = BACKEND.build(g, TARGET).source("cuda")
    assert ("2147483647 / ((int)" in src) == (bits == 31) and "(int64_t)2147483647 / " not in src
    assert ("__shared__" in src) == (shape[-1] > SHORT_ROW)
    x = _feed(shape, dtype)
    got = tvm_cuda.build_for_cpu(g, TARGET)(x)[0]
    ref = interp.run(g, x)[0]
    assert got.dtype == ref.dtype and np.array_equal(got, ref) and len(np.unique(ref)) > 10
