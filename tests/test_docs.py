"""Generated documentation is current."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("iree") is None or importlib.util.find_spec("tvm") is None,
                    reason="needs both backends")
def test_ops_table_is_current():
    spec = importlib.util.spec_from_file_location("gen", ROOT / "docs" / "gen_ops_table.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (ROOT / "docs" / "ops.md").read_text() == gen.table(), "run: python docs/gen_ops_table.py"
