"""Loading checks the host: an artifact whose target CPU has instruction-set extensions this machine
lacks (read from /proc/cpuinfo here, independently of the compiler) is refused with exit 2, naming
the missing features and the target it was built for."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

import compiler
from tests.conftest import requires_tvm
from tests.tools.conftest import call

pytestmark = requires_tvm

# CPUs LLVM knows, each with extensions it certainly has: /proc/cpuinfo flag -> LLVM's name
CANDIDATES = {
    "sapphirerapids": {"amx_tile": "amx-tile", "amx_int8": "amx-int8", "avx512_fp16": "avx512fp16"},
    "icelake-server": {"avx512_vnni": "avx512vnni", "avx512_vbmi2": "avx512vbmi2"},
    "skylake-avx512": {"avx512f": "avx512f", "avx512bw": "avx512bw"},
    "haswell": {"avx2": "avx2", "fma": "fma"},
}


def _host_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def _foreign_cpu() -> tuple[str, list[str]]:
    """A CPU whose code this host cannot run, and (LLVM's names of) some extensions it lacks."""
    flags = _host_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags: the host's features are unknown here")
    for cpu, features in CANDIDATES.items():
        lacking = [llvm for flag, llvm in features.items() if flag not in flags]
        if lacking:
            return cpu, lacking
    pytest.skip("this host has every extension of the candidate CPUs")


def _retarget(src: Path, dst: Path, target: str) -> Path:
    """`src` with its manifest's target replaced (the members, and so their hashes, unchanged)."""
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(members["manifest.json"])
    manifest["target"] = target
    members["manifest.json"] = json.dumps(manifest, indent=2, sort_keys=True).encode()
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return dst


def test_load_refuses_an_artifact_built_for_features_the_host_lacks(artifacts, capsys, tmp_path):
    cpu, lacking = _foreign_cpu()
    dyc = _retarget(artifacts["digits"], tmp_path / "foreign.dyc", f"llvm -mcpu={cpu} -num-threads=1")
    with pytest.raises(compiler.ArtifactError) as e:
        compiler.load(dyc)
    assert f"-mcpu={cpu}" in str(e.value) and all(f in str(e.value) for f in lacking)
    for verb in (["run", dyc, "--random"], ["bench", dyc, "--repeat", "1"]):
        code, out, err = call(capsys, *verb)
        assert code == 2 and out == ""
        assert f"-mcpu={cpu}" in err and all(f in err for f in lacking), err


def test_an_artifact_built_here_loads_and_its_retargeted_copy_to_the_host_cpu_too(artifacts, tmp_path):
    from compiler.host import host_cpu_name
    compiler.load(artifacts["digits"])
    same = _retarget(artifacts["digits"], tmp_path / "same.dyc", f"llvm -mcpu={host_cpu_name()}")
    assert compiler.load(same).target.cpu == host_cpu_name()


def test_runtime_only_loading_does_not_import_the_compiler(tmp_path):
    """DYC_RUNTIME_ONLY=1 where apache-tvm is installed (gpu_check --cpu here): loading a CPU artifact
    checks the host without importing tvm, whose compiler libraries would map beside the runtime's."""
    import os
    import subprocess
    import sys

    from compiler.ir import Graph
    from compiler.ops import elementwise as ew
    from compiler.types import DType, TensorType
    g = Graph()
    x = g.add_input("x", TensorType((4,), DType.F32))
    g.outputs = [g.add1(ew.relu, [x])]
    compiler.compile(g, target="llvm -num-threads=1").save(tmp_path / "m.dyc")
    code = ("import sys, numpy as np, compiler; m = compiler.load(sys.argv[1]); "
            "print(m.run(np.array([-1, 2, -3, 4], np.float32))[0].tolist(), 'tvm' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.dyc")], capture_output=True, text=True,
                       env={**os.environ, "DYC_RUNTIME_ONLY": "1"}, cwd=Path(__file__).parents[2])
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["[0.0,", "2.0,", "0.0,", "4.0]", "False"]
