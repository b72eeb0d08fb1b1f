"""The `compile` command: flags, outputs, exit codes, and no partial output on failure."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import requires_tvm

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "models" / "digits_cnn.onnx"


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compiler", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def _model(tmp_path: Path, nodes, inputs, outputs, name="m.onnx", inits=()) -> Path:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    p = tmp_path / name
    onnx.save(m, p)
    return p


def _relu_model(tmp_path: Path, dims=(2, 3)) -> Path:
    return _model(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="r")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(dims))])


def test_help_documents_every_flag():
    r = run_cli("--help")
    assert r.returncode == 0
    for flag in ("--target", "--output", "--emit", "--input-shape", "--passes", "--disable-pass",
                 "--print-after", "--dump-dir", "--check", "--quiet", "--debug", "exit codes"):
        assert flag in r.stdout, flag


def _conv_bn_model(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], rng.standard_normal(108).astype(np.float32))
    bn = [helper.make_tensor(n, TensorProto.FLOAT, [4], rng.uniform(0.5, 1.5, 4).astype(np.float32))
          for n in ("s", "b", "m", "v")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn")]
    return _model(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], "convbn.onnx",
                  [w, *bn])


def test_emit_ir_prints_mlir_generic(tmp_path):
    r = run_cli(_conv_bn_model(tmp_path), "--emit", "ir")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("func.func @g(%arg0: tensor<1x3x8x8xf32>) -> (tensor<1x4x8x8xf32>) {")
    assert '"nn.batch_norm"' not in r.stdout and '"nn.conv"' in r.stdout     # folded


def test_emit_ir_is_the_final_program_kernels_layouts_tiles(tmp_path):
    """Every kernel is a k.fused node with its body, its layout conversions and the cost model's tile."""
    r = run_cli(_conv_bn_model(tmp_path), "--emit", "ir")
    assert r.returncode == 0, r.stderr
    fused = re.findall(r'\}\) \{kernel = "conv", tile = \[(\d+), (\d+)\], inplace = -1\}', r.stdout)
    assert len(fused) == 1 and all(int(t) > 0 for t in fused[0])
    assert '"layout.pack"(' in r.stdout and '"layout.unpack"(' in r.stdout    # written in 4-channel blocks
    r = run_cli(_conv_bn_model(tmp_path), "--emit", "ir", "--disable-pass", "fuse_kernels",
                "--print-after", "assign_layouts")
    assert r.returncode == 0, r.stderr
    assert '"k.fused"' not in r.stdout and "IR after assign_layouts" in r.stderr


def test_print_after_and_disable_pass(tmp_path):
    r = run_cli(_conv_bn_model(tmp_path), "--emit", "ir", "--disable-pass", "fold_batch_norm",
                "--print-after", "remove_identity")
    assert r.returncode == 0, r.stderr
    assert '"nn.batch_norm"' in r.stdout
    assert "IR after remove_identity" in r.stderr


def test_missing_file_exit_2(tmp_path):
    r = run_cli(tmp_path / "nope.onnx", "-o", tmp_path / "out.dyc")
    assert r.returncode == 2
    assert "nope.onnx" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out.dyc").exists()


def test_not_onnx_exit_2(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\xffthis is not a protobuf" * 10)
    r = run_cli(bad, "-o", tmp_path / "out.dyc")
    assert r.returncode == 2 and "bad.onnx" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out.dyc").exists()


def test_truncated_exit_2(tmp_path):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(DEMO.read_bytes()[: DEMO.stat().st_size // 2])
    r = run_cli(cut, "-o", tmp_path / "out.dyc")
    assert r.returncode == 2 and "cut.onnx" in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.glob("*.dyc"))


def test_unsupported_ops_exit_3_lists_all(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="ok"),
             helper.make_node("NonZero", ["a"], ["b"], name="nz_1"),
             helper.make_node("Bernoulli", ["x"], ["c"], name="bern_1")]
    p = _model(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
               [helper.make_tensor_value_info("b", TensorProto.INT64, [2, 9]),
                helper.make_tensor_value_info("c", TensorProto.FLOAT, [3, 3])])
    r = run_cli(p, "-o", tmp_path / "out.dyc")
    assert r.returncode == 3, r.stderr
    for word in ("NonZero", "nz_1", "Bernoulli", "bern_1", "random sampling"):
        assert word in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out.dyc").exists()


def test_symbolic_shape_exit_2_then_input_shape_fixes_it(tmp_path):
    p = _model(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="r")],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
    r = run_cli(p, "--emit", "ir")
    assert r.returncode == 2
    assert "'x'" in r.stderr and "batch" in r.stderr and "--input-shape" in r.stderr
    r = run_cli(p, "--emit", "ir", "--input-shape", "x=4x3")
    assert r.returncode == 0, r.stderr
    assert "tensor<4x3xf32>" in r.stdout


