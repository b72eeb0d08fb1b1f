"""The opset 24-28 LLM ops against onnx.reference on small random inputs: Swish, SwiGLU,
TensorScatter (linear / circular, run-time write indices), CausalConvWithState (bias, past state,
SiLU, k = 1, float16), LinearAttention (every update rule, per-head and per-key decay, scalar beta,
grouped-query heads, past state, explicit scale, float16) and ai.onnx.preview.FlexAttention
(grouped-query heads, scale, score_mod / prob_mod subgraphs, float16, double); one TVM-compiled
case per op against the interpreter."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from compiler import interp
from compiler.diagnostics import InvalidModel, Unsupported
from frontends.onnx import load_onnx
from tests.conftest import requires_tvm

F32, F16 = np.float32, np.float16
PREVIEW = "ai.onnx.preview"


def _model(op, feeds, inits=None, n_outputs=1, opset=28, input_names=None, domain="", **attrs):
    """One `op` node over the feeds (graph inputs) then the initializers ('' in input_names skips
    one), its output types inferred."""
    names = list(input_names) if input_names is not None else list(feeds) + list(inits or {})
    outs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, names, outs, domain=domain, **attrs)
    graph = helper.make_graph(
        [node], "llm", [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                        for n, a in feeds.items()],
        [onnx.ValueInfoProto(name=o) for o in outs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in (inits or {}).items()])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(PREVIEW, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 10
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _check(model, feeds, rtol=1e-5, atol=1e-5):
    """The interpreter on load_onnx(model) agrees with onnx.reference in shape, dtype and value."""
    want = ReferenceEvaluator(model).run(None, feeds)
    got = interp.run(load_onnx(model), **feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol)
    return model


# -- Swish / SwiGLU --------------------------------------------------------------------------
def test_swish_alpha(rng):
    x = rng.standard_normal((3, 5)).astype(F32)
    _check(_model("Swish", {"x": x}, opset=24, alpha=0.7), {"x": x})


@pytest.mark.parametrize("dtype, alpha", [(F32, 1.0), (F32, 0.5), (F16, 1.0)])
def test_swiglu(rng, dtype, alpha):
    a, b = (rng.standard_normal((2, 3, 8)).astype(dtype) for _ in range(2))
    tol = 1e-3 if dtype == F16 else 1e-5
    _check(_model("SwiGLU", {"a": a, "b": b}, alpha=alpha), {"a": a, "b": b}, rtol=tol, atol=tol)


# -- TensorScatter ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode, axis, writes", [("linear", -2, [1, 3]), ("circular", -2, [3, 6]),
                                                ("linear", 1, [0, 2])])
def test_tensor_scatter_run_time_write_indices(rng, mode, axis, writes):
    past = rng.standard_normal((2, 5, 3, 4) if axis == 1 else (2, 3, 5, 4)).astype(F32)
    update = rng.standard_normal((2, 2, 3, 4) if axis == 1 else (2, 3, 2, 4)).astype(F32)
    feeds = {"past": past, "update": update, "w": np.array(writes, np.int64)}
    _check(_model("TensorScatter", feeds, opset=24, mode=mode, axis=axis), feeds)


def test_tensor_scatter_without_write_indices(rng):
    feeds = {"past": rng.standard_normal((1, 6, 2)).astype(F32),
             "update": rng.standard_normal((1, 4, 2)).astype(F32)}
    _check(_model("TensorScatter", feeds, opset=24, axis=1), feeds)


# -- CausalConvWithState ---------------------------------------------------------------------
@pytest.mark.parametrize("bias, past, activation", [(False, False, "none"), (True, False, "silu"),
                                                    (False, True, "swish"), (True, True, "none")])
def test_causal_conv_with_state(rng, bias, past, activation):
    b, c, length, k = 2, 3, 5, 4
    feeds = {"x": rng.standard_normal((b, c, length)).astype(F32),
             "w": rng.standard_normal((c, 1, k)).astype(F32)}
    if bias:
        feeds["bias"] = rng.standard_normal(c).astype(F32)
    if past:
        feeds["past"] = rng.standard_normal((b, c, k - 1)).astype(F32)
    names = ["x", "w", "bias" if bias else "", "past" if past else ""]
    _check(_model("CausalConvWithState", feeds, n_outputs=2, opset=27, input_names=names,
                  activation=activation), feeds)


def test_causal_conv_with_state_short_input_and_kernel_one(rng):
    x = rng.standard_normal((1, 2, 2)).astype(F32)          # length 2 < k - 1: the state keeps old zeros
    _check(_model("CausalConvWithState", {"x": x}, {"w": rng.standard_normal((2, 1, 4)).astype(F32)},
                  n_outputs=2, opset=27), {"x": x})
    _check(_model("CausalConvWithState", {"x": x}, {"w": rng.standard_normal((2, 1, 1)).astype(F32)},
                  n_outputs=2, opset=27), {"x": x})


def test_causal_conv_with_state_float16_silu_matches_exactly(rng):
    feeds = {"x": rng.random((2, 4, 8)).astype(F16), "w": rng.random((4, 1, 4)).astype(F16)}
    model = _model("CausalConvWithState", feeds, n_outputs=2, opset=27, activation="silu")
    _check(model, feeds, rtol=0, atol=0)


# -- LinearAttention -------------------------------------------------------------------------
def _linear_attention_feeds(rng, hq=4, hkv=2, dk=4, dv=3, b=2, t=3, decay=None, beta=None, past=False,
                            dtype=F32):
    """Feeds (unit-norm keys, small negative log decays of width `decay`, beta in [0, 1) of width
    `beta`) and the node's input names, '' for those left out."""
    keys = rng.standard_normal((b, t, hkv, dk))
    keys /= np.linalg.norm(keys, axis=-1, keepdims=True)
    feeds = {"q": rng.standard_normal((b, t, hq * dk)), "k": keys.reshape(b, t, hkv * dk),
             "v": rng.standard_normal((b, t, hkv * dv))}
    if past:
        feeds["s"] = 0.1 * rng.standard_normal((b, hkv, dk, dv))
    if decay is not None:
        feeds["decay"] = -0.1 * np.abs(rng.standard_normal((b, t, decay)))
    if beta is not None:
        feeds["beta"] = rng.random((b, t, beta))
    feeds = {n: a.astype(dtype) for n, a in feeds.items()}
    names = ["q", "k", "v", "s" if past else "", "decay" if decay else "", "beta" if beta else ""]
    return feeds, names


