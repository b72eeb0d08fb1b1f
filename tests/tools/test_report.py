"""`compile report`: from a .dyc and from an .onnx (compiled with --quantize), the text, JSON and
HTML it writes hold their sections; mistakes exit 2 and create nothing."""
from __future__ import annotations

import json
from html.parser import HTMLParser

from tests.conftest import requires_ort, requires_tvm
from tests.tools.conftest import call

pytestmark = requires_tvm


class _Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.ids.append(dict(attrs)["id"])
        if tag in ("section", "table", "tr", "html", "body"):
            self.open.append(tag)

    def handle_endtag(self, tag):
        if tag in ("section", "table", "tr", "html", "body"):
            assert self.open.pop() == tag


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def _images(folder) -> dict[str, str]:
    """The report's images (section -> file): each referenced by the page, a PNG next to it."""
    rep = json.loads((folder / "report.json").read_text())
    p = _Images()
    p.feed((folder / "index.html").read_text())
    assert sorted(p.srcs) == sorted(rep["images"].values())
    for name in p.srcs:
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return rep["images"]


def _sections(page: str) -> list[str]:
    p = _Sections()
    p.feed(page)
    assert p.open == [], p.open            # every section, table and row is closed
    return p.ids


@requires_ort
def test_report_of_an_artifact_with_comparison(int8_artifact, artifacts, capsys, tmp_path):
    dyc, calib = int8_artifact
    code, out, err = call(capsys, "report", dyc, "--compare", artifacts["digits_onnx"], "--data", calib,
                          "--repeat", "3", "--threads", "1", "-o", tmp_path / "rep")
    assert code == 0, err
    assert _sections((tmp_path / "rep" / "index.html").read_text()) == \
        ["artifact", "ops", "memory", "energy", "accuracy", "latency", "kernels"]
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert _images(tmp_path / "rep") == {"memory": "memory.png", "energy": "energy.png", "kernels": "kernels.png"}
    assert rep["memory"]["arena_bytes"] >= rep["memory"]["lower_bound_bytes"] > 0
    assert "arena" in out and "lower bound" in out and "Relax's planner" in out
    assert {r["op"] for r in rep["profile"]["rows"] if r["kernel"].startswith("qconv2d")} == {"q.conv"}
    assert rep["integer"] and rep["ops_after"]["q.conv"] == 3
    assert set(rep["latency"]["runtimes"]) == {"dyc", "onnxruntime FP32"}
    assert rep["accuracy"]["batches"] == 16 and rep["accuracy"]["cosine_min"] > 0.99
    assert (tmp_path / "rep" / "report.txt").read_text() == out
    assert "ratio dyc / onnxruntime FP32 = " in out


def test_report_compiles_an_onnx_model_with_quantization(int8_artifact, artifacts, capsys, tmp_path):
    _, calib = int8_artifact
    code, out, err = call(capsys, "report", artifacts["digits_onnx"], "--quantize", "int8", "--integer-only",
                          "--data", calib, "--no-bench", "-o", tmp_path / "rep")
    assert code == 0, err
    ids = _sections((tmp_path / "rep" / "index.html").read_text())
    assert ids[:7] == ["artifact", "compile", "passes", "ops", "quantization", "memory", "energy"]
    assert "latency" not in ids
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert _images(tmp_path / "rep") == {"passes": "passes.png", "quantization": "sqnr.png",
                                         "memory": "memory.png", "energy": "energy.png"}
    names = [n for n, _ in rep["pass_times"]]
    assert names[0] == "fold_constants" and {"annotate", "fuse_kernels", "plan_memory"} <= set(names)
    assert all(t >= 0 for _, t in rep["pass_times"]) and "plan_memory" in out
    assert rep["ops_before"]["nn.conv"] == 3 and rep["ops_after"].get("nn.conv", 0) == 0
    assert [r["op"] for r in rep["quant_rows"]][:3] == ["q.conv"] * 3
    assert all(r["sqnr_db"] > 20 for r in rep["quant_rows"][:3])
    assert "generated code for" in out and "SQNR" in out
    assert not list(tmp_path.glob("rep/*.dyc"))          # the compiled model stays temporary


def test_report_mistakes_exit_2_and_create_nothing(artifacts, capsys, tmp_path):
    code, _, err = call(capsys, "report", tmp_path / "nope.dyc", "-o", tmp_path / "rep")
    assert code == 2 and "nope.dyc" in err
    code, _, err = call(capsys, "report", artifacts["digits"], "--quantize", "int8", "-o", tmp_path / "rep")
    assert code == 2 and "--quantize" in err
    code, _, err = call(capsys, "report", artifacts["digits_onnx"], "--quantize", "int8", "-o", tmp_path / "rep")
    assert code == 2 and "--data" in err
    assert not (tmp_path / "rep").exists()
    (tmp_path / "file").write_text("x")
    code, _, err = call(capsys, "report", artifacts["digits"], "--no-bench", "-o", tmp_path / "file")
    assert code == 2 and "not a folder" in err
