"""ShiftAddViT's binary-code attention (mfree.binary_attention) on the MLIR (IREE) backend
(compiler/backends/mlir_lower/binary_attention.py): bit-exact with the op's reference on the CPU over batch and
head dims, Lq != Lk, D != Dv, an all-zero V, rows whose code meets no key's (den = 0), negative-only K and a V
element on a rounding tie; its sums are masked adds (no arith.muli); a float attention graph compiled with
shiftadd_attention=True through backend="mlir" matches the interpreter bit for bit; the cuda build gives PTX
(that ptxas assembles when it is installed)."""
from __future__ import annotations


import numpy as np
import pytest

pytest.importorskip("iree.compiler")
pytest.importorskip("iree.runtime")

from compiler import interp
from compiler.backends.mlir import BACKEND
from compiler.ir import Graph
from compiler.ops import mfree, nn
from compiler.target import Target
from compiler.types import DType, TensorType
from tests.backends.test_mlir_mfree import _bits_equal, _run_bits
from tests.backends.test_mlir_ops import TARGET
from tests.ptxas import assemble

F32 = DType.F32
CUDA = Target("cuda", arch="sm_90")


def _graph(*shapes: tuple[int, ...]) -> Graph:
    g = Graph("binattn")
    ins = [g.add_input(n, TensorType(s, F32)) for n, s in zip("qkv", shapes)]
    g.outputs = [g.add1(mfree.binary_attention, ins)]
    return g


def _data(rng: np.random.Generator, shape: tuple[int, ...], zeros: bool = True) -> np.ndarray:
    """Normal float32 values (IREE's CPU flushes subnormals), some exact zeros (code 0)."""
    x = rng.standard_normal(shape).astype(np.float32)
    if zeros:
        x[rng.random(shape) < 0.2] = 0.0
    return x


def _case(name: str):
    """(q, k, v) for one named case; the expected outputs' edge cases are asserted here, so that the case is
    what its name says."""
    rng = np.random.default_rng(sum(map(ord, name)))
    shapes = {"batch_heads": ((2, 3, 12, 8), (2, 3, 12, 8), (2, 3, 12, 8)),
              "lq_lk_d_dv": ((2, 7, 5), (2, 13, 5), (2, 13, 11)),
              "rank2": ((9, 16), (20, 16), (20, 33)),
              "rank5": ((2, 1, 2, 4, 6), (2, 1, 2, 7, 6), (2, 1, 2, 7, 4)),
              "zero_v": ((2, 2, 5, 4), (2, 2, 6, 4), (2, 2, 6, 3)),
              "den_zero": ((3, 6, 8), (3, 10, 8), (3, 10, 7)),
              "negative_k": ((2, 5, 6), (2, 9, 6), (2, 9, 5))}[name]
    q, k, v = (_data(rng, s) for s in shapes)
    v *= np.float32(10.0) ** rng.integers(-1, 2, v.shape).astype(np.float32)     # V over 3 decades
    if name == "zero_v":
        v[:] = 0.0                                                                # s = 1, out 0
    if name == "den_zero":
        q[0, 0] = -1.0                                                            # no bit set
        q[1, 1] = 0.0
        k[2, :, 0] = -1.0                                                         # dim 0 never set in head 2
        q[2, 2] = np.array([1, -1, -1, -1, -1, -1, -1, -1], np.float32)          # meets only dim 0
        v *= np.float32(2.0) / np.abs(v).max()
        v[1, 0, 0] = np.float32(2.0350175)                  # max|V|: amax / 127 != amax * fl(1 / 127)
        s = mfree.v_scale(v)
        assert s != np.float32(2.0350175) * np.float32(1 / 127)
        v[0, 0, 0] = np.float32(2.5) * s                                          # a rounding tie (if exact)
    if name == "negative_k":
        k[0] = -np.abs(k[0]) - np.float32(0.5)                                   # every code 0 in batch 0
        k[1, :, 1:] = -1.0                                                        # only dim 0 can be set
    want = mfree.binary_attention_values(q, k, v)
    if name == "zero_v":
        assert (want == 0).all()
    elif name == "den_zero":
        assert (want[0, 0] == 0).all() and (want[1, 1] == 0).all() and (want[2, 2] == 0).all()
        assert np.count_nonzero(want) > want.size // 2
    elif name == "negative_k":
        assert (want[0] == 0).all() and np.count_nonzero(want[1]) > 0
    else:
        assert np.count_nonzero(want) > want.size // 2
    return q, k, v


CASES = ["batch_heads", "lq_lk_d_dv", "rank2", "rank5", "zero_v", "den_zero", "negative_k"]


