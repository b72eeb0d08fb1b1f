"""Artifacts the verb tests share, compiled once per session: the bundled digits CNN (FP32 and
integer-only INT8 on its training digits) and a two-input, two-output elementwise model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

ROOT = Path(__file__).absolute().parents[2]
DIGITS = ROOT / "examples" / "models" / "digits_cnn.onnx"


def call(capsys, *argv) -> tuple[int, str, str]:
    """`compile ARGV...` in this process (the console script's own entry point)."""
    from compiler.cli import main
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _two_input_model(path: Path) -> Path:
    v = helper.make_tensor_value_info
    nodes = [helper.make_node("Add", ["x", "y"], ["t"], name="add"),
             helper.make_node("Relu", ["t"], ["s"], name="relu"),
             helper.make_node("Mul", ["x", "y"], ["p"], name="mul")]
    g = helper.make_graph(nodes, "two", [v("x", TensorProto.FLOAT, [2, 3]), v("y", TensorProto.FLOAT, [2, 3])],
                          [v("s", TensorProto.FLOAT, [2, 3]), v("p", TensorProto.FLOAT, [2, 3])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("tvm")
    import compiler
    d = tmp_path_factory.mktemp("artifacts")
    two = _two_input_model(d / "two.onnx")
    compiler.compile(DIGITS, "llvm").save(d / "digits.dyc")
    compiler.compile(two, "llvm").save(d / "two.dyc")
    return {"digits": d / "digits.dyc", "digits_onnx": DIGITS, "two": d / "two.dyc", "two_onnx": two,
            "dir": d}


@pytest.fixture(scope="session")
def int8_artifact(tmp_path_factory) -> tuple[Path, Path]:
    """(integer-only digits .dyc, its calibration .npz)."""
    pytest.importorskip("tvm")
    import compiler
    from examples.digits import load_digits_split
    d = tmp_path_factory.mktemp("int8")
    xtr = load_digits_split()[0]
    np.savez(d / "calib.npz", input=xtr[:16])
    cm = compiler.compile(DIGITS, "llvm", quantize="int8", calibration=d / "calib.npz", integer_only=True)
    cm.save(d / "digits_int8.dyc")
    return d / "digits_int8.dyc", d / "calib.npz"
