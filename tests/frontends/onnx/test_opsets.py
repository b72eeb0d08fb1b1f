"""The opset gate: models at opsets 7..28 are accepted node by node by each op's since-version;
a version whose meaning changed and is not implemented is refused naming op and version."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import defs, helper

from compiler.diagnostics import Unsupported
from frontends.onnx import load_onnx
from frontends.onnx.importer import CONVERTERS
from frontends.onnx.opsets import BASE_OPSETS, MAX_OPSET, TYPES_ONLY, implemented_versions


def test_types_only_versions_are_real_since_versions():
    for op, versions in TYPES_ONLY.items():
        have = {s.since_version for s in defs.get_all_schemas_with_history()
                if s.name == op and s.domain == ""}
        assert set(versions) <= have, (op, versions, have)


def test_every_converted_op_version_above_21_is_reviewed():
    """A new onnx release that re-versions a converted op must be looked at: its new version is
    either types-only (TYPES_ONLY) or refused on purpose (listed here)."""
    refused_on_purpose: set[tuple[str, int]] = set()
    unreviewed = []
    for op in CONVERTERS:
        if "." in op:
            continue
        base_max = max(v for v in BASE_OPSETS)
        for s in defs.get_all_schemas_with_history():
            if s.name == op and s.domain == "" and s.since_version > base_max and \
                    s.since_version not in implemented_versions(op) and \
                    (op, s.since_version) not in refused_on_purpose:
                unreviewed.append((op, s.since_version))
    assert not unreviewed, f"review these op versions (types only? add to TYPES_ONLY): {unreviewed}"


@pytest.mark.parametrize("opset", [7, 8, 13, 21, 22, 25, MAX_OPSET])
def test_opsets_7_to_max_import(check_node, rng, opset):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    check_node("Relu", {"x": x}, opset) if opset <= 23 else load_onnx(_model("Relu", opset))


def _model(op_type: str, opset: int, inits=(), **attrs):
    from onnx import numpy_helper
    names = ["x"] + [f"p{i}" for i in range(len(inits))]
    node = helper.make_node(op_type, names, ["y"], name="n0", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [2, 3])],
                              [helper.make_tensor_value_info("y", 1, [2, 3])],
                              [numpy_helper.from_array(a, f"p{i}") for i, a in enumerate(inits)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def test_changed_op_version_is_refused_naming_op_and_version():
    """BatchNormalization-7 (opset 7, with its `spatial` attribute) is not implemented."""
    p = np.ones(3, np.float32)
    with pytest.raises(Unsupported, match=r"BatchNormalization-7 .*not implemented.*"
                                          r"BatchNormalization-9") as e:
        load_onnx(_model("BatchNormalization", 7, inits=[p, p, p, p]))
    assert e.value.code == 3 and "n0" in str(e.value)


def test_op_version_not_implemented_is_named():
    from frontends.onnx.opsets import version_problem
    node = helper.make_node("Softmax", ["x"], ["y"])
    assert version_problem(node, 21) is None
    assert version_problem(node, 7) is None              # Softmax-1 = Softmax at opset 9..12
    node = helper.make_node("BatchNormalization", ["x"], ["y"])
    problem = version_problem(node, 7)                     # BatchNormalization-7 (spatial attribute)
    assert problem is not None and "BatchNormalization-7" in problem and "BatchNormalization-9" in problem


def test_opset_above_the_onnx_version_is_refused():
    with pytest.raises(Unsupported, match=f"supported: 7..{MAX_OPSET}"):
        load_onnx(_model("Relu", MAX_OPSET + 1))
