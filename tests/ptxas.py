"""Test helper: assemble PTX with ptxas, as the GPU's driver would, without a GPU."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest


def assemble(ptx: str, arch: str = "sm_90") -> str:
    """ptxas -v on `ptx` for `arch` (the test is skipped where ptxas is not installed): asserts that it assembles
    and returns ptxas's report."""
    if shutil.which("ptxas") is None:
        pytest.skip("ptxas is not installed")
    r = subprocess.run(["ptxas", f"-arch={arch}", "-v", "-", "-o", "/dev/null"], input=ptx, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    return r.stderr


def usage(report: str, kernel: str) -> tuple[int, int]:
    """(registers, spill-store bytes) of the kernel whose name ends with `kernel` in an assemble() report."""
    info = report.split(f"{kernel}'")[-1] if f"{kernel}'" in report else report.split(kernel)[-1]
    spills = re.search(r"(\d+) bytes spill stores", info)
    return int(re.search(r"Used (\d+) registers", info).group(1)), int(spills.group(1)) if spills else 0
