"""NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss, composed of IR ops, against
onnx.reference on small random inputs: every reduction, with and without class weights and
ignore_index (in range, negative, past C), (N, C) and (N, C, d1, ...) inputs, and the log_prob
output; one case compiled with TVM against the interpreter."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from compiler import interp
from frontends.onnx import load_onnx
from tests.conftest import requires_tvm

F32 = np.float32
REDUCTIONS = ("none", "sum", "mean")


def _inputs(rng, shape: tuple[int, ...], ignore_index: int | None, log_probs: bool):
    """Scores (log-probabilities for NLL) of `shape` = (N, C, d...), targets (N, d...) in
    [0, C) with ignore_index at a few positions (but not all), and class weights (C,)."""
    n, c = shape[:2]
    x = rng.standard_normal(shape).astype(F32)
    if log_probs:
        x = (x - np.log(np.exp(x).sum(axis=1, keepdims=True))).astype(F32)
    target = rng.integers(0, c, (n,) + shape[2:]).astype(np.int64)
    if ignore_index is not None:
        flat = target.reshape(-1)
        flat[::3] = ignore_index
    weight = rng.uniform(0.2, 2.0, c).astype(F32)
    return x, target, weight


def _check(make_model, op_type: str, x, target, weight, n_outputs: int = 1, **attrs):
    """The imported graph run by the interpreter matches onnx.reference; returns the model."""
    names = ["x", "t"] + (["w"] if weight is not None else [])
    outs = ["loss", "log_prob"][:n_outputs]
    node = helper.make_node(op_type, names, outs, **attrs)
    feeds = {"x": x, "t": target, **({"w": weight} if weight is not None else {})}
    model = make_model([node], feeds, outs, 13)
    want = ReferenceEvaluator(model).run(None, feeds)
    got = interp.run(load_onnx(model), *feeds.values())
    got = got if isinstance(got, (list, tuple)) else [got]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.dtype, g.shape, w.dtype, w.shape)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    return model


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["no_weight", "weight"])
@pytest.mark.parametrize("ignore_index", [None, 1], ids=["no_ii", "ii"])
def test_nll_loss_reductions_weights_ignore_index(make_model, rng, reduction, weighted, ignore_index):
    x, target, weight = _inputs(rng, (3, 5, 4), ignore_index, log_probs=True)
    attrs = {} if ignore_index is None else {"ignore_index": ignore_index}
    _check(make_model, "NegativeLogLikelihoodLoss", x, target, weight if weighted else None,
           reduction=reduction, **attrs)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 3, 2)], ids=["NC", "NCd1d2d3"])
@pytest.mark.parametrize("ignore_index", [-5, 10], ids=["negative_ii", "ii_past_C"])
def test_nll_loss_ranks_and_out_of_range_ignore_index(make_model, rng, shape, ignore_index):
    """An ignore_index outside [0, C) is never gathered; the weighted mean counts only the rest."""
    x, target, weight = _inputs(rng, shape, ignore_index, log_probs=True)
    _check(make_model, "NegativeLogLikelihoodLoss", x, target, weight, reduction="mean",
           ignore_index=ignore_index)


def test_nll_loss_int32_target_with_infinite_ignored_entry(make_model, rng):
    """An ignored position whose (clamped) class entry is -inf contributes 0, not NaN."""
    x, target, weight = _inputs(rng, (3, 4), 2, log_probs=True)
    x[target == 2, 0] = -np.inf
    _check(make_model, "NegativeLogLikelihoodLoss", x, target.astype(np.int32), weight,
           reduction="sum", ignore_index=2)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["no_weight", "weight"])
@pytest.mark.parametrize("ignore_index", [None, 0], ids=["no_ii", "ii"])
def test_softmax_cross_entropy_with_log_prob(make_model, rng, reduction, weighted, ignore_index):
    x, target, weight = _inputs(rng, (2, 4, 3, 2), ignore_index, log_probs=False)
    attrs = {} if ignore_index is None else {"ignore_index": ignore_index}
    _check(make_model, "SoftmaxCrossEntropyLoss", x, target, weight if weighted else None,
           n_outputs=2, reduction=reduction, **attrs)


def test_softmax_cross_entropy_loss_only_nc(make_model, rng):
    x, target, _ = _inputs(rng, (5, 6), None, log_probs=False)
    _check(make_model, "SoftmaxCrossEntropyLoss", x, target, None)


def test_loss_shape_mismatch_is_invalid(make_model, rng):
    from compiler.diagnostics import InvalidModel
    x, target, _ = _inputs(rng, (3, 5, 4), None, log_probs=True)
    node = helper.make_node("NegativeLogLikelihoodLoss", ["x", "t"], ["loss"], reduction="none")
    model = make_model([node], {"x": x, "t": target}, ["loss"], 13)
    model.graph.input[1].type.tensor_type.shape.dim[1].dim_value = 3
    with pytest.raises(InvalidModel, match="target shape"):
        load_onnx(model)


@pytest.mark.slow
@requires_tvm
def test_softmax_cross_entropy_compiles_with_tvm(make_model, rng):
    import compiler
    x, target, weight = _inputs(rng, (3, 4, 5), 2, log_probs=False)
    model = _check(make_model, "SoftmaxCrossEntropyLoss", x, target, weight, n_outputs=2,
                   reduction="mean", ignore_index=2)
    got = compiler.compile(model, target="llvm").run(x, target, weight)
    want = interp.run(load_onnx(model), x, target, weight)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
