"""The ivit pass and the I-ViT integer ops' references (compiler/ops/ivit.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from compiler import interp
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import ivit, nn, quant, shape
from compiler.ops import unary_math as um
from compiler.ops.registry import TypeRuleError
from compiler.types import DType, TensorType
from passes.ivit import ivit_rewrite, rewrite_islands
from passes.verify_integer_only import verify_integer_only

I8, I16, I32, F32 = DType.I8, DType.I16, DType.I32, DType.F32


# -- references ------------------------------------------------------------------------------
def test_ivit_shift_exp_tracks_exp():
    s = 1 / 256
    i = np.arange(-8 * 256, 1)
    got = ivit.shift_exp(i, ivit.exp_unit(s), 15) / (256 * 2**15)
    want = np.exp(i * s)
    assert np.abs(got - want).max() < 0.05           # 1 + f/2 for 2^f, log2 e ~= 1.0111b


def test_ivit_shiftmax_all_equal_and_large_negative_rows():
    x = np.zeros((2, 16), np.int8)
    x[1] = -128
    x[1, 3] = 127                                     # one logit far above the rest
    y = ivit.shiftmax_values(x, 0.05, 15, 1, I16)
    assert (y[0] == y[0, 0]).all() and abs(y[0, 0] / 2**15 - 1 / 16) < 2e-3
    assert y[1, 3] > 32000 and y[1].sum() - y[1, 3] < 200


def test_ivit_layernorm_zero_variance_row_gives_beta():
    x = np.full((1, 8), 1234, np.int16)
    y = ivit.layernorm_values(x, np.full(8, 1 << 20, np.int32), np.arange(8, dtype=np.int64) << 20,
                              20, 0, -128, 127)
    assert y.tolist() == [list(range(8))]


def test_ivit_layernorm_matches_float():
    rng = np.random.default_rng(0)
    x = rng.integers(-20000, 20000, (4, 64)).astype(np.int16)
    c, s_out, shift = 64, 1 / 64, 40
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.uniform(-0.5, 0.5, c)
    mult = np.rint(gamma * math.sqrt(c) / (2**30 * s_out) * 2**shift).astype(np.int32)
    bias = np.rint(beta / s_out * 2**shift).astype(np.int64)
    got = ivit.layernorm_values(x, mult, bias, shift, 0, -32768, 32767) * s_out
    xf = x.astype(np.float64)
    want = (xf - xf.mean(1, keepdims=True)) / xf.std(1, keepdims=True) * gamma + beta
    assert np.abs(got - want).max() < 0.03


def test_ivit_shiftmax_type_rule_rejects_overflowing_sum():
    g = Graph()
    x = g.add_input("x", TensorType((1, 4096), I8))
    with pytest.raises(TypeRuleError, match="exceeds 2\\^31"):
        g.add1(ivit.shiftmax, [x], scale=1e-3, n=15, axis=-1, dtype=I8)


# -- the pass ---------------------------------------------------------------------------------
def _island(op, **attrs) -> Graph:
    """quantize -> dequantize -> [div 4] -> op -> quantize -> dequantize."""
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 16), F32))
    xq = g.add1(quant.quantize, [x], scale=0.04, zero_point=0, dtype=I8, qmin=-128, qmax=127)
    xf = g.add1(quant.dequantize, [xq], scale=(0.04,), zero_point=(0,))
    if op is nn.softmax:
        xf = g.add1(ew.div, [xf, g.const(np.float32(4.0))])
    if op is nn.layer_norm:
        rng = np.random.default_rng(1)
        y = g.add1(op, [xf, g.const(rng.uniform(0.5, 2, 16).astype(np.float32)),
                        g.const(rng.uniform(-1, 1, 16).astype(np.float32))], **attrs)
    else:
        y = g.add1(op, [xf], **attrs)
    out_scale = {nn.softmax: 1 / 255, ew.gelu: 0.04, nn.layer_norm: 0.03}[op]
    yq = g.add1(quant.quantize, [y], scale=out_scale, zero_point=0, dtype=I8, qmin=-128, qmax=127)
    g.outputs = [g.add1(quant.dequantize, [yq], scale=(out_scale,), zero_point=(0,))]
    return g


@pytest.mark.parametrize("op,new,attrs,tol", [
    (nn.softmax, "q.shiftmax", {"axis": -1}, 0.03),
    (nn.softmax, "q.shiftmax", {"axis": 1}, 0.03),        # a detector's bins: Shiftmax on that axis, no transpose
    (ew.gelu, "q.shiftgelu", {"approximate": "none"}, 0.1),
    (nn.layer_norm, "q.layernorm", {"axis": -1}, 0.1),
])
def test_ivit_rewrites_float_island(op, new, attrs, tol):
    g = _island(op, **attrs)
    assert verify_integer_only(g)                     # the float op is in the way
    h = rewrite_islands(g, choose_form=None)          # ShiftGELU, not activation_forms' choice
    hist = h.op_histogram()
    assert hist.get(new) == 1 and op.name not in hist and "nn.div" not in hist and "nn.transpose" not in hist
    if op is nn.softmax:
        assert next(n for n in h.nodes if n.op.name == new).attrs["axis"] % 3 == attrs["axis"] % 3
    assert verify_integer_only(h) == []
    x = np.random.default_rng(0).uniform(-4, 4, (2, 3, 16)).astype(np.float32)
    before, after = interp.run(g, x)[0], interp.run(h, x)[0]
    assert np.abs(before - after).max() < tol


def test_ivit_leaves_other_axes_and_plain_graphs_alone():
    g = _island(nn.layer_norm, axis=1)                # not the last axis: stays float
    assert "q.layernorm" not in ivit_rewrite(g).op_histogram()
    g = Graph()
    x = g.add_input("x", TensorType((4,), F32))
    g.outputs = [g.add1(ew.relu, [x])]
    assert ivit_rewrite(g).op_histogram() == {"nn.relu": 1}


def test_ivit_quantized_embedding_gather():
    g = Graph()
    ids = g.add_input("ids", TensorType((2, 5), DType.I64))
    table = g.const(np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32), "table")
    e = g.add1(shape.gather, [table, ids], axis=0)
    eq = g.add1(quant.quantize, [e], scale=0.03, zero_point=0, dtype=I8, qmin=-128, qmax=127)
    g.outputs = [g.add1(quant.dequantize, [eq], scale=(0.03,), zero_point=(0,))]
    h = ivit_rewrite(g)
    assert verify_integer_only(h) == [] and "q.quantize" not in h.op_histogram()
    i = np.random.default_rng(1).integers(0, 10, (2, 5))
    np.testing.assert_array_equal(interp.run(g, i)[0], interp.run(h, i)[0])   # bit-exact


def _masked_island(guard: bool) -> Graph:
    """quantize -> dequantize -> where(keep, ., -inf) -> softmax [-> where(isnan(p), 0, p)] -> quantize ->
    dequantize: select_masks' form of a masked attention row, and sdpa's NaN guard."""
    g = Graph()
    x = g.add_input("x", TensorType((2, 3, 16), F32))
    keep = g.add_input("keep", TensorType((2, 1, 16), DType.BOOL))
    xq = g.add1(quant.quantize, [x], scale=0.04, zero_point=0, dtype=I8, qmin=-128, qmax=127)
    xf = g.add1(quant.dequantize, [xq], scale=(0.04,), zero_point=(0,))
    y = g.add1(nn.softmax, [g.add1(ew.where, [keep, xf, g.const(np.finfo(np.float32).min)])], axis=-1)
    if guard:
        y = g.add1(ew.where, [g.add1(um.isnan, [y]), g.const(np.float32(0)), y])
    yq = g.add1(quant.quantize, [y], scale=1 / 255, zero_point=0, dtype=DType.U8, qmin=0, qmax=255)
    g.outputs = [g.add1(quant.dequantize, [yq], scale=(1 / 255,), zero_point=(0,))]
    return g


@pytest.mark.parametrize("guard", [False, True])
def test_ivit_masked_softmax_drops_the_masked_keys(guard):
    g = _masked_island(guard)
    h = ivit_rewrite(g)
    assert verify_integer_only(h) == []
    hist = h.op_histogram()
    assert hist.get("q.shiftmax") == 1 and "nn.isnan" not in hist and hist.get("nn.where") == 1
    rng = np.random.default_rng(0)
    x = rng.uniform(-5, 5, (2, 3, 16)).astype(np.float32)
    keep = rng.random((2, 1, 16)) < 0.6
    keep[..., 0] = True
    before, after = interp.run(g, x, keep)[0], interp.run(h, x, keep)[0]
    assert np.abs(before - after).max() < 0.03
    assert np.all(after[np.broadcast_to(~keep, after.shape)] == 0)    # a dropped key gets no weight


@pytest.mark.parametrize("which", ["vit", "bert"])
def test_ivit_encoder_is_integer_only(which):
    torch = pytest.importorskip("torch")
    import compiler
    from examples.zoo import BertEncoder, ViT
    from passes.quantize import QuantConfig, calibration_batches
    from passes.quantize_pipeline import quantize_graph

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if which == "vit":
        model, x = ViT(hidden=32, heads=2, ffn=64, layers=1), rng.random((4, 1, 8, 8), np.float32)
    else:
        model = BertEncoder(vocab=50, hidden=32, heads=2, ffn=64, layers=1, seq=16)
        x = rng.integers(0, 50, (4, 16))
    g = compiler.import_model(model.eval(), example_inputs=(torch.tensor(x),))
    ig, stats = quantize_graph(g, calibration_batches(g, [x]), QuantConfig(activation="int8", integer_only=True))
    assert verify_integer_only(ig) == []
    a, b = interp.run(stats.graph, x)[0].ravel(), interp.run(ig, x)[0].ravel()
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.99