def test_bad_flags_exit_nonzero_with_message(tmp_path):
    p = _relu_model(tmp_path)
    r = run_cli(p, "--target", "tpu", "--emit", "ir")
    assert r.returncode == 3 and "unknown target 'tpu'" in r.stderr
    r = run_cli(p, "--emit", "ir", "--disable-pass", "nope")
    assert r.returncode == 3 and "unknown pass 'nope'" in r.stderr
    r = run_cli(p, "--emit", "ir", "--input-shape", "x:2x3")
    assert r.returncode == 2 and "NAME=D0xD1" in r.stderr


@requires_tvm
def test_compile_run_save_load_and_determinism(tmp_path):
    a, b = tmp_path / "a.dyc", tmp_path / "b.dyc"
    r = run_cli(DEMO, "-o", a, "--check")
    assert r.returncode == 0, r.stderr
    assert "check: executable agrees" in r.stderr
    r = run_cli(DEMO, "-o", b, "-q")
    assert r.returncode == 0 and r.stderr == ""
    assert a.read_bytes() == b.read_bytes(), "compiling twice must give the same bytes"
    import compiler
    cm = compiler.load(a)
    x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    (y,) = cm.run(x)
    assert y.shape == (1, 10) and abs(float(y.sum()) - 1) < 1e-5


@requires_tvm
def test_default_output_name_and_emit_relax(tmp_path):
    p = _relu_model(tmp_path)
    r = run_cli(p, "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m.dyc").exists()
    r = run_cli(p, "--emit", "relax")
    assert r.returncode == 0 and "R.function" in r.stdout


def test_quantize_without_calibration_refuses(tmp_path):
    r = run_cli(DEMO, "--quantize", "int8", "-o", tmp_path / "q.dyc")
    assert r.returncode == 2 and "--calibration" in r.stderr and "random data" in r.stderr
    assert not (tmp_path / "q.dyc").exists()
    r = run_cli(DEMO, "--integer-only", "--emit", "ir")
    assert r.returncode == 2 and "need --quantize int8" in r.stderr


def _cnn_logits_model(tmp_path: Path, softmax: bool) -> Path:
    rng = np.random.default_rng(0)
    inits = [helper.make_tensor("w", TensorProto.FLOAT, [8, 1, 3, 3], rng.standard_normal(72).astype(np.float32)),
             helper.make_tensor("fw", TensorProto.FLOAT, [8, 4], rng.standard_normal(32).astype(np.float32)),
             helper.make_tensor("fb", TensorProto.FLOAT, [4], rng.standard_normal(4).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y" if not softmax else "l"], name="fc")]
    if softmax:
        nodes.append(helper.make_node("Sigmoid", ["l"], ["y"], name="probs"))   # no integer form
    return _model(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                  "sm.onnx" if softmax else "logits.onnx", inits)


@requires_tvm
def test_quantize_integer_only_with_report_and_check(tmp_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).random((16, 1, 6, 6)).astype(np.float32))
    out = tmp_path / "q.dyc"
    r = run_cli(_cnn_logits_model(tmp_path, False), "--quantize", "int8", "--calibration", calib,
                "--integer-only", "--report", "--check", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "SQNR dB" in r.stderr and "q.conv" in r.stderr and out.exists()
    r = run_cli(_cnn_logits_model(tmp_path, True), "--quantize", "int8", "--calibration", calib,
                "--integer-only", "-o", tmp_path / "sm.dyc")
    assert r.returncode == 3 and "probs" in r.stderr and "sigmoid" in r.stderr
    assert not (tmp_path / "sm.dyc").exists()


def _gelu_mlp_model(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    inits = [helper.make_tensor("w1", TensorProto.FLOAT, [16, 32], rng.standard_normal(512).astype(np.float32) / 4),
             helper.make_tensor("w2", TensorProto.FLOAT, [32, 4], rng.standard_normal(128).astype(np.float32) / 4)]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Gelu", ["h"], ["a"], name="gelu", domain=""),
             helper.make_node("MatMul", ["a", "w2"], ["y"], name="fc2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 4])], inits)
    p = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)]), p)
    return p


