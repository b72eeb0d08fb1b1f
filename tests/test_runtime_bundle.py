"""The runtime bundle (compiler/tools/runtime_bundle.py): a fresh virtualenv given only the bundle and numpy
loads .dyc artifacts of both backends and runs them bit-exactly as the compiling process does, and its
imports prove that no compiler was needed: no `tvm` package, no tvm.relax, no iree.compiler, and neither
libtvm_compiler.so nor IREE's compiler library mapped into the process."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.tools.runtime_bundle import check_imports, make_bundle
from tests.conftest import has_module, requires_tvm

# run in the fresh virtualenv: load and run each artifact, save the outputs, report what got imported
CHILD = r"""
import importlib.util, json, sys
import numpy as np
from compiler.runtime import load
inputs = dict(np.load("inputs.npz"))
report = {"executables": {}}
for name in sys.argv[1:]:
    m = load(name + ".dyc")
    np.savez(name + "_out.npz", *m.run(**inputs))
    report["executables"][name] = type(m.executable).__module__
report["modules"] = [m for m in sys.modules if m == "tvm" or m.startswith(("tvm.", "iree.compiler"))]
report["libraries"] = sorted({line.split()[-1] for line in open("/proc/self/maps")
                              if "libtvm_compiler" in line or "IREECompiler" in line})
report["installed"] = [m for m in ("tvm", "iree.compiler", "torch", "onnx")
                       if importlib.util.find_spec(m.split(".")[0]) and importlib.util.find_spec(m)]
print(json.dumps(report))
"""


def _model() -> tuple:
    """conv -> relu -> maxpool -> flatten -> matmul, plus a row of a table picked by an int64 input."""
    rng = np.random.default_rng(0)
    consts = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w1"),
              numpy_helper.from_array(rng.standard_normal((8 * 8 * 8, 10)).astype(np.float32) * 0.1, "w2"),
              numpy_helper.from_array(rng.standard_normal((5, 10)).astype(np.float32), "table"),
              numpy_helper.from_array(np.array([1, -1], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Reshape", ["p", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "w2"], ["m"]),
             helper.make_node("Gather", ["table", "ids"], ["t"]),
             helper.make_node("Add", ["m", "t"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16]),
                                       helper.make_tensor_value_info("ids", TensorProto.INT64, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], consts)
    inputs = {"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32), "ids": np.array([3], np.int64)}
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), inputs


def _fresh_venv(path: Path, bundle: Path) -> Path:
    """A virtualenv without pip or site packages; a .pth gives it the bundle and numpy alone."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(path)], check=True)
    deps = path / "deps"
    deps.mkdir()
    numpy_dir = Path(np.__file__).parent
    for d in (numpy_dir, numpy_dir.with_name("numpy.libs")):
        if d.exists():
            (deps / d.name).symlink_to(d)
    site = next(path.glob("lib/python3*/site-packages"))
    (site / "dyc_bundle.pth").write_text(f"{bundle}\n{deps}\n")
    return path / "bin" / "python"


@pytest.mark.slow
@requires_tvm
def test_runtime_bundle_runs_artifacts_bit_exactly_without_the_compilers(tmp_path):
    import compiler
    from compiler.backends import tvm_arena, tvm_runtime
    assert (tvm_runtime.ARENA_DTYPES, tvm_runtime.ARENA_MAX_RANK) == (tvm_arena._DTYPES, tvm_arena._MAX_RANK)
    model, inputs = _model()
    backends = ["tvm"] + (["mlir"] if has_module("iree") and has_module("iree.compiler") else [])
    want = {}
    for backend in backends:
        cm = compiler.compile(model, target="llvm", backend=backend)
        if backend == "tvm":
            assert cm.executable.arena.nbytes > 0        # the arena path is exercised too
        cm.save(tmp_path / f"{backend}.dyc")
        want[backend] = cm.run(**inputs)
    np.savez(tmp_path / "inputs.npz", **inputs)

    bundle = tmp_path / "bundle"
    assert make_bundle(bundle) <= 40e6
    assert not list(bundle.rglob("libtvm_compiler*")) and not (bundle / "iree" / "compiler").exists()
    python = _fresh_venv(tmp_path / "venv", bundle)
    out = subprocess.run([str(python), "-I", "-c", CHILD, *backends], cwd=tmp_path, capture_output=True,
                         text=True, check=False, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["installed"] == []
    assert report["executables"] == {b: f"compiler.backends.{b}_runtime" for b in backends}
    assert report["modules"] == [] and report["libraries"] == []
    for backend in backends:
        got = np.load(tmp_path / f"{backend}_out.npz")
        assert len(got.files) == len(want[backend])
        for i, w in enumerate(want[backend]):
            np.testing.assert_array_equal(got[f"arr_{i}"], w)


@requires_tvm
def test_runtime_bundle_fails_over_its_size_limit_and_keeps_the_old_folder(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep").write_text("old")
    with pytest.raises(SystemExit, match=r"MB, over the 1 MB limit"):
        make_bundle(out, max_mb=1)
    assert [p.name for p in out.iterdir()] == ["keep"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]     # no staging folder left behind


def test_runtime_bundle_refuses_a_module_importing_what_it_does_not_bundle(tmp_path):
    pkg = tmp_path / "compiler"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "runtime.py").write_text("from compiler.pipeline import pipeline_for\n"
                                    "def lazy():\n    from compiler.energy import estimate\n")
    with pytest.raises(SystemExit, match=r"runtime.py imports compiler.pipeline, which is not bundled"):
        check_imports(tmp_path)
    (pkg / "pipeline.py").write_text("")
    check_imports(tmp_path)                   # in-function imports are left out on purpose


@pytest.mark.slow
@requires_tvm
def test_runtime_bundle_for_another_python_takes_that_pythons_extension_modules(tmp_path):
    """--python X.Y: tvm_ffi's and ml_dtypes' extension modules are X.Y's (from their wheels), not ours."""
    other = "3.12" if sys.version_info[:2] != (3, 12) else "3.11"
    tag = "cpython-" + other.replace(".", "")
    try:
        make_bundle(tmp_path / "bundle", python=other)
    except SystemExit as e:                      # pip download needs the package index
        pytest.skip(f"no wheels for Python {other}: {e}")
    for pkg in ("tvm_ffi", "ml_dtypes"):
        exts = [p.name for p in (tmp_path / "bundle" / pkg).glob("*.so") if "cpython-" in p.name]
        assert exts and all(tag in name for name in exts), (pkg, exts)
    assert f"Python {other}" in (tmp_path / "bundle" / "README.txt").read_text()
    assert not (tmp_path / ".wheels").exists() and not list(tmp_path.glob(".bundle*"))
