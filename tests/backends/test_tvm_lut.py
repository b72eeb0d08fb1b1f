"""The LUT GEMM kernel (tvm_kernels/lut_gemm.py) and the q.lut_matmul lowering: bit-exact with the interpreter
on random shapes (hypothesis), vpshufb in the kernel's assembly, the TE lowering (targets without AVX-512)
exact too, and a model compiled with lut=4 runs as its final IR says."""
from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from compiler import interp  # noqa: E402
from compiler.backends.tvm import BACKEND  # noqa: E402
from compiler.backends.tvm_kernels import lut_gemm as K  # noqa: E402
from compiler.backends.tvm_kernels.common import host_target  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import lut as L  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402

TGT = host_target(1)
HAS_AVX512BW = "avx512bw" in open("/proc/cpuinfo").read()
needs_avx512 = pytest.mark.skipif(not HAS_AVX512BW, reason="the LUT kernel needs AVX-512 BW")
PROPERTY = settings(max_examples=8, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _layer(rng, rows, k, n, bits, group, adt):
    info = np.iinfo(adt)
    a = rng.integers(info.min, info.max + 1, (rows, k)).astype(adt)
    planes = L.pack_planes(rng.integers(0, 1 << bits, (k, n)), bits, group)
    ng = L.padded_k(k, group) // group
    return a, planes, rng.integers(1, 100, (ng, n)).astype(np.int16), \
        rng.integers(0, 1 << bits, (ng, n)).astype(np.uint8)


def _graph(a, planes, u, z, bits, group, table, zp, bias=None):
    g = Graph()
    x = g.add_input("a", TensorType(a.shape, DType(str(a.dtype))))
    consts = [g.const(planes, "planes"), g.const(u, "scales"), g.const(z, "zeros")]
    if bias is not None:
        consts.append(g.const(bias, "bias"))
    g.outputs = [g.add1(L.lut_matmul, [x, *consts], bits=bits, group_size=group, table=table, a_zero_point=zp)]
    return g


@needs_avx512
@PROPERTY
@given(rows=st.integers(1, 5), k=st.integers(1, 300), n=st.integers(1, 80), bits=st.integers(1, 4),
       group=st.sampled_from([16, 32, 64, 128]), table=st.sampled_from(["int8", "int16"]),
       adt=st.sampled_from(["int8", "uint8"]), seed=st.integers(0, 2**16))
def test_lut_kernel_bit_exact_vs_interp(rows, k, n, bits, group, table, adt, seed):
    rng = np.random.default_rng(seed)
    zp = int(rng.integers(0, 256)) if adt == "uint8" else int(rng.integers(-20, 20))
    a, planes, u, z = _layer(rng, rows, k, n, bits, group, adt)
    bias = rng.integers(-10**6, 10**6, n).astype(np.int32)
    want = interp.run(_graph(a, planes, u, z, bits, group, table, zp, bias), a)[0]
    spec = K.LutSpec(rows, k, n, bits, group, table, adt, zp)
    lib = tvm.compile(tvm.IRModule({"main": K.make_lut_gemm(spec).with_attr("global_symbol", "main")}), target=TGT)
    args = [tvm.runtime.tensor(v) for v in (a, K.pack_weight(spec, planes), K.pack_groups(spec, u, "int16"),
                                            K.pack_groups(spec, z, "uint8"), K.pack_bias(spec, bias))]
    out = tvm.runtime.empty(K.out_shape(spec), "int32")
    lib["main"](*args, out)
    np.testing.assert_array_equal(out.numpy()[:, :n], want)


@needs_avx512
def test_lut_kernel_looks_up_with_vpshufb():
    spec = K.LutSpec(1, 256, 64, 4, 64, "int8", "int8", 0)
    lib = tvm.compile(tvm.IRModule({"main": K.make_lut_gemm(spec).with_attr("global_symbol", "main")}), target=TGT)
    asm = lib.mod.inspect_source("asm")
    assert "vpshufb" in asm and "zmm" in asm


def test_kernel_weight_is_packed():
    """The kernel's weight holds b bits per weight: 4-bit half the bytes of int8, 2-bit a quarter."""
    k, n = 512, 96
    for bits, frac in ((4, 0.5), (2, 0.25), (1, 0.125)):
        spec = K.LutSpec(1, k, n, bits, 128)
        planes = L.pack_planes(np.zeros((k, n), np.int64), bits, 128)
        assert K.pack_weight(spec, planes).nbytes == frac * k * n == planes.nbytes


@pytest.mark.parametrize("table", ["int8", "int16"])
def test_lowering_exact_with_and_without_the_kernel(table):
    """Through the backend: the LUT kernel on this CPU, the TE lowering for a CPU without AVX-512 (x86-64-v3),
    both equal to the interpreter."""
    rng = np.random.default_rng(7)
    a, planes, u, z = _layer(rng, 3, 100, 40, 3, 32, "uint8")
    g = _graph(a.reshape(1, 3, 100), planes, u, z, 3, 32, table, 9, rng.integers(-999, 999, 40).astype(np.int32))
    want = interp.run(g, a.reshape(1, 3, 100))[0]
    targets = [Target("llvm", mcpu="x86-64-v3", num_threads=1)] + ([Target("llvm", num_threads=1)]
                                                                    if HAS_AVX512BW else [])
    for target in targets:
        got = BACKEND.build(g, target).run([a.reshape(1, 3, 100)])[0]
        np.testing.assert_array_equal(got, want)


def test_compile_with_lut_runs_its_final_ir():
    """compile(quantize="int8", lut=4) on a small float MLP: every linear layer is a q.lut_matmul and the
    executable's output equals the interpreter's on the final IR."""
    import compiler
    from compiler.ops import elementwise as ew, linalg
    rng = np.random.default_rng(0)
    g = Graph()
    x = g.add_input("x", TensorType((4, 64), DType.F32))
    h = x
    for k, n in ((64, 96), (96, 10)):
        h = g.add1(linalg.matmul, [h, g.const(rng.normal(0, 0.2, (k, n)).astype(np.float32))])
        h = g.add1(ew.add, [h, g.const(rng.normal(0, 0.1, n).astype(np.float32))])
        if n != 10:
            h = g.add1(ew.relu, [h])
    g.outputs = [h]
    calib = [[rng.normal(0, 1, (4, 64)).astype(np.float32)] for _ in range(4)]
    cm = compiler.compile(g, "llvm -num-threads=1", quantize="int8", calibration=calib, lut=4)
    assert cm.graph.op_histogram().get("q.lut_matmul", 0) == 2 and len(cm.report.lut) == 2
    xin = calib[0][0]
    np.testing.assert_array_equal(cm.run(xin)[0], interp.run(cm.graph, xin)[0])
