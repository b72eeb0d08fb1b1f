"""ONNX's node conformance cases (onnx.backend.test.case.node) through load_onnx and the
reference interpreter, as benchmarks/onnx_conformance.py runs them: no in-scope case may give a
wrong result or a bare exception (a failure must be our Unsupported / InvalidModel error), and
the pass rate may not fall below what it is."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

PASS_RATE_FLOOR = 0.97          # 1721 / 1746 in-scope cases pass today (shape-like inputs baked)


def _runner():
    spec = importlib.util.spec_from_file_location("onnx_conformance", ROOT / "benchmarks" / "onnx_conformance.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("onnx_conformance", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def results():
    import warnings

    import numpy as np
    from onnx.backend.test.case.node import collect_testcases
    conf = _runner()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = collect_testcases()
        return {c.name: (conf.scope_of(c), *conf.run_case(c, "interp")) for c in cases
                if conf.scope_of(c) in ("in", "data-dependent")}


@pytest.mark.slow
def test_conformance_no_wrong_results_or_crashes(results):
    bad = {name: why for name, (scope, status, why) in results.items()
           if scope == "in" and status in ("wrong", "crash")}
    assert not bad, f"{len(bad)} wrong results / bare exceptions: {bad}"


@pytest.mark.slow
def test_conformance_pass_rate(results):
    in_scope = [status for scope, status, _ in results.values() if scope == "in"]
    rate = sum(s.startswith("pass") for s in in_scope) / len(in_scope)
    assert rate >= PASS_RATE_FLOOR, f"pass rate {rate:.3f} < {PASS_RATE_FLOOR}"


@pytest.mark.slow
def test_conformance_data_dependent_ops_are_unsupported(results):
    """NonZero, Unique, Loop, ... (output shapes from the data) are refused with Unsupported."""
    statuses = {name: status for name, (scope, status, _) in results.items() if scope == "data-dependent"}
    assert statuses and set(statuses.values()) == {"unsupported"}, statuses