@pytest.mark.parametrize("name", CASES)
def test_mlir_binary_attention_bit_exact(name):
    q, k, v = _case(name)
    _run_bits(_graph(q.shape, k.shape, v.shape), [q, k, v])


def test_mlir_binary_attention_bit_exact_with_two_threads_and_wide_v():
    """V over ~12 decades (tiny elements quantize to 0, large ones set s), Q and K scaled (codes unchanged);
    two threads: IREE splits the sums, which are exact integers, so the bits do not move."""
    rng = np.random.default_rng(11)
    q, k, v = _data(rng, (2, 2, 24, 16)) * np.float32(1e3), _data(rng, (2, 2, 40, 16)), _data(rng, (2, 2, 40, 24))
    v *= np.float32(10.0) ** rng.integers(-6, 7, v.shape).astype(np.float32)
    g = _graph(q.shape, k.shape, v.shape)
    got = BACKEND.build(g, Target("llvm", num_threads=2)).run([q, k, v])
    _bits_equal(got, interp.run(g, q, k, v))
    # not vacuous: the reference moves when one V element does (the scale) and when a code flips
    v2 = v.copy()
    v2.flat[np.argmax(np.abs(v))] *= np.float32(1.5)
    assert not np.array_equal(mfree.binary_attention_values(q, k, v2), got[0])
    q2 = q.copy()
    q2[0, 0, 0, :] = -q2[0, 0, 0, :]
    assert not np.array_equal(mfree.binary_attention_values(q2, k, v), got[0])


def test_mlir_binary_attention_sums_are_masked_adds():
    """The MLIR the backend emits: no integer multiply, one float multiply (the normalization), the three float
    divisions (the scale, V / s, s / den), four masked adds (select + addi: KV, KS, num, den)."""
    text = BACKEND.build(_graph((2, 8, 4), (2, 6, 4), (2, 6, 5)), TARGET).source("mlir")
    assert "arith.muli" not in text
    assert text.count("arith.mulf") == 1 and text.count("arith.divf") == 3
    assert text.count("arith.addi") == 4 and text.count("arith.cmpf ogt") >= 4


def test_mlir_compile_with_shiftadd_attention_matches_interpreter_bit_exact():
    """A float attention graph (q scaled, K given transposed, a relu after) compiled with shiftadd_attention=True
    through backend="mlir": the chain becomes one mfree.binary_attention, no softmax is left, and the build
    matches the interpreter on its final IR bit for bit (the ops around it are exact too)."""
    import compiler
    from tests.passes.test_shiftadd_attention import _attention, _inputs
    g = _attention(b=2, h=2, s=12, d=8, dv=6, k_transposed=True, q_scale=0.5)
    cm = compiler.compile(g, TARGET, backend="mlir", shiftadd_attention=True)
    ops = {n.op for n in cm.graph.walk()}
    assert mfree.binary_attention in ops and nn.softmax not in ops
    xs = _inputs(g)
    got, want = cm.run(*xs), interp.run(cm.graph, *xs)
    _bits_equal(got, want)
    assert np.count_nonzero(want[0]) > 0
    softmax = interp.run(g, *xs)[0]                      # the rewrite changed the output (not a no-op)
    assert not np.array_equal(got[0], softmax)


def test_mlir_cuda_builds_binary_attention():
    """The same lowering built for cuda (sm_90): PTX with kernels, no optimization barrier needed (no i64
    reduction, no splat constant tensor); ptxas assembles it when installed; run and compared where a GPU is."""
    rng = np.random.default_rng(3)
    q, k, v = _data(rng, (2, 4, 32, 16)), _data(rng, (2, 4, 48, 16)), _data(rng, (2, 4, 48, 24))
    g = _graph(q.shape, k.shape, v.shape)
    exe = BACKEND.build(g, CUDA)
    assert "util.optimization_barrier" not in exe.source("mlir")
    ptx = exe.source("ptx")
    assert ".target sm_90" in ptx and ".entry" in ptx
    import iree.runtime as rt
    try:
        rt.get_device("cuda")
    except Exception:  # noqa: BLE001
        pass
    else:
        _bits_equal(exe.run([q, k, v]), interp.run(g, q, k, v))
    assemble(ptx)


def test_mlir_cuda_compile_with_shiftadd_attention_builds():
    """compile(..., backend="mlir", shiftadd_attention=True) for cuda: the pipeline takes it and IREE builds it."""
    from compiler.api import final_ir
    from tests.passes.test_shiftadd_attention import _attention
    fg, _ = final_ir(_attention(), CUDA, backend="mlir", shiftadd_attention=True)
    assert any(n.op is mfree.binary_attention for n in fg.walk())
    assert ".entry" in BACKEND.build(fg, CUDA).source("ptx")
