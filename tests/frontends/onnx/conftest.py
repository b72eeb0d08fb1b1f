"""Helpers for ONNX frontend tests: build tiny models with onnx.helper, and compare the
reference interpreter on `load_onnx(model)` with onnxruntime (the oracle, in tests only)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from compiler import interp
from compiler.ir import Graph
from frontends.onnx import load_onnx

ort = pytest.importorskip("onnxruntime")


def build_model(nodes: Sequence[onnx.NodeProto], inputs: Mapping[str, np.ndarray],
               outputs: Sequence[str], opset: int,
               initializers: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """A model over `nodes`; graph inputs typed like the feed arrays, output types inferred."""
    value_infos = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype),
                                                 a.shape) for name, a in inputs.items()]
    inits = [numpy_helper.from_array(np.asarray(a), name)
             for name, a in (initializers or {}).items()]
    graph = helper.make_graph(list(nodes), "test", value_infos,
                              [onnx.ValueInfoProto(name=o) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10 if opset >= 21 else 8
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def run_ort(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, dict(feeds))


def assert_outputs_match(got: Sequence[np.ndarray], want: Sequence[np.ndarray],
                         rtol: float = 1e-5, atol: float = 1e-5) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        w = np.asarray(w)
        assert g.shape == w.shape, f"output {i}: shape {g.shape} != {w.shape}"
        assert g.dtype == w.dtype, f"output {i}: dtype {g.dtype} != {w.dtype}"
        if np.issubdtype(w.dtype, np.floating):
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"output {i}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"output {i}")


def check_model(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                rtol: float = 1e-5, atol: float = 1e-5) -> Graph:
    """load_onnx + interp must agree with onnxruntime; returns the imported graph."""
    want = run_ort(model, feeds)
    g = load_onnx(model)
    got = interp.run(g, **feeds)
    assert_outputs_match(got, want, rtol, atol)
    return g


def check_single_node(op_type: str, feeds: Mapping[str, np.ndarray], opset: int,
               initializers: Mapping[str, np.ndarray] | None = None, n_outputs: int = 1,
               input_names: Sequence[str] | None = None, rtol: float = 1e-5, atol: float = 1e-5,
               **attrs) -> Graph:
    """A single-node model over the feeds (run-time inputs) then the initializers (constants)."""
    names = list(input_names) if input_names is not None else \
        list(feeds) + list(initializers or {})
    outs = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, names, outs, name=f"{op_type.lower()}_node", **attrs)
    model = build_model([node], feeds, outs, opset, initializers)
    return check_model(model, feeds, rtol, atol)


# Fixtures hand the helpers to tests, so they work under any pytest import mode.
@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def make_model():
    return build_model


@pytest.fixture
def check():
    return check_model


@pytest.fixture
def check_node():
    return check_single_node
