"""The energy estimate (compiler/energy.py): exact counts on hand-built conv and matmul graphs, an
integer-only INT8 model counted in int8 MACs and table lookups with fp32 only at its boundary, the
manifest's `energy` object surviving save/load, and the `compile report` section."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler import energy
from compiler.ir import Graph
from compiler.ops import elementwise, linalg, quant
from compiler.types import DType, TensorType
from tests.conftest import requires_tvm

T = energy.TABLE


def _conv_graph() -> Graph:
    """x 1x2x5x5 (fp32) * w 4x2x3x3 + b (4,): out 1x4x3x3."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 2, 5, 5), DType.F32))
    w = g.const(np.ones((4, 2, 3, 3), np.float32), "w")
    b = g.const(np.zeros(4, np.float32), "b")
    g.outputs = [g.add1(linalg.conv, [x, w, b], strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1))]
    return g


def test_energy_counts_a_conv_exactly():
    e = energy.estimate(_conv_graph())
    macs = 1 * 4 * 3 * 3 * (2 * 3 * 3)                      # N*Cout*Hout*Wout * Cin*kh*kw = 648
    conv = e["by_op"]["nn.conv"]
    assert conv["counts"] == {"mul_fp32": macs, "add_fp32": macs + 36,      # + the bias, per output
                              "dram_bytes": 4 * 2 * 3 * 3 * 4 + 4 * 4}      # weights and bias, once
    assert conv["pJ"] == pytest.approx(648 * 3.7 + 684 * 0.9 + 304 * 162.5)
    act = e["activations"]                                  # the input read, the output written
    assert act["dram_bytes"] == 2 * 5 * 5 * 4 + 4 * 3 * 3 * 4
    assert e["pJ_per_inference"] == pytest.approx(conv["pJ"] + 344 * 162.5)
    assert e["uncounted"] == [] and "Horowitz" in e["table_source"] and "ShiftAddViT" in e["table_source"]
    assert e["rules"]["nn.conv"].startswith("MACs = N*Cout*Hout*Wout") and e["table"]["dram_bytes"] == 162.5


def _matmul_graph(integer: bool) -> Graph:
    """(1, 3, 4) @ (4, 5) then relu; the integer form with a_zero_point 3 in int8 x int8 -> int32."""
    g = Graph()
    dt = DType.I8 if integer else DType.F32
    a = g.add_input("a", TensorType((1, 3, 4), dt))
    w = g.const(np.ones((4, 5), dt.numpy), "w")
    y = (g.add1(quant.matmul, [a, w], a_zero_point=3) if integer else g.add1(linalg.matmul, [a, w]))
    g.outputs = [g.add1(elementwise.relu, [y])]
    return g


def test_energy_counts_a_matmul_exactly():
    e = energy.estimate(_matmul_graph(False))
    assert e["by_op"]["nn.matmul"]["counts"] == {"mul_fp32": 60, "add_fp32": 60, "dram_bytes": 80}
    assert e["by_op"]["nn.relu"]["counts"] == {"add_fp32": 15}           # one compare per element
    # without a memory plan the matmul's result (60 bytes) is written and read once
    assert e["activations"]["dram_bytes"] == 48 + 60 + 2 * 60
    q = energy.estimate(_matmul_graph(True), arena_bytes=64)
    assert q["by_op"]["q.matmul"]["counts"] == {"mul_int8": 60, "add_int32": 60 + 15, "dram_bytes": 20}
    assert q["by_op"]["nn.relu"]["counts"] == {"add_int32": 15}
    assert q["activations"]["dram_bytes"] == 12 + 60 + 2 * 64        # the arena written and read once
    assert q["totals"]["mul_int8"] == 60 and "mul_fp32" not in q["totals"]


@pytest.mark.skipif("realization" not in quant.matmul.attrs, reason="no shift-and-add realization")
def test_energy_counts_a_shift_and_add_matmul_in_shifts():
    g = Graph()
    a = g.add_input("a", TensorType((3, 4), DType.I8))
    w = g.const(np.array([[1, 2, -4, 3, 6]] * 4, np.int8), "w")          # 2^0, 2^1, -2^2, 2+1, 4+2
    g.outputs = [g.add1(quant.matmul, [a, w], weight_code="pow2x2", realization="shift")]
    e = energy.estimate(g)
    assert e["by_op"]["q.matmul"]["counts"] == {"shift_int8": 2 * 60, "add_int32": 2 * 60, "dram_bytes": 20}
    assert "mul_int8" not in e["totals"]


def test_energy_lists_ops_it_cannot_count():
    g = Graph()
    x = g.add_input("x", TensorType((2, 3), DType.F32))
    g.outputs = [g.add1(linalg.einsum, [x, x], equation="...i,...i->...")]
    e = energy.estimate(g)
    assert e["uncounted"] == ["nn.einsum"] and "nn.einsum" not in e["by_op"]
    assert "not counted" in energy.format_energy(e)