@pytest.mark.parametrize("rule, decay, beta, past", [
    ("linear", None, None, False), ("linear", None, None, True), ("gated", 2 * 4, None, False),
    ("gated", 2, None, True), ("delta", None, 2, False), ("gated_delta", 2 * 4, 2, True),
    ("gated_delta", 2 * 4, 1, False)])
def test_linear_attention_update_rules(rng, rule, decay, beta, past):
    feeds, names = _linear_attention_feeds(rng, decay=decay, beta=beta, past=past)
    _check(_model("LinearAttention", feeds, n_outputs=2, opset=27, input_names=names, update_rule=rule,
                  q_num_heads=4, kv_num_heads=2), feeds)


def test_linear_attention_multi_query_explicit_scale_single_step(rng):
    feeds, names = _linear_attention_feeds(rng, hq=3, hkv=1, t=1, decay=4, beta=1, past=True)
    _check(_model("LinearAttention", feeds, n_outputs=2, opset=27, input_names=names, q_num_heads=3,
                  kv_num_heads=1, scale=0.3), feeds)


def test_linear_attention_float16_state_in_float32(rng):
    feeds, names = _linear_attention_feeds(rng, hq=2, hkv=2, decay=8, beta=2, dtype=F16)
    _check(_model("LinearAttention", feeds, n_outputs=2, opset=27, input_names=names, q_num_heads=2,
                  kv_num_heads=2), feeds, rtol=2e-3, atol=2e-3)


def test_linear_attention_gated_without_decay_is_invalid(rng):
    feeds, names = _linear_attention_feeds(rng)
    model = _model("LinearAttention", feeds, n_outputs=2, opset=27, input_names=names, update_rule="linear",
                   q_num_heads=4, kv_num_heads=2)
    next(a for a in model.graph.node[0].attribute if a.name == "update_rule").s = b"gated"
    with pytest.raises(InvalidModel, match="update_rule 'gated' requires the decay input"):
        load_onnx(model)


# -- FlexAttention ---------------------------------------------------------------------------
def _modifier(nodes, inits, dtype=TensorProto.FLOAT, name="x"):
    """A (x) -> out subgraph over rank-4 tensors of `dtype`."""
    return helper.make_graph(nodes, "mod", [helper.make_tensor_value_info(name, dtype, None)],
                             [helper.make_tensor_value_info("out", dtype, None)],
                             [numpy_helper.from_array(np.asarray(v), n) for n, v in inits.items()])


