"""Shared test helpers: small graph builders and the backend-availability markers."""
from __future__ import annotations

import importlib.util
import os
import tempfile

import numpy as np
import pytest

# cost-model decisions are cached on disk; tests never read or write the user's cache
os.environ.setdefault("DYC_CACHE_DIR", tempfile.mkdtemp(prefix="dyc-test-cache-"))


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


requires_tvm = pytest.mark.skipif(not has_module("tvm"), reason="apache-tvm is not installed")
requires_torch = pytest.mark.skipif(not has_module("torch"), reason="torch is not installed")
requires_ort = pytest.mark.skipif(not has_module("onnxruntime"), reason="onnxruntime is not installed")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
