"""`compile bench MODEL.dyc`: the timing table, the side-by-side onnxruntime rows with their ratio
lines (FP32; INT8 from quantize_static for an integer artifact with --data), the per-kernel
profile, JSON output and errors. No assertion is about how fast anything is."""
from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import pytest

from tests.conftest import requires_ort, requires_tvm
from tests.tools.conftest import call

pytestmark = requires_tvm
ROW = re.compile(r"^(dyc|onnxruntime [\w ]+?)\s+((?:\d+\.\d+\s+){5}\d+\.\d+)\s*$")
RATIO = re.compile(r"^ratio\s+dyc / (onnxruntime [\w ]+?) = (\d+\.\d+)x")


def rows(out: str) -> dict[str, list[float]]:
    return {m[1]: [float(v) for v in m[2].split()] for m in map(ROW.match, out.splitlines()) if m}


def test_bench_table_has_ordered_statistics(artifacts, capsys):
    code, out, err = call(capsys, "bench", artifacts["digits"], "--warmup", "1", "--repeat", "5",
                          "--threads", "1")
    assert code == 0, err
    assert "median" in out and "p99" in out and "threads  1" in out
    median, lo, hi, mean, p90, p99 = rows(out)["dyc"]
    assert lo <= median <= hi and lo <= mean <= hi and median <= p90 <= p99 <= hi
    assert "ratio" not in out


@requires_ort
def test_bench_compare_prints_both_runtimes_and_the_ratio(artifacts, capsys, tmp_path):
    code, out, err = call(capsys, "bench", artifacts["digits"], "--compare", artifacts["digits_onnx"],
                          "--warmup", "1", "--repeat", "5", "--threads", "1", "--json", tmp_path / "b.json")
    assert code == 0, err
    table = rows(out)
    assert set(table) == {"dyc", "onnxruntime FP32"}
    ratios = {m[1]: float(m[2]) for m in map(RATIO.match, out.splitlines()) if m}
    assert list(ratios) == ["onnxruntime FP32"]
    result = json.loads((tmp_path / "b.json").read_text())
    want = result["runtimes"]["dyc"]["median_ms"] / result["runtimes"]["onnxruntime FP32"]["median_ms"]
    assert result["ratios"]["onnxruntime FP32"] == pytest.approx(want)
    assert ratios["onnxruntime FP32"] == pytest.approx(want, abs=0.006)
    assert result["threads"] == 1 and result["max_abs_diff"]["onnxruntime FP32"] < 1e-4


@requires_ort
def test_bench_integer_artifact_with_data_adds_onnxruntime_int8(int8_artifact, artifacts, capsys):
    dyc, calib = int8_artifact
    code, out, err = call(capsys, "bench", dyc, "--compare", artifacts["digits_onnx"], "--data", calib,
                          "--warmup", "1", "--repeat", "3", "--threads", "1")
    assert code == 0, err
    assert "integer" in out.splitlines()[0]
    assert set(rows(out)) == {"dyc", "onnxruntime FP32", "onnxruntime INT8 qoperator"}
    ratios = [m[1] for m in map(RATIO.match, out.splitlines()) if m]
    assert ratios == ["onnxruntime FP32", "onnxruntime INT8 qoperator"]
    assert "batch 0 of 16" in err            # the inputs came from --data


@requires_ort
def test_bench_integer_artifact_without_data_says_how_to_add_int8(int8_artifact, artifacts, capsys):
    code, out, err = call(capsys, "bench", int8_artifact[0], "--compare", artifacts["digits_onnx"],
                          "--warmup", "0", "--repeat", "2")
    assert code == 0, err
    assert "--data" in out and "onnxruntime INT8" not in "".join(rows(out))


def test_bench_profile_lists_kernels_with_shares(artifacts, capsys):
    code, out, err = call(capsys, "bench", artifacts["digits"], "--warmup", "1", "--repeat", "2",
                          "--profile", "--profile-runs", "2")
    assert code == 0, err
    table = out[out.index("per kernel"):].splitlines()
    assert table[1].split() == ["kernel", "calls", "ms", "share"]
    kernels = [ln.split() for ln in table[2:]]
    assert any(k[0].startswith("conv2d") for k in kernels)
    shares = [float(k[-1].rstrip("%")) for k in kernels]
    assert sum(shares) == pytest.approx(100, abs=1.0)


def test_bench_without_onnxruntime_says_how_to_get_it(artifacts, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a))
    code, _, err = call(capsys, "bench", artifacts["digits"], "--compare", artifacts["digits_onnx"])
    assert code == 3 and "onnxruntime" in err and "pip install onnxruntime" in err


def test_bench_errors_exit_2_and_write_nothing(artifacts, capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8), np.float32))
    code, _, err = call(capsys, "bench", artifacts["digits"], "-i", f"input={tmp_path / 'x.npy'}",
                        "--json", tmp_path / "b.json")
    assert code == 2 and "'input'" in err and "float32[1, 1, 8, 8]" in err
    code, _, err = call(capsys, "bench", artifacts["digits"], "--compare", tmp_path / "nope.onnx")
    assert code == 2 and "nope.onnx" in err
    code, _, err = call(capsys, "bench", artifacts["digits"], "--repeat", "0")
    assert code == 2 and "--repeat" in err
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob(".b.json*"))
