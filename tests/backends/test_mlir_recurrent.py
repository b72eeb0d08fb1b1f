"""rnn / gru / lstm on the MLIR backend (compiler/backends/mlir_lower/recurrent.py): an scf.for over the steps
carrying the state. Against the reference interpreter: every direction with per-entry lengths (an entry shorter
than the sequence, one of length 0), clipping, coupled input-forget gates, peepholes, linear_before_reset and
non-default gate functions; float16 within float16's tolerance; a float64 recurrence refused naming the node;
and the cuda build gives PTX (the loop stays on the host: a step is a matmul and a gates kernel)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("iree.compiler")

from compiler import interp  # noqa: E402
from compiler.backends.mlir import BACKEND  # noqa: E402
from compiler.diagnostics import Unsupported  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import recurrent  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType  # noqa: E402
from tests.backends.recurrent_graphs import recurrent_graph  # noqa: E402

CPU = Target("llvm", num_threads=1)


def check(g: Graph, ins: list[np.ndarray], rtol=1e-5, atol=1e-5) -> None:
    want = interp.run(g, *ins)
    got = BACKEND.build(g, CPU).run(ins)
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and a.dtype == b.dtype, (k, a.shape, b.shape, a.dtype, b.dtype)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"output {k}")


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("op", [recurrent.lstm, recurrent.gru, recurrent.rnn], ids=lambda o: o.name)
def test_mlir_recurrent_matches_the_interpreter_with_lengths(op, direction):
    g, ins = recurrent_graph(op, direction)
    check(g, ins)
    y = BACKEND.build(g, CPU).run(ins)[0]
    assert not y[:, :, 2].any() and not y[2:, :, 1].any()      # rows past an entry's length are zero


@pytest.mark.parametrize("op,attrs", [
    (recurrent.lstm, {"direction": "reverse", "clip": 0.4, "input_forget": True}),
    (recurrent.lstm, {"direction": "forward", "activations": "hardsigmoid,elu,softsign",
                      "activation_alpha": (0.3, 0.5), "activation_beta": (0.4,)}),
    (recurrent.lstm, {"direction": "bidirectional", "peepholes": False,
                      "activations": "sigmoid,tanh,relu,sigmoid,leakyrelu,thresholdedrelu",
                      "activation_alpha": (0.1, 0.2)}),
    (recurrent.gru, {"direction": "forward", "linear_before_reset": True}),
    (recurrent.gru, {"direction": "reverse", "activations": "sigmoid,relu", "clip": 0.7}),
    (recurrent.gru, {"direction": "bidirectional", "activations": "affine,softplus,hardsigmoid,tanh",
                     "activation_alpha": (0.5, 0.3), "activation_beta": (0.1, 0.6)}),
    (recurrent.rnn, {"direction": "forward", "activations": "scaledtanh", "activation_alpha": (0.7,),
                     "activation_beta": (1.3,)}),
], ids=lambda v: v.name if hasattr(v, "name") else ",".join(f"{k}={v}" for k, v in v.items()))
def test_mlir_recurrent_variants(op, attrs):
    direction = attrs.pop("direction")
    check(*recurrent_graph(op, direction, **attrs))


def test_mlir_float16_lstm_runs_in_float32_within_float16s_tolerance():
    g, ins = recurrent_graph(recurrent.lstm, "bidirectional", dtype=DType.F16)
    check(g, ins, rtol=1e-2, atol=1e-2)


def test_mlir_float64_recurrence_is_refused_naming_the_node():
    g, _ = recurrent_graph(recurrent.gru, "forward", dtype=DType.F64)
    with pytest.raises(Unsupported, match="nn.gru in float64"):
        BACKEND.build(g, CPU)


def test_mlir_recurrent_builds_for_cuda():
    g, _ = recurrent_graph(recurrent.lstm, "bidirectional", steps=16, n=2, i=32, h=64)
    ptx = BACKEND.build(g, Target.parse("cuda -arch=sm_90")).source("ptx")
    assert ".target sm_90" in ptx and ptx.count(".entry") >= 3      # projection, step matmul, gates
