"""The binary-code attention kernel (tvm_kernels/binary_attention.py): bit-exact with mfree.binary_attention's
reference on random shapes (hypothesis), no multiply of data in any accumulation of its TIR, and the op
through compile() == compiler.interp, alone and inside a model."""
from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from compiler import interp  # noqa: E402
from compiler.backends.tvm_kernels import binary_attention as B  # noqa: E402
from compiler.backends.tvm_kernels import qconv2d as K  # noqa: E402
from compiler.backends.tvm_kernels.common import host_target  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import mfree  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402
from tests.backends.test_tvm_shiftadd import _strip_indices, data_multiplies, reduction_updates  # noqa: E402

PROPERTY = settings(max_examples=10, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _run_kernel(q, k, v) -> np.ndarray:
    spec = B.BinaryAttentionSpec(q.shape[0], q.shape[1], k.shape[1], q.shape[2], v.shape[2])
    func = B.make_binary_attention(spec).with_attr("global_symbol", "main")
    lib = tvm.compile(tvm.IRModule({"main": func}), target=host_target(1))
    t = [tvm.runtime.tensor(a) for a in (q, k, v)] + [tvm.runtime.empty((spec.bh, spec.lq, spec.dv), "float32")]
    lib["main"](*t)
    return t[-1].numpy()


def _data(rng, shape, kind):
    x = rng.standard_normal(shape).astype(np.float32)
    if kind == "zeros":                   # exact zeros are not > 0: code 0
        x[rng.random(shape) < 0.3] = 0.0
    elif kind == "wide":
        x *= np.float32(10.0) ** rng.integers(-3, 4, shape).astype(np.float32)
    elif kind == "negative":              # codes mostly 0: rows with den = 0
        x = -np.abs(x)
        x[rng.random(shape) < 0.05] = 1.0
    return x


def test_kernel_bit_exact_edge_cases():
    """One kernel (fast): zeros in Q and K (code 0), rows whose code meets no key's (den = 0: out 0),
    a V element at exactly half a step, dv not a multiple of the vector width."""
    rng = np.random.default_rng(0)
    q, k, v = _data(rng, (3, 9, 6), "zeros"), _data(rng, (3, 11, 6), "zeros"), _data(rng, (3, 11, 10), "wide")
    q[0, 0] = -1.0                                    # no bit set: den = 0
    q[1, 1] = 0.0
    k[2, :, 0] = -1.0                                 # dimension 0 never set in head 2
    q[2, 2] = np.array([1, -1, -1, -1, -1, -1], np.float32)
    s = mfree.v_scale(v)
    v[0, 0, 0] = np.float32(2.5) * s                  # on a rounding tie (if representable)
    want = mfree.binary_attention_values(q, k, v)
    assert (want[0, 0] == 0).all() and (want[1, 1] == 0).all() and (want[2, 2] == 0).all()
    got = _run_kernel(q, k, v)
    assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist()


@pytest.mark.slow
@PROPERTY
@given(bh=st.integers(1, 4), lq=st.integers(1, 20), lk=st.integers(1, 24), d=st.integers(1, 16),
       dv=st.integers(1, 40), qk=st.sampled_from(["normal", "zeros", "negative"]),
       vkind=st.sampled_from(["normal", "wide", "zeros", "allzero"]), seed=st.integers(0, 2**16))
def test_kernel_bit_exact_vs_reference(bh, lq, lk, d, dv, qk, vkind, seed):
    rng = np.random.default_rng(seed)
    q, k = _data(rng, (bh, lq, d), qk), _data(rng, (bh, lk, d), qk)
    v = np.zeros((bh, lk, dv), np.float32) if vkind == "allzero" else _data(rng, (bh, lk, dv), vkind)
    want = mfree.binary_attention_values(q, k, v)
    got = _run_kernel(q, k, v)
    assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist()


def test_tir_accumulations_are_masked_adds():
    script = B.make_binary_attention(B.BinaryAttentionSpec(2, 16, 32, 8, 32)).script()
    updates = reduction_updates(script, scalars=True)
    masked = [(loop, rhs) for loop, rhs in updates if re.match(r"^[\w\[\], *+]+ \+ T\.Select\(", rhs)]
    # KS, KV, den, acc: each an add of a select on a code (K > 0 or Q > 0); KV and acc in vector loops
    assert len(masked) == 4 and all("> T.float32(0.0)" in rhs for _, rhs in masked)
    assert sum("T.vectorized(16)" in loop for loop, _ in masked) == 2
    assert data_multiplies(script) == [] and not [rhs for _, rhs in updates if "*" in _strip_indices(rhs)]
    # the only data multiply anywhere: the output's normalization, once per output element
    products = [ln.strip() for ln in script.splitlines() if "*" in _outside_brackets(ln)]
    assert len(products) == 1 and products[0].startswith("out[")
    # the checker is not vacuous: the multiply-accumulate int8 conv is found
    conv = K.QConvSpec(1, 16, 8, 8, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), "int8", 5, 16, None)
    assert data_multiplies(K.qconv2d_prim_func(conv).script())


def _outside_brackets(line: str) -> str:
    return _strip_indices(line.split("#")[0])


def test_op_through_compile_bit_exact():
    import compiler
    rng = np.random.default_rng(5)
    shapes = {"q": (2, 3, 24, 16), "k": (2, 3, 40, 16), "v": (2, 3, 40, 20)}
    g = Graph("binattn")
    ins = [g.add_input(n, TensorType(s, DType.F32)) for n, s in shapes.items()]
    g.outputs = [g.add1(mfree.binary_attention, ins)]
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes.values()]
    cm = compiler.compile(g, "llvm -num-threads=1")
    got, want = cm.run(*xs)[0], interp.run(g, *xs)[0]
    assert got.shape == (2, 3, 24, 20)
    assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist()


@pytest.mark.slow
def test_compile_with_shiftadd_attention_matches_interpreter():
    """A block with projections: the attention becomes one mfree.binary_attention (no fused softmax
    attention kernel left), and the build matches the interpreter on its final IR (the projections'
    float matmul kernels within float tolerance, the binary attention bit-exact)."""
    import compiler
    from compiler.ops import kernel
    from tests.passes.test_lmul import _block, _x
    g = _block(s=16)
    cm = compiler.compile(g, "llvm -num-threads=1", shiftadd_attention=True)
    assert sum(n.op is mfree.binary_attention for n in cm.graph.nodes) == 1
    assert not any(n.op is kernel.fused and "attention" in n.attrs["kernel"] for n in cm.graph.nodes)
    x = _x(g)
    np.testing.assert_allclose(cm.run(x)[0], interp.run(cm.graph, x)[0], rtol=1e-5, atol=1e-6)
