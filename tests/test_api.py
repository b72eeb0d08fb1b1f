"""The Python API: compile, run (positional, by name, torch tensors), typed errors, save/load."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import compiler
from tests.conftest import requires_tvm


def _model() -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["a", "w"], ["m"], name="mm"),
             helper.make_node("Add", ["m", "b"], ["y"], name="add")]
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.arange(12, dtype=np.float32) / 10)
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 4]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_import_does_not_load_heavy_packages():
    import subprocess
    import sys
    code = ("import sys, compiler; heavy = [m for m in ('tvm', 'onnx', 'torch') if m in sys.modules];"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@requires_tvm
def test_compile_model_proto_and_run_both_ways(tmp_path):
    cm = compiler.compile(_model(), target="llvm")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 4), dtype=np.float32), rng.standard_normal((2, 3), dtype=np.float32)
    want = a @ (np.arange(12, dtype=np.float32).reshape(4, 3) / 10) + b
    np.testing.assert_allclose(cm.run(a, b)[0], want, rtol=1e-5)
    np.testing.assert_allclose(cm.run(b=b, a=a)[0], want, rtol=1e-5)
    assert cm.input_names == ["a", "b"]
    stats = cm.benchmark(a, b, warmup=1, repeat=5)
    assert stats["min_ms"] <= stats["median_ms"] <= stats["max_ms"]

    with pytest.raises(compiler.InvalidInput, match=r"input 'a' must be float32\[2, 4\], got float64"):
        cm.run(a.astype(np.float64), b)
    with pytest.raises(compiler.InvalidInput, match=r"got float32\[3, 4\]"):
        cm.run(np.zeros((3, 4), np.float32), b)
    with pytest.raises(compiler.InvalidInput, match="missing \\['b'\\]"):
        cm.run(a=a)

    path = cm.save(tmp_path / "m.dyc")
    cm2 = compiler.load(path)
    np.testing.assert_array_equal(cm2.run(a, b)[0], cm.run(a, b)[0])
    assert "nn.matmul" in cm2.graph_text


@requires_tvm
def test_load_refuses_tampered_and_foreign_artifacts(tmp_path):
    path = compiler.compile(_model()).save(tmp_path / "m.dyc")
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}

    def rewrite(name, **changes):
        out = tmp_path / name
        with zipfile.ZipFile(out, "w") as z:
            for n, data in {**members, **changes}.items():
                z.writestr(n, data)
        return out

    lib = bytearray(members["lib.bin"])
    lib[len(lib) // 2] ^= 0xFF
    with pytest.raises(compiler.ArtifactError, match="lib.bin does not match its hash"):
        compiler.load(rewrite("t.dyc", **{"lib.bin": bytes(lib)}))
    manifest = json.loads(members["manifest.json"])
    manifest["versions"]["apache-tvm"] = "0.0.1"
    with pytest.raises(compiler.ArtifactError, match="apache-tvm 0.0.1"):
        compiler.load(rewrite("v.dyc", **{"manifest.json": json.dumps(manifest)}))
    manifest = json.loads(members["manifest.json"])     # numpy: another minor loads, another major not
    major = int(np.__version__.split(".")[0])
    manifest["versions"]["numpy"] = f"{major}.999.0"
    compiler.load(rewrite("n.dyc", **{"manifest.json": json.dumps(manifest)}))
    manifest["versions"]["numpy"] = f"{major + 1}.0.0"
    with pytest.raises(compiler.ArtifactError, match=f"numpy {major + 1}.0.0"):
        compiler.load(rewrite("m.dyc", **{"manifest.json": json.dumps(manifest)}))
    (tmp_path / "junk.dyc").write_bytes(b"junk")
    with pytest.raises(compiler.ArtifactError, match="not a compiled model"):
        compiler.load(tmp_path / "junk.dyc")


def test_typed_errors_from_the_api(tmp_path):
    with pytest.raises(compiler.InvalidModel, match="nope.onnx"):
        compiler.compile(tmp_path / "nope.onnx")
    with pytest.raises(compiler.Unsupported, match="cannot compile a dict"):
        compiler.compile({})
    with pytest.raises(compiler.Unsupported, match="unknown target"):
        compiler.compile(_model(), target="fpga")


def test_fast_tier_target_option_round_trips_and_refuses_bad_values():
    from compiler.target import Target
    t = Target.parse("llvm -num-threads=1 -fast-tier=4096")
    assert t.fast_tier == "4096" and Target.parse(str(t)).fast_tier == "4096"
    assert Target.parse("llvm").fast_tier == "off" and "fast-tier" not in str(Target.parse("llvm"))
    with pytest.raises(compiler.Unsupported, match="-fast-tier=fast: expected off, l2 or a size in bytes"):
        Target.parse("llvm -fast-tier=fast")


@requires_tvm
def test_fast_tier_executable_reports_its_mapping_and_computes_the_same():
    a, b = np.ones((2, 4), np.float32), np.arange(6, dtype=np.float32).reshape(2, 3)
    plain = compiler.compile(_model(), target="llvm -num-threads=1")
    tiered = compiler.compile(_model(), target="llvm -num-threads=1 -fast-tier=l2")
    for x, y in zip(plain.run(a, b), tiered.run(a, b)):
        np.testing.assert_array_equal(x, y)
    assert "fast_tier" not in plain.memory["executable"]
    exe = tiered.memory["executable"]
    if exe["buffers"]:
        tier = exe["fast_tier"]
        assert 0 <= tier["saved_bytes"] <= tier["traffic_bytes"] and tier["capacity_bytes"] > 0


@requires_tvm
def test_profile_times_every_kernel_and_refuses_other_backends():
    cm = compiler.compile(_model(), target="llvm -num-threads=1")
    a, b = np.ones((2, 4), np.float32), np.ones((2, 3), np.float32)
    p = cm.profile(a, b, runs=3)
    kernels = [r for r in p["kernels"] if not r[0].startswith("vm.builtin")]
    assert kernels and all(calls >= 1 and ms > 0 for _, calls, ms in kernels)
    assert p["wall_ms"] >= sum(ms for _, _, ms in kernels) > 0
    pytest.importorskip("iree.runtime")
    mlir = compiler.compile(_model(), target="llvm -num-threads=1", backend="mlir")
    with pytest.raises(compiler.Unsupported, match="profiling is available for the tvm backend"):
        mlir.profile(a, b)


@requires_tvm
def test_pass_times_come_from_an_observer_and_never_reach_the_artifact():
    import io

    from passes.base import PassTimes, observe_passes
    plain = compiler.compile(_model()).to_bytes()
    with observe_passes(PassTimes()) as times:
        observed = compiler.compile(_model()).to_bytes()
    assert observed == plain                      # timing changes nothing the artifact holds
    names = [n for n, _ in times.times]
    assert names[0] == "fold_constants" and names[-1] == "plan_memory" and "fuse_kernels" in names
    assert all(t >= 0 for _, t in times.times)
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(plain)).read("manifest.json"))
    kernels = manifest["kernels"]["symbols"]       # kernel symbol -> the IR node it runs, for profiles
    mm = next(k for k in kernels.values() if k["op"] == "nn.matmul")
    assert mm["nodes"] == ["mm"] and mm["ops"] == 2 * 2 * 4 * 3 + 2 * 3 and not mm["integer"]
