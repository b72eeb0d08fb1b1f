"""RNN / GRU / LSTM converters against onnxruntime (layout 1 against onnx.reference, which
onnxruntime does not implement): directions, sequence_lens, initial states, peepholes, clip,
activations, linear_before_reset, input_forget."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from compiler import interp
from frontends.onnx import load_onnx

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
T, N, I, H = 5, 3, 4, 6


def recurrent_model(make_model, rng, op_type, direction="forward", lens=False, init=False,
                    peephole=False, layout=0, **attrs):
    """A single-node model with random weights; returns (model, feeds)."""
    g, d = GATES[op_type], 2 if direction == "bidirectional" else 1
    x = rng.standard_normal((T, N, I) if layout == 0 else (N, T, I)).astype(np.float32)
    inits = {"W": rng.standard_normal((d, g * H, I)).astype(np.float32) * 0.5,
             "R": rng.standard_normal((d, g * H, H)).astype(np.float32) * 0.5,
             "B": rng.standard_normal((d, 2 * g * H)).astype(np.float32) * 0.5}
    names = ["x", "W", "R", "B", "", "", "", ""]
    if lens:
        inits["lens"], names[4] = np.array([T, 2, 4], np.int32), "lens"
    state_shape = (d, N, H) if layout == 0 else (N, d, H)
    if init:
        inits["h0"], names[5] = rng.standard_normal(state_shape).astype(np.float32), "h0"
        if op_type == "LSTM":
            inits["c0"], names[6] = rng.standard_normal(state_shape).astype(np.float32), "c0"
    if peephole:
        inits["P"], names[7] = rng.standard_normal((d, 3 * H)).astype(np.float32), "P"
    while names[-1] == "":
        names.pop()
    outs = ["y", "y_h"] + (["y_c"] if op_type == "LSTM" else [])
    node = helper.make_node(op_type, names, outs, hidden_size=H, direction=direction,
                            **({"layout": layout} if layout else {}), **attrs)
    return make_model([node], {"x": x}, outs, 14, inits), {"x": x}


CASES = [(op, {"direction": d}) for op in GATES for d in ("forward", "reverse", "bidirectional")] + [
    (op, {"direction": "bidirectional", "lens": True, "init": True}) for op in GATES] + [
    ("LSTM", {"peephole": True, "clip": 0.5, "lens": True}),
    ("LSTM", {"input_forget": 1}),
    ("LSTM", {"activations": ["HardSigmoid", "LeakyRelu", "Tanh"], "activation_alpha": [0.3, 0.2],
                  "activation_beta": [0.4]}),
    ("GRU", {"direction": "bidirectional", "linear_before_reset": 1, "lens": True}),
    ("RNN", {"activations": ["Relu"], "clip": 1.0}),
]


@pytest.mark.parametrize("op_type,kw", CASES, ids=lambda v: str(v))
def test_recurrent_matches_onnxruntime(make_model, check, rng, op_type, kw):
    model, feeds = recurrent_model(make_model, rng, op_type, **kw)
    check(model, feeds, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op_type", list(GATES))
def test_recurrent_layout_1_matches_onnx_reference(make_model, rng, op_type):
    from onnx.reference import ReferenceEvaluator
    model, feeds = recurrent_model(make_model, rng, op_type, init=True, layout=1)
    want = ReferenceEvaluator(model).run(None, feeds)
    got = interp.run(load_onnx(model), **feeds)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_recurrent_unknown_activation_is_unsupported(make_model, rng):
    from compiler.diagnostics import Unsupported
    model, _ = recurrent_model(make_model, rng, "RNN", activations=["Relu"])
    model.graph.node[0].attribute[0].strings[0] = b"Gelu"    # not an RNN activation
    with pytest.raises(Unsupported, match="activation"):
        load_onnx(model)
