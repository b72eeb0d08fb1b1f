"""The opset-23 transformer ops against onnx.reference: Attention (3-D / 4-D, grouped-query heads,
masks, is_causal with a past, softcap, qk_matmul_output modes), RMSNormalization and
RotaryEmbedding; and Attention's decomposition is the chain the attention fusion finds."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from compiler import interp
from frontends.onnx import load_onnx
from tests.conftest import requires_tvm

F32 = np.float32


def _check(make_model, op, feeds, inits=None, n_outputs=1, opset=23, rtol=1e-5, atol=1e-6, **attrs):
    outs = [f"y{i}" for i in range(n_outputs)]
    names = list(feeds) + list(inits or {})
    model = make_model([helper.make_node(op, names, outs, **attrs)], feeds, outs, opset, inits)
    want = ReferenceEvaluator(model).run(None, feeds)
    got = interp.run(load_onnx(model), **feeds)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return model


def test_attention_3d_grouped_query_bool_mask(make_model, rng):
    q = rng.standard_normal((2, 5, 4 * 8)).astype(F32)
    k, v = (rng.standard_normal((2, 6, 2 * 8)).astype(F32) for _ in range(2))
    mask = rng.random((5, 6)) > 0.3
    _check(make_model, "Attention", {"q": q, "k": k, "v": v, "m": mask}, q_num_heads=4, kv_num_heads=2)


def test_attention_causal_with_past_and_outputs(make_model, rng):
    q, k, v = (rng.standard_normal((1, 2, 3, 4)).astype(F32) for _ in range(3))
    past_k, past_v = (rng.standard_normal((1, 2, 5, 4)).astype(F32) for _ in range(2))
    feeds = {"q": q, "k": k, "v": v}
    model = make_model([helper.make_node("Attention", ["q", "k", "v", "", "pk", "pv"], ["y", "pk_out", "pv_out", "qk"],
                                         is_causal=1, softcap=2.0, qk_matmul_output_mode=3)],
                       feeds, ["y", "pk_out", "pv_out", "qk"], 23, {"pk": past_k, "pv": past_v})
    want = ReferenceEvaluator(model).run(None, feeds)
    for g, w in zip(interp.run(load_onnx(model), **feeds), want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_attention_fully_masked_row_is_zero(make_model, rng):
    q, k, v = (rng.standard_normal((1, 1, 3, 4)).astype(F32) for _ in range(3))
    mask = np.array([[True, True, True], [False, False, False], [True, False, True]])
    _check(make_model, "Attention", {"q": q, "k": k, "v": v}, {"m": mask}, n_outputs=1)


def test_attention_bf16_rounds_softmax_steps_as_onnx_reference(make_model, rng):
    """On bfloat16, onnx.reference rounds every numpy step of the softmax (exp, each term of the
    sum, the division) to bfloat16; the interpreter's softmax does too, so the results are equal."""
    import ml_dtypes
    q = rng.random((1, 2, 4, 8)).astype(ml_dtypes.bfloat16)
    k, v = (rng.random((1, 2, 6, 8)).astype(ml_dtypes.bfloat16) for _ in range(2))
    model = make_model([helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=1)],
                       {"q": q, "k": k, "v": v}, ["y"], 23)
    want = ReferenceEvaluator(model).run(None, {"q": q, "k": k, "v": v})[0]
    got = interp.run(load_onnx(model), q, k, v)[0]
    assert got.dtype == want.dtype and np.array_equal(got.astype(F32), want.astype(F32))


def test_attention_decomposes_into_the_fusable_chain(make_model, rng):
    """matmul -> scale -> causal mask -> softmax -> matmul over repeated K/V heads: find_chains sees it."""
    from compiler.api import optimize
    from passes.einsum import find_chains
    q = rng.standard_normal((1, 4, 6, 8)).astype(F32)
    k, v = (rng.standard_normal((1, 2, 6, 8)).astype(F32) for _ in range(2))
    model = _check(make_model, "Attention", {"q": q, "k": k, "v": v}, is_causal=1)
    chains = find_chains(optimize(load_onnx(model)))
    assert len(chains) == 1 and chains[0].k_group == 2 and chains[0].causal == 0


@pytest.mark.parametrize("axis", [-1, 1])
def test_rms_normalization(make_model, rng, axis):
    x = rng.standard_normal((2, 3, 4)).astype(F32)
    _check(make_model, "RMSNormalization", {"x": x}, {"s": rng.standard_normal(x.shape[axis % 3:]).astype(F32)},
           axis=axis, epsilon=1e-4)


@pytest.mark.parametrize("interleaved", [0, 1])
def test_rotary_embedding_4d_partial_with_positions(make_model, rng, interleaved):
    x = rng.standard_normal((2, 3, 5, 8)).astype(F32)
    angles = rng.standard_normal((10, 3)).astype(F32)
    inits = {"cos": np.cos(angles), "sin": np.sin(angles), "pos": rng.integers(0, 10, (2, 5))}
    _check(make_model, "RotaryEmbedding", {"x": x}, inits, interleaved=interleaved, rotary_embedding_dim=6)


def test_rotary_embedding_3d_num_heads(make_model, rng):
    x = rng.standard_normal((1, 4, 2 * 6)).astype(F32)
    angles = rng.standard_normal((1, 4, 3)).astype(F32)
    _check(make_model, "RotaryEmbedding", {"x": x}, {"cos": np.cos(angles), "sin": np.sin(angles)}, num_heads=2)


@pytest.mark.slow
@requires_tvm
def test_attention_compiles_with_tvm(make_model, rng):
    """The opset-23 Attention op runs as the one fused attention kernel."""
    import compiler
    q = rng.standard_normal((1, 4, 6, 8)).astype(F32)
    k, v = (rng.standard_normal((1, 2, 6, 8)).astype(F32) for _ in range(2))
    model = _check(make_model, "Attention", {"q": q, "k": k, "v": v}, is_causal=1)
    cm = compiler.compile(model, target="llvm")
    assert [n.attrs["kernel"] for n in cm.graph.nodes if n.op.name == "k.fused"] == ["attention"]   # one kernel
    got = cm.run(q, k, v)[0]
    np.testing.assert_allclose(got, interp.run(load_onnx(model), q, k, v)[0], rtol=1e-4, atol=1e-5)
