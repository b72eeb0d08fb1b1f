"""`compile run MODEL.dyc`: outputs equal CompiledModel.run bit for bit; every malformed input
exits 2 naming the input and what the model expects, and leaves no output file."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import requires_tvm
from tests.tools.conftest import ROOT, call

pytestmark = requires_tvm


def test_run_outputs_equal_compiled_model_run(artifacts, capsys, tmp_path):
    import compiler
    x = np.random.default_rng(1).standard_normal((1, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, out, err = call(capsys, "run", artifacts["digits"], "--input", f"input={tmp_path / 'x.npy'}",
                          "-o", tmp_path / "out.npz")
    assert code == 0, err
    want = compiler.load(artifacts["digits"]).run(x)[0]
    with np.load(tmp_path / "out.npz") as got:
        assert list(got.files) == ["output"]
        np.testing.assert_array_equal(got["output"], want)
    assert f"argmax [{int(want.argmax())}]" in out and "output 'output' float32[1, 10]" in out


def test_run_npz_by_name_matches_reference_interpreter(artifacts, capsys, tmp_path):
    import compiler
    from compiler import interp
    rng = np.random.default_rng(2)
    x, y = (rng.standard_normal((2, 3)).astype(np.float32) for _ in range(2))
    np.savez(tmp_path / "in.npz", y=y, x=x)                  # order in the file does not matter
    code, _, err = call(capsys, "run", artifacts["two"], "--input", tmp_path / "in.npz", "-o", tmp_path / "o.npz")
    assert code == 0, err
    g = compiler.optimize(compiler.import_model(artifacts["two_onnx"]), "llvm")
    with np.load(tmp_path / "o.npz") as got:
        for name, want in zip(("s", "p"), interp.run(g, x, y)):
            np.testing.assert_allclose(got[name], want, rtol=1e-6, atol=1e-6)


def test_run_random_is_seeded_and_fills_only_missing_inputs(artifacts, capsys, tmp_path):
    x = np.ones((2, 3), np.float32)
    np.save(tmp_path / "x.npy", x)
    outs = []
    for i in range(2):
        code, _, err = call(capsys, "run", artifacts["two"], "-i", f"x={tmp_path / 'x.npy'}", "--random",
                            "--seed", "7", "-o", tmp_path / f"o{i}.npz")
        assert code == 0, err
        assert "'x' float32[2, 3]" in err and "'y' float32[2, 3] (random, seed 7)" in err
        outs.append(dict(np.load(tmp_path / f"o{i}.npz")))
    np.testing.assert_array_equal(outs[0]["p"], outs[1]["p"])
    y = outs[0]["p"] / x                                      # p = x * y with x = 1
    np.testing.assert_array_equal(outs[0]["s"], np.maximum(x + y, 0))


@pytest.mark.parametrize("case, words", [
    ("unknown name", ["'z'", "'x' float32[2, 3]"]),
    ("wrong shape", ["'x'", "float32[3, 2]", "expects float32[2, 3]", "reshape"]),
    ("wrong dtype", ["'x'", "float64[2, 3]", "expects float32[2, 3]", "astype(np.float32)"]),
    ("missing file", ["'x'", "nope.npy"]),
    ("not given", ["'y'", "float32[2, 3]", "--random"]),
    ("given twice", ["'x'", "twice"]),
    ("npz extra array", ["'w'", "not inputs"]),
    ("not an npy", ["'x'", "not a readable"]),
])
def test_run_bad_input_exit_2_names_it(artifacts, capsys, tmp_path, case, words):
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((2, 3), np.float32))
    if case == "unknown name":
        specs = [f"z={good}", f"x={good}", f"y={good}"]
    elif case == "wrong shape":
        np.save(tmp_path / "bad.npy", np.zeros((3, 2), np.float32))
        specs = [f"x={tmp_path / 'bad.npy'}", f"y={good}"]
    elif case == "wrong dtype":
        np.save(tmp_path / "bad.npy", np.zeros((2, 3)))
        specs = [f"x={tmp_path / 'bad.npy'}", f"y={good}"]
    elif case == "missing file":
        specs = [f"x={tmp_path / 'nope.npy'}", f"y={good}"]
    elif case == "not given":
        specs = [f"x={good}"]
    elif case == "given twice":
        specs = [f"x={good}", f"x={good}", f"y={good}"]
    elif case == "npz extra array":
        np.savez(tmp_path / "in.npz", x=np.zeros((2, 3), np.float32), w=np.zeros(1))
        specs = [str(tmp_path / "in.npz")]
    else:
        (tmp_path / "bad.npy").write_bytes(b"not numpy at all")
        specs = [f"x={tmp_path / 'bad.npy'}", f"y={good}"]
    argv = ["run", artifacts["two"], *[a for s in specs for a in ("--input", s)], "-o", tmp_path / "out.npz"]
    code, _, err = call(capsys, *argv)
    assert code == 2, err
    assert "invalid input" in err and "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "out.npz").exists() and not list(tmp_path.glob(".out.npz*"))


def test_run_refuses_an_onnx_file_and_a_missing_artifact(artifacts, capsys, tmp_path):
    code, _, err = call(capsys, "run", artifacts["two_onnx"], "--random")
    assert code == 2 and "not a compiled one" in err and "compile " in err
    code, _, err = call(capsys, "run", tmp_path / "gone.dyc", "--random")
    assert code == 2 and "gone.dyc" in err


def test_run_bad_output_path_fails_before_running(artifacts, capsys, tmp_path):
    code, _, err = call(capsys, "run", artifacts["two"], "--random", "-o", tmp_path / "out.txt")
    assert code == 2 and ".npz" in err
    code, _, err = call(capsys, "run", artifacts["two"], "--random", "-o", tmp_path / "no" / "out.npz")
    assert code == 2 and "does not exist" in err


@pytest.mark.slow
def test_run_console_entry_point(artifacts, tmp_path):
    r = subprocess.run([sys.executable, "-m", "compiler", "run", str(artifacts["digits"]), "--random",
                        "-o", str(tmp_path / "o.npy")], check=False, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "o.npy").shape == (1, 10)
    r = subprocess.run([sys.executable, "-m", "compiler", "run", str(artifacts["digits"])],
                       check=False, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "'input'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_run_and_bench_example_without_bench(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "run_and_bench.py"), "--no-bench", "--out",
                        str(tmp_path)], check=False, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FP32 and INT8 both say" in r.stdout and "(exit code 2)" in r.stdout
    assert (tmp_path / "int8_out.npz").exists()
