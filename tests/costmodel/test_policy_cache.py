"""The policy's on-disk decision cache: a second compile of the same kernels does not ask the model and decides
the same; another model (or feature version) never reuses an entry; a corrupt file is ignored."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.conftest import has_module

pytestmark = pytest.mark.skipif(not has_module("tvm"), reason="apache-tvm is not installed")
needs_xgb = pytest.mark.skipif(not has_module("xgboost"), reason="xgboost is not installed")


@pytest.fixture(scope="module")
def kernel_set():
    from costmodel import measure as Me
    return [Me.conv_spec(64, 56, 64, 3, 1, 1), Me.conv_spec(1024, 14, 256, 1, 1, 0),
            Me.qconv_spec(64, 56, 64, 3, 1, 1), Me.qconv_spec(256, 14, 1024, 1, 1, 0),
            Me.matmul_spec((1,), 128, 384, 384)]


class _Counting:
    """Prefers large tile_a, then large tile_b (deterministic); counts predict() calls."""

    def __init__(self, identity, sign=1.0):
        from costmodel import features as F
        self.feature_names = F.FEATURE_NAMES
        self.identity = identity
        self.sign = sign
        self.calls = 0

    def predict(self, X):
        from costmodel import features as F
        self.calls += 1
        ia, ib = F.FEATURE_NAMES.index("tile_a"), F.FEATURE_NAMES.index("tile_b")
        return self.sign * -(X[:, ia] * 100 + X[:, ib])


def _compile(specs, target="llvm -mcpu=znver4 -num-cores=1"):
    from costmodel import policy
    return [policy.choose(s, target) for s in specs]


def test_second_compile_does_not_ask_the_model(kernel_set):
    from costmodel import policy
    m = _Counting("stub-v1")
    with policy.use_model(m):
        first = _compile(kernel_set)
        assert m.calls == len(kernel_set) and all(src == "model" for _, src in first)
    path = os.path.join(os.environ["DYC_CACHE_DIR"], policy.DECISIONS_FILE)
    assert os.path.exists(path)
    with policy.use_model(m):            # a fresh in-process cache: as a second process would start
        again = _compile(kernel_set)
    assert m.calls == len(kernel_set) and again == first


def test_another_model_does_not_reuse_entries(kernel_set):
    from costmodel import policy
    with policy.use_model(_Counting("stub-v1")):
        a = _compile(kernel_set)
    retrained = _Counting("stub-v2", sign=-1.0)      # prefers the smallest tiles
    with policy.use_model(retrained):
        b = _compile(kernel_set)
    assert retrained.calls == len(kernel_set) and a != b
    again = _Counting("stub-v1")                      # the first model again: its own entries, no prediction
    with policy.use_model(again):
        assert _compile(kernel_set) == a and again.calls == 0


def test_target_and_feature_version_are_in_the_key(kernel_set, monkeypatch):
    from costmodel import features as F
    from costmodel import policy
    m = _Counting("stub-v1")
    with policy.use_model(m):
        _compile(kernel_set[:1])
        _compile(kernel_set[:1], "llvm -mcpu=znver4 -num-cores=2")
        assert m.calls == 2
    monkeypatch.setattr(F, "FEATURE_VERSION", F.FEATURE_VERSION + 100)
    with policy.use_model(m):
        _compile(kernel_set[:1])
        assert m.calls == 3


def test_models_without_identity_stay_in_process(kernel_set):
    from costmodel import policy
    m = _Counting(None)
    with policy.use_model(m):
        _compile(kernel_set)
    assert not os.path.exists(os.path.join(os.environ["DYC_CACHE_DIR"], policy.DECISIONS_FILE))


@pytest.mark.parametrize("content", ["{not json", "", '{"format": "other", "entries": {}}', "[1, 2]",
                                     '{"format": "dyc-policy-cache", "version": 1, "entries": {"k": 3}}'])
def test_corrupt_cache_file_is_ignored(kernel_set, content):
    from costmodel import policy
    d = os.environ["DYC_CACHE_DIR"]
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, policy.DECISIONS_FILE)
    with open(path, "w") as f:
        f.write(content)
    m = _Counting("stub-v1")
    with policy.use_model(m):
        assert all(src == "model" for _, src in _compile(kernel_set))
    assert m.calls == len(kernel_set)
    with open(path) as f:                             # rewritten whole
        obj = json.load(f)
    assert obj["format"] == policy.CACHE_FORMAT and len(obj["entries"]) == len(kernel_set)


def test_malformed_entry_is_a_miss(kernel_set):
    from costmodel import policy
    with policy.use_model(_Counting("stub-v1")):
        _compile(kernel_set[:1])
    path = os.path.join(os.environ["DYC_CACHE_DIR"], policy.DECISIONS_FILE)
    with open(path) as f:
        obj = json.load(f)
    for e in obj["entries"].values():
        e["tile"] = [999, 999]                        # not a valid candidate
    with open(path, "w") as f:
        json.dump(obj, f)
    m = _Counting("stub-v1")
    with policy.use_model(m):
        (tile, _src), = _compile(kernel_set[:1])
    assert m.calls == 1 and tile != (999, 999)


def test_disk_cache_off(kernel_set, monkeypatch, tmp_path):
    from costmodel import policy
    monkeypatch.setenv("DYC_CACHE_DIR", "off")
    assert policy.cache_dir() is None and policy.decision_cache() is None
    m = _Counting("stub-v1")
    with policy.use_model(m):
        _compile(kernel_set)
    with policy.use_model(m):
        _compile(kernel_set)
    assert m.calls == 2 * len(kernel_set)


def test_unwritable_cache_dir_is_not_an_error(kernel_set, monkeypatch, tmp_path):
    from costmodel import policy
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("DYC_CACHE_DIR", str(blocker / "sub"))      # a directory below a plain file
    with policy.use_model(_Counting("stub-v1")):
        assert all(src == "model" for _, src in _compile(kernel_set))


@needs_xgb
def test_default_model_is_not_loaded_on_a_cache_hit(kernel_set, monkeypatch):
    """The shipped model file: the first compile loads it and fills the cache; after that, with the loaded
    model forgotten, the decisions come from the disk without loading it."""
    from costmodel import policy
    if policy.model_path() is None:
        pytest.skip("no model file")
    policy.clear_cache()
    try:
        first = _compile(kernel_set)
        assert all(src == "model" for _, src in first)
        policy.clear_cache()
        from costmodel import model as Mo
        monkeypatch.setattr(Mo.XGBCostModel, "load", classmethod(lambda cls, p: pytest.fail("model loaded")))
        assert _compile(kernel_set) == first
    finally:
        policy.clear_cache()


@needs_xgb
def test_retrained_xgb_model_has_another_identity():
    from costmodel import features as F
    from costmodel.measure import conv_spec, task_name
    from costmodel.model import XGBCostModel, dataset_from_rows
    spec = conv_spec(64, 28, 64, 3, 1, 1)
    rows = [{"task": task_name(spec), "spec": F.spec_to_json(spec), "tile": list(t),
             "latency_s": 1e-3 * (1 + abs(t[0] * t[1] - k) / 8), "machine": {"mcpu": "znver4", "threads": 1}}
            for k in (12,) for t in F.candidate_tiles(spec)]
    ds = dataset_from_rows(rows)
    a = XGBCostModel("reg", 10).fit(ds)
    b = XGBCostModel("reg", 10, params={"seed": 1, "eta": 0.3}).fit(ds)
    assert a.identity and b.identity and a.identity != b.identity
    assert a.identity == a.identity
    assert np.all(np.isfinite(a.predict(ds.X)))