def _gelu_mlp(path) -> None:
    """x (8, 16) -> MatMul (16, 32) -> Gelu -> MatMul (32, 4): the integer build tabulates the GELU."""
    rng = np.random.default_rng(0)
    inits = [helper.make_tensor(n, TensorProto.FLOAT, dims, rng.standard_normal(dims).astype(np.float32) / 4)
             for n, dims in (("w1", (16, 32)), ("w2", (32, 4)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Gelu", ["h"], ["a"], name="gelu"),
             helper.make_node("MatMul", ["a", "w2"], ["y"], name="fc2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 4])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)]), path)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    d = tmp_path_factory.mktemp("energy")
    _gelu_mlp(d / "mlp.onnx")
    calib = [np.random.default_rng(i).standard_normal((8, 16)).astype(np.float32) for i in range(4)]
    return d / "mlp.onnx", calib


def test_energy_of_an_integer_only_model_is_int8_macs(mlp):
    from compiler.api import final_ir
    path, calib = mlp
    results: dict = {}
    g, _ = final_ir(path, backend="mlir", quantize="int8", calibration=calib, integer_only=True,
                    results=results, gelu_form="shift")   # the mlir kernel passes: no TVM import needed here
    e = energy.estimate(g, results["memory"].arena_bytes)
    assert e["by_op"]["q.matmul"]["counts"]["mul_int8"] == 8 * 16 * 32 + 8 * 32 * 4
    fp32 = {op for op, o in e["by_op"].items() if "mul_fp32" in o["counts"] or "add_fp32" in o["counts"]}
    assert fp32 <= {"q.quantize", "q.dequantize"}           # float only at the graph's boundary
    assert e["by_op"]["q.table"]["counts"]["lookup_bytes"] == 8 * 32       # the tabulated GELU
    assert e["activations"]["arena_bytes"] == results["memory"].arena_bytes
    f, _ = final_ir(path, backend="mlir")
    ef = energy.estimate(f)
    assert ef["totals"]["mul_fp32"] >= 8 * 16 * 32 + 8 * 32 * 4 and "mul_int8" not in ef["totals"]
    # int8 arithmetic is cheaper, but the GELU table (65536 int8 entries, indexed by int16) is a
    # constant read from DRAM on every inference: on a model this small it outweighs the rest
    arithmetic = [energy.energy_by_kind(x)["arithmetic"] for x in (e, ef)]
    assert arithmetic[0] < arithmetic[1] / 5
    assert e["by_op"]["q.table"]["counts"]["dram_bytes"] == 65536
    t, _ = final_ir(path, backend="mlir", quantize="int8", calibration=calib, integer_only=True, gelu_form="table")
    assert energy.estimate(t)["by_op"]["q.table"]["counts"]["dram_bytes"] == 256     # the 8-bit form's table
    text = energy.format_side_by_side({"FP32": ef, "INT8": e})
    assert "total per inference" in text and "mul_int8" in text


@requires_tvm
def test_energy_survives_save_and_load_and_shows_in_the_report(mlp, tmp_path, capsys):
    import compiler
    from tests.tools.conftest import call
    path, calib = mlp
    cm = compiler.compile(path, quantize="int8", calibration=calib, integer_only=True)
    assert cm.energy["pJ_per_inference"] > 0 and cm.energy["activations"]["arena_bytes"]
    dyc = cm.save(tmp_path / "mlp.dyc")
    loaded = compiler.load(dyc)
    assert loaded.graph is None and loaded.energy == cm.energy
    assert loaded.energy == json.loads(json.dumps(cm.energy))
    code, out, err = call(capsys, "report", dyc, "--no-bench", "-o", tmp_path / "rep")
    assert code == 0, err
    assert "energy per inference (estimate)" in out and "q.matmul" in out
    assert '<section id="energy">' in (tmp_path / "rep" / "index.html").read_text()
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["energy"] == cm.energy


def test_energy_counts_a_lut_matmul_exactly():
    """T-MAC's work on a (1, 64) x 4-bit (64, 16) layer in groups of 16: 16 tables of 16 entries, one
    lookup and one add per output, group of 4 and bit-plane, the planes' shifts and the group scales."""
    from compiler.ops import lut
    g = Graph()
    a = g.add_input("a", TensorType((1, 64), DType.I8))
    planes = g.const(np.zeros((4, 16, 8), np.uint8), "planes")
    scales = g.const(np.ones((4, 16), np.int16), "scales")
    zeros = g.const(np.zeros((4, 16), np.uint8), "zeros")
    g.outputs = [g.add1(lut.lut_matmul, [a, planes, scales, zeros], bits=4, group_size=16)]
    c = energy.estimate(g)["by_op"]["q.lut_matmul"]["counts"]
    looks, groups = 16 * (64 // 4) * 4, 16 * (64 // 16)
    assert c["add_int8"] == (64 // 4) * 16 and c["lookup_bytes"] == looks
    assert c["add_int32"] == looks + groups * 4 + groups and c["shift_int32"] == groups * 4
    assert c["mul_int32"] == groups and "mul_int8" not in c
