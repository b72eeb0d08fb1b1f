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


def test_bench_profile_lists_kernels_with_ops_rates_and_roofline_shares(artifacts, capsys, tmp_path):
    code, out, err = call(capsys, "bench", artifacts["digits"], "--warmup", "1", "--repeat", "2",
                          "--profile", "--profile-runs", "2", "--json", tmp_path / "p.json")
    assert code == 0, err
    table = out[out.index("per kernel"):].splitlines()
    assert table[1].split() == ["kernel", "op", "calls", "ms", "share", "rate", "roof", "node"]
    kernels = {ln.split()[0]: ln for ln in table[2:] if ln.startswith("  ") and not ln.startswith("  (")}
    convs = [ln for k, ln in kernels.items() if k.startswith("conv2d")]
    assert len(convs) == 3 and all(" nn.conv " in ln and "GFLOP/s" in ln and "%" in ln for ln in convs)
    assert any("/features/features.0/Conv" in ln for ln in convs)       # the IR node it runs
    assert table[-1].startswith("  roof: ") and "stated" in table[-1] and "measured" in table[-1]
    shares = [float(m) for m in re.findall(r"\s(\d+\.\d)%", "\n".join(table[2:-1]))]
    assert sum(shares) == pytest.approx(100, abs=1.5)
    rows = {r["kernel"]: r for r in json.loads((tmp_path / "p.json").read_text())["profile"]["kernels"]}
    conv = next(r for k, r in rows.items() if k.startswith("conv2d"))
    assert conv["op"] == "nn.conv" and conv["unit"] == "GFLOP/s" and conv["rate"] > 0 and 0 < conv["roof"]


@requires_ort
def test_bench_profile_of_an_integer_artifact_reports_gop_per_second(int8_artifact, capsys):
    code, out, err = call(capsys, "bench", int8_artifact[0], "--warmup", "1", "--repeat", "2",
                          "--profile", "--profile-runs", "2")
    assert code == 0, err
    qconvs = [ln for ln in out.splitlines() if ln.strip().startswith("qconv2d")]
    assert len(qconvs) == 3 and all(" q.conv " in ln and "GOP/s" in ln for ln in qconvs)


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


@requires_tvm                   # LLVM's feature lists of the CPUs
def test_roofline_of_an_amx_cpu_prices_the_amx_kernels_at_the_tiles_peak():
    from compiler.tools.kernels import AMX_INT8_OPS_PER_CYCLE, Roofline, roofline
    r = Roofline(1e12, 4e12, 1e11, "stated", amx_peak=32e12)
    assert r.roof(10**9, 1, True, amx=True) == 32e12 and r.roof(10**9, 1, True) == 4e12
    assert Roofline(1e12, 4e12, 1e11, "stated").roof(10**9, 1, True, amx=True) == 4e12    # no AMX: VNNI's
    assert r.roof(10**9, 1, True, int16=True) == 2e12          # vpdpwssd: half of vpdpbusd's multiply-adds
    spr, icl = roofline("sapphirerapids", 1), roofline("icelake-server", 1)
    assert spr.amx_peak == pytest.approx(AMX_INT8_OPS_PER_CYCLE / 64 * spr.fp32_peak) and "AMX" in spr.source
    assert icl.amx_peak == 0.0 and "AMX" not in icl.source
