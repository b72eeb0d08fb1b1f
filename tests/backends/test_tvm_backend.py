"""The TVM backend end to end: a small CNN against the interpreter, deterministic library
bytes, load, emitted sources, unsupported targets and ops."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")

from compiler import interp  # noqa: E402
from compiler.backends.tvm import BACKEND, emit_relax  # noqa: E402
from compiler.diagnostics import Unsupported  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import elementwise as ew  # noqa: E402
from compiler.ops import linalg, nn  # noqa: E402
from compiler.ops import reduce as rd  # noqa: E402
from compiler.ops import shape as sh  # noqa: E402
from compiler.ops.registry import OpDef  # noqa: E402
from compiler.runtime import Signature  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402
from tests.backends.kernel_ir import build  # noqa: E402

TARGET = Target("llvm")


def small_cnn() -> Graph:
    """conv (BN folded into weights and bias) -> relu -> max_pool -> conv -> relu -> global mean
    -> matmul -> softmax."""
    rng = np.random.default_rng(0)
    g = Graph("cnn")
    x = g.add_input("x", TensorType((2, 3, 32, 32), DType.F32))
    w1 = g.const((rng.standard_normal((16, 3, 3, 3)) * 0.3).astype(np.float32), "w1")
    b1 = g.const(rng.standard_normal((16, 1, 1)).astype(np.float32), "b1")
    y = g.add1(linalg.conv, [x, w1], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))
    y = g.add1(ew.relu, [g.add1(ew.add, [y, b1])])
    y = g.add1(nn.max_pool, [y], kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0), dilations=(1, 1))
    w2 = g.const((rng.standard_normal((32, 16, 3, 3)) * 0.1).astype(np.float32), "w2")
    y = g.add1(ew.relu, [g.add1(linalg.conv, [y, w2], strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1))])
    y = g.add1(rd.reduce_mean, [y], axes=(2, 3), keepdims=True)
    y = g.add1(sh.reshape, [y], shape=(2, 32))
    wf = g.const(rng.standard_normal((32, 10)).astype(np.float32), "wf")
    g.outputs = [g.add1(nn.softmax, [g.add1(linalg.matmul, [y, wf])])]
    return g


@pytest.fixture(scope="module")
def cnn():
    g = small_cnn()
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    return g, x, build(g, TARGET)          # the final IR: fused kernels in blocked layouts


def test_tvm_small_cnn_matches_interpreter(cnn):
    g, x, ex = cnn
    got = ex.run([x])
    assert len(got) == 1 and got[0].shape == (2, 10)
    np.testing.assert_allclose(got[0], interp.run(g, x)[0], rtol=1e-4, atol=1e-5)


def test_tvm_library_bytes_are_deterministic(cnn):
    g, _, ex = cnn
    again = build(small_cnn(), TARGET)
    assert ex.library_bytes() == again.library_bytes()


def test_tvm_load_runs_the_saved_library(cnn):
    g, x, ex = cnn
    loaded = BACKEND.load(ex.library_bytes(), Signature.of(g), TARGET)
    np.testing.assert_array_equal(loaded.run([x])[0], ex.run([x])[0])
    with pytest.raises(Unsupported, match="needs the model"):
        loaded.source("relax")


def test_tvm_thread_count_is_honoured(cnn):
    g, x, _ = cnn
    one = BACKEND.build(g, Target("llvm", num_threads=1))
    np.testing.assert_allclose(one.run([x])[0], interp.run(g, x)[0], rtol=1e-4, atol=1e-5)
    import tvm
    assert tvm.get_global_func("runtime.NumThreads")() == 1


def test_tvm_sources(cnn):
    _, _, ex = cnn
    relax_text, tir_text, asm = ex.source("relax"), ex.source("tir"), ex.source("asm")
    assert "conv2d_nchwc" in relax_text and "T.prim_func" in tir_text and asm.strip()
    assert "T.parallel" in tir_text
    with open("/proc/cpuinfo") as f:
        if "avx512f" in f.read() and TARGET.cpu != "generic":
            assert "zmm" in asm
    with pytest.raises(Unsupported):
        ex.source("ptx")


def test_tvm_emit_relax_returns_main():
    text = emit_relax(small_cnn(), TARGET)
    assert "def main(x: R.Tensor((2, 3, 32, 32)" in text


def test_tvm_unknown_cuda_arch_is_unsupported():
    with pytest.raises(Unsupported):
        BACKEND.build(small_cnn(), Target("cuda", arch="sm_10"))


def test_tvm_missing_lowering_names_op_and_backend():
    fake = OpDef("test.unlowered", "An op no backend lowers.", lambda ins, a: [ins[0]],
                 lambda ins, a: [ins[0]])
    g = Graph()
    x = g.add_input("x", TensorType((2,), DType.F32))
    g.outputs = g.add(fake, [x])
    with pytest.raises(Unsupported, match="test.unlowered has no lowering for 'tvm'"):
        BACKEND.build(g, TARGET)


def test_tvm_multiple_outputs_and_input_passthrough():
    g = Graph()
    x = g.add_input("x", TensorType((3, 4), DType.I32))
    y = g.add_input("y", TensorType((3, 4), DType.I32))
    g.outputs = [g.add1(ew.add, [x, y]), x, g.add1(ew.equal, [x, y])]
    xv, yv = np.arange(12, dtype=np.int32).reshape(3, 4), np.full((3, 4), 5, np.int32)
    got = BACKEND.build(g, TARGET).run([xv, yv])
    for a, b in zip(got, interp.run(g, xv, yv)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype


@pytest.mark.parametrize("dt", [DType.F32, DType.I8])
def test_concat_with_many_rows_is_one_row_copy_per_input(dt):
    """A detector head's concat along the anchors (3 levels, 144 rows) runs as the row-copy kernel, == interp;
    a concat with fewer than 8 rows before its axis keeps Relax's concat."""
    import re
    g = Graph()
    xs = [g.add_input(f"x{k}", TensorType((1, 12, n), dt)) for k, n in enumerate((40, 20, 7))]
    g.outputs = [g.add1(sh.concat, xs, axis=2), g.add1(sh.concat, [xs[0], xs[0]], axis=0)]
    rng = np.random.default_rng(0)
    args = [rng.integers(-100, 100, v.type.shape).astype(dt.numpy) for v in xs]
    exe = build(g, TARGET)
    for got, want in zip(exe.run(args), interp.run(g, *args)):
        np.testing.assert_array_equal(got, want)
    calls = re.findall(r"call_tir\(cls\.([a-z_0-9]+?)_\d+,", exe.source("relax"))
    assert calls.count("concat") == 1