def _causal_score_mod():
    """Where(range(L)[:, None] >= range(S)[None, :], scores, -inf), the sizes read with Shape."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "two"], ["L"], axis=0),
             helper.make_node("Gather", ["shape", "three"], ["S"], axis=0),
             helper.make_node("Range", ["zero", "L", "one"], ["qr"]),
             helper.make_node("Range", ["zero", "S", "one"], ["kr"]),
             helper.make_node("Unsqueeze", ["qr", "one_axis"], ["qi"]),
             helper.make_node("GreaterOrEqual", ["qi", "kr"], ["mask"]),
             helper.make_node("Where", ["mask", "x", "ninf"], ["out"])]
    return _modifier(nodes, {"zero": np.int64(0), "one": np.int64(1), "two": np.int64(2),
                             "three": np.int64(3), "one_axis": np.array([1], np.int64),
                             "ninf": np.float32(-np.inf)})


def _softcap_score_mod():
    return _modifier([helper.make_node("Div", ["x", "cap"], ["d"]), helper.make_node("Tanh", ["d"], ["t"]),
                      helper.make_node("Mul", ["t", "cap"], ["out"])], {"cap": np.float32(2.0)})


def _flex(q, k, v, **attrs):
    feeds = {"q": q, "k": k, "v": v}
    return _model("FlexAttention", feeds, opset=26, domain=PREVIEW, **attrs), feeds


@pytest.mark.parametrize("hkv, scale", [(4, None), (2, 0.1)])
def test_flex_attention_heads_and_scale(rng, hkv, scale):
    q = rng.standard_normal((2, 4, 5, 8)).astype(F32)
    k = rng.standard_normal((2, hkv, 6, 8)).astype(F32)
    v = rng.standard_normal((2, hkv, 6, 3)).astype(F32)
    _check(*_flex(q, k, v, **({} if scale is None else {"scale": scale})))


@pytest.mark.parametrize("mod", ["causal", "softcap", "prob_scale"])
def test_flex_attention_modifiers(rng, mod):
    q, k, v = (rng.standard_normal((1, 2, 4, 8)).astype(F32) for _ in range(3))
    attrs = {"causal": {"score_mod": _causal_score_mod()}, "softcap": {"score_mod": _softcap_score_mod()},
             "prob_scale": {"prob_mod": _modifier([helper.make_node("Mul", ["x", "c"], ["out"])],
                                                  {"c": np.float32(0.5)})}}[mod]
    _check(*_flex(q, k, v, **attrs))


@pytest.mark.parametrize("dtype", [F16, np.float64])
def test_flex_attention_float16_and_double(rng, dtype):
    q, k, v = (rng.random((1, 2, 4, 8)).astype(dtype) for _ in range(3))
    tol = 1e-3 if dtype == F16 else 1e-10
    _check(*_flex(q, k, v), rtol=tol, atol=tol)


def test_flex_attention_refuses_a_modifier_with_an_unsupported_op(rng):
    q, k, v = (rng.standard_normal((1, 1, 2, 4)).astype(F32) for _ in range(3))
    sub = _modifier([helper.make_node("Frobnicate", ["x"], ["out"], domain="com.example")], {})
    model, _ = _flex(q, k, v, score_mod=sub)
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(Unsupported, match="FlexAttention: score_mod subgraph: unsupported ONNX ops: "
                                          "com.example.Frobnicate"):
        load_onnx(model)


# -- TVM ---------------------------------------------------------------------------------------
def _tvm_cases(rng):
    """One model per op with its feeds, the run-time operands each op's decomposition takes."""
    la_feeds, la_names = _linear_attention_feeds(rng, decay=8, beta=2, past=True)
    conv = {"x": rng.standard_normal((2, 3, 5)).astype(F32), "w": rng.standard_normal((3, 1, 3)).astype(F32),
            "past": rng.standard_normal((2, 3, 2)).astype(F32)}
    scatter = {"past": rng.standard_normal((2, 3, 4, 2)).astype(F32),
               "update": rng.standard_normal((2, 3, 2, 2)).astype(F32), "w": np.array([3, 1], np.int64)}
    glu = {"a": rng.standard_normal((2, 6)).astype(F32), "b": rng.standard_normal((2, 6)).astype(F32)}
    q, k, v = (rng.standard_normal((1, 2, 4, 8)).astype(F32) for _ in range(3))
    return {
        "LinearAttention": (_model("LinearAttention", la_feeds, n_outputs=2, opset=27, input_names=la_names,
                                   q_num_heads=4, kv_num_heads=2), la_feeds),
        "CausalConvWithState": (_model("CausalConvWithState", conv, n_outputs=2, opset=27,
                                       input_names=["x", "w", "", "past"], activation="silu"), conv),
        "TensorScatter": (_model("TensorScatter", scatter, opset=24, mode="circular"), scatter),
        "SwiGLU": (_model("SwiGLU", glu, alpha=0.5), glu),
        "FlexAttention": _flex(q, k, v, score_mod=_causal_score_mod()),
    }


@pytest.mark.slow
@requires_tvm
@pytest.mark.parametrize("op", ["LinearAttention", "CausalConvWithState", "TensorScatter", "SwiGLU",
                                "FlexAttention"])
def test_compiles_with_tvm(rng, op):
    import compiler
    model, feeds = _tvm_cases(rng)[op]
    want = interp.run(load_onnx(model), **feeds)
    got = compiler.compile(model, target="llvm").run(*feeds.values())
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-5, atol=1e-5)
