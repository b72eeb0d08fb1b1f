"""The report renders in a browser: headless Chromium (Debian's `chromium` package) loads index.html,
and the DOM it builds holds every section and every image decoded with a size. Skips, saying why,
where Chromium is not installed."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import requires_tvm
from tests.tools.conftest import call


def _chromium() -> str | None:
    """Chromium's path: Debian's package installs /usr/bin/chromium."""
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "/usr/bin/chromium")) if p), None)


BROWSER = _chromium()
pytestmark = [requires_tvm, pytest.mark.slow,
              pytest.mark.skipif(BROWSER is None, reason="headless Chromium is not installed "
                                                         "(Debian: apt-get install chromium)")]

# after the page loads, each <img> records whether it decoded (naturalWidth > 0) in the DOM Chromium dumps
_PROBE = """<script>window.addEventListener("load", () => { for (const img of document.images)
  img.setAttribute("data-decoded", img.complete && img.naturalWidth > 0 ? img.naturalWidth : 0); });</script>"""


def _dump_dom(browser: str, page) -> str:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
           "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_report_renders_its_sections_and_images_in_headless_chromium(int8_artifact, artifacts, capsys, tmp_path):
    _, calib = int8_artifact
    out_dir = tmp_path / "rep"
    code, _, err = call(capsys, "report", artifacts["digits_onnx"], "--quantize", "int8", "--integer-only",
                        "--data", calib, "--repeat", "3", "-q", "-o", out_dir)
    assert code == 0, err
    page = (out_dir / "index.html").read_text()
    probe = out_dir / "probe.html"                 # the page itself plus the load-time probe
    probe.write_text(page.replace("</body>", _PROBE + "</body>"))
    dom = _dump_dom(BROWSER, probe)
    sections = re.findall(r'<section id="([a-z]+)"', dom)
    assert sections[:7] == ["artifact", "compile", "passes", "ops", "quantization", "memory", "energy"]
    assert {"latency", "kernels"} <= set(sections)
    images = re.findall(r'<img src="([\w.]+)"[^>]*data-decoded="(\d+)"', dom)
    assert {src for src, _ in images} == {"passes.png", "sqnr.png", "memory.png", "energy.png", "kernels.png"}
    assert all(int(width) > 0 for _, width in images), images