def test_integer_gelu_is_tabulated_unless_disabled(tmp_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((8, 8, 16)).astype(np.float32))
    model = _gelu_mlp_model(tmp_path)
    args = (model, "--quantize", "int8", "--calibration", calib, "--integer-only", "--emit", "ir", "--gelu-form", "shift")
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert '"q.table"' in r.stdout and '"q.shiftgelu"' not in r.stdout
    r = run_cli(*args[:-2], "--gelu-form", "table", "--disable-pass", "tabulate")
    assert r.returncode == 0 and '"q.table"' in r.stdout and '"q.shiftgelu"' not in r.stdout   # not from tabulate
    r = run_cli(model, "--quantize", "int8", "--calibration", calib, "--gelu-form", "table", "--emit", "ir")
    assert r.returncode == 2 and "--gelu-form needs" in r.stderr
    r = run_cli(*args, "--disable-pass", "tabulate", "--print-after", "annotate", "--print-after", "dyadic")
    assert r.returncode == 0, r.stderr
    assert '"q.shiftgelu"' in r.stdout and '"q.table"' not in r.stdout
    assert "IR after annotate" in r.stderr and "IR after dyadic" in r.stderr    # quantization is passes too


def test_mixed_precision_flags_are_checked(tmp_path):
    r = run_cli(DEMO, "--quantize", "mixed", "--calibration", tmp_path / "c.npz", "--emit", "ir")
    assert r.returncode == 2 and "--size-budget" in r.stderr
    r = run_cli(DEMO, "--size-budget", "0.7", "--emit", "ir")
    assert r.returncode == 2 and "need --quantize mixed" in r.stderr


def test_accuracy_budget_values_are_checked(tmp_path):
    """--accuracy-budget F | Npt | cosC: a malformed value, and points without a `labels` array in the
    calibration .npz, exit 2 naming the flag before anything is compiled."""
    calib = tmp_path / "c.npz"
    np.savez(calib, input=np.zeros((4, 1, 1, 8, 8), np.float32))
    mixed = (DEMO, "--quantize", "mixed", "--calibration", calib, "--emit", "ir", "--accuracy-budget")
    for bad in ("0.5ptx", "cos2", "-1"):
        r = run_cli(*mixed, bad)
        assert r.returncode == 2 and "--accuracy-budget" in r.stderr and "cos0.99" in r.stderr, (bad, r.stderr)
    r = run_cli(*mixed, "0.5pt")
    assert r.returncode == 2 and "--accuracy-budget '0.5pt' counts top-1 points" in r.stderr
    assert "labels" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
@requires_tvm
def test_accuracy_budget_points_from_the_npz_labels(tmp_path):
    """--accuracy-budget 0.5pt reads the calibration .npz's `labels`; --report shows the measured points."""
    pytest.importorskip("sklearn")
    from examples.digits import load_digits_split
    x, y, _, _ = load_digits_split()
    calib = tmp_path / "c.npz"
    np.savez(calib, input=x[:48], labels=y[:48])
    r = run_cli(DEMO, "--quantize", "mixed", "--calibration", calib, "--accuracy-budget", "0.5pt",
                "--shiftadd-kernel", "shift", "--integer-only", "--report", "-o", tmp_path / "m.dyc")
    assert r.returncode == 0, r.stderr
    assert re.search(r"accuracy budget 0.5pt: 0\.\d+ top-1 points lost on 48 labelled calibration samples",
                     r.stderr)


def test_tune_costmodel_help():
    r = run_cli("tune-costmodel", "--help")
    assert r.returncode == 0 and "--budget" in r.stdout


def test_quantize_model_refuses_a_model_without_its_own_quantization(tmp_path):
    """--quantize model takes the producer's QDQ / QOperator grids; a float model has none: exit 2, a
    message saying so, and no output file."""
    out = tmp_path / "m.dyc"
    r = run_cli(_conv_bn_model(tmp_path), "--quantize", "model", "--integer-only", "-o", str(out))
    assert r.returncode == 2, r.stderr
    assert "quantize='model' needs a model quantized by its producer" in r.stderr and not out.exists()
