"""The importer's contract: supported-op coverage, errors for bad files/opsets/ops/shapes,
input_shapes, names and source locations, and folding of shape computations."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler import interp
from compiler.diagnostics import InvalidModel, Unsupported
from compiler.ops import linalg
from frontends.onnx import load_onnx, supported_ops

F32 = np.float32

# The op list of the frontend's brief: every one must have a converter.
REQUIRED_OPS = """
Conv ConvTranspose BatchNormalization Relu LeakyRelu PRelu Sigmoid Tanh HardSigmoid HardSwish
Clip Elu Softplus MaxPool AveragePool GlobalAveragePool GlobalMaxPool LRN Gemm MatMul Einsum Add
Sub Mul Div Pow Sqrt Reciprocal Neg Abs Exp Log Erf Gelu Softmax LogSoftmax LayerNormalization
InstanceNormalization ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd ReduceL2 ArgMax
Transpose Reshape Flatten Squeeze Unsqueeze Concat Split Slice Gather Expand Tile Pad Resize
Shape Size Cast Constant ConstantOfShape Identity Dropout Where Equal Less Greater Not And Or
Min Max Sum Mean Range CumSum TopK
""".split()


def test_importer_covers_every_required_op():
    missing = sorted(set(REQUIRED_OPS) - set(supported_ops()))
    assert not missing, f"no converter for {missing}"


def _relu_model(opset: int = 13, dims=(1, 3, 8, 8)) -> onnx.ModelProto:
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv0", pads=[1, 1, 1, 1])
    w = onnx.numpy_helper.from_array(np.ones((4, 3, 3, 3), F32), "w")
    graph = helper.make_graph([node, helper.make_node("Relu", ["y"], ["z"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [onnx.ValueInfoProto(name="z")], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def test_importer_reads_file_and_keeps_names(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_relu_model(), path)
    g = load_onnx(path)
    assert g.source == str(path)
    assert [v.name for v in g.inputs] == ["x"] and g.outputs[0].name == "z"
    conv = g.nodes[0]
    assert conv.op is linalg.conv
    assert (conv.loc.file, conv.loc.node, conv.loc.op) == (str(path), "conv0", "Conv")
    assert g.nodes[1].loc.node == "Relu_1"       # unnamed nodes get OpType_index
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(F32)
    assert interp.run(g, x=x)[0].shape == (1, 4, 8, 8)


def test_importer_loads_external_data(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save(_relu_model(), path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    g = load_onnx(str(path))
    assert g.nodes[0].inputs[1].const.sum() == 4 * 3 * 3 * 3


def test_importer_missing_file_names_path(tmp_path):
    with pytest.raises(InvalidModel, match="does not exist") as e:
        load_onnx(tmp_path / "nope.onnx")
    assert "nope.onnx" in str(e.value) and e.value.code == 2


def test_importer_garbage_file_is_invalid(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x00\xffthis is not a protobuf\xfe" * 20)
    with pytest.raises(InvalidModel, match="not a valid ONNX model") as e:
        load_onnx(path)
    assert "garbage.onnx" in str(e.value)


def test_importer_truncated_file_is_invalid(tmp_path):
    path = tmp_path / "cut.onnx"
    data = _relu_model().SerializeToString()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidModel, match="not a valid ONNX model") as e:
        load_onnx(path)
    assert "cut.onnx" in str(e.value)


def test_importer_checker_failure_is_invalid():
    model = _relu_model()
    model.graph.node[1].input[0] = "undefined_tensor"
    with pytest.raises(InvalidModel, match="onnx.checker"):
        load_onnx(model)


@pytest.mark.parametrize("opset", [6, 99])
def test_importer_rejects_opset_outside_range(opset):
    model = _relu_model()
    model.opset_import[0].version = opset
    with pytest.raises(Unsupported, match=f"opset {opset}") as e:
        load_onnx(model)
    assert e.value.code == 3


def test_importer_lists_all_unsupported_ops_at_once():
    nodes = [helper.make_node("NonZero", ["x"], ["nz"], name="nz"),
             helper.make_node("Unique", ["x"], ["g1"], name="uniq_3"),
             helper.make_node("Unique", ["grid"], ["g2"], name="uniq_7"),
             helper.make_node("Relu", ["x"], ["r"])]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4]),
                               helper.make_tensor_value_info("grid", TensorProto.FLOAT,
                                                             [1, 4, 4, 2])],
                              [onnx.ValueInfoProto(name=n) for n in ("nz", "g1", "g2", "r")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model)
    with pytest.raises(Unsupported) as e:
        load_onnx(model)
    msg = str(e.value)
    assert "NonZero (node 'nz')" in msg
    assert "Unique (node 'uniq_3', and 1 more)" in msg
    assert "Relu" not in msg.split("\n")[0]


def test_importer_symbolic_dim_names_input_and_dim():
    model = _relu_model(dims=["batch", 3, 8, 8])
    with pytest.raises(InvalidModel) as e:
        load_onnx(model)
    msg = str(e.value)
    assert "input 'x'" in msg and "dimension 0" in msg and "'batch'" in msg
    assert "--input-shape x=1x3x8x8" in msg and "input_shapes=" in msg


def test_importer_input_shapes_fix_symbolic_dims():
    g = load_onnx(_relu_model(dims=["batch", 3, "h", "w"]), input_shapes={"x": (2, 3, 6, 5)})
    assert g.inputs[0].type.shape == (2, 3, 6, 5)
    assert g.outputs[0].type.shape == (2, 4, 6, 5)


def test_importer_input_shapes_rejects_unknown_names_and_ranks():
    with pytest.raises(InvalidModel, match="unknown input"):
        load_onnx(_relu_model(), input_shapes={"y": (1, 3, 8, 8)})
    with pytest.raises(InvalidModel, match="rank"):
        load_onnx(_relu_model(), input_shapes={"x": (3, 8, 8)})


def _single(node, inputs, outputs, opset=13, inits=None):
    outs = [o if isinstance(o, onnx.ValueInfoProto) else onnx.ValueInfoProto(name=o)
            for o in outputs]
    graph = helper.make_graph([node], "g", inputs, outs,
                              [onnx.numpy_helper.from_array(v, k)
                               for k, v in (inits or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


X4 = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])


@pytest.mark.parametrize("node,outputs,match", [
    (helper.make_node("Dropout", ["x", "", "t"], ["y"]), ["y"], "training_mode=True"),
])
def test_importer_rejects_unsupported_features(node, outputs, match):
    inits = {"t": np.array(True)}
    with pytest.raises(Unsupported, match=match):
        load_onnx(_single(node, [X4], outputs, inits=inits))


def test_importer_rejects_string_inputs():
    x = helper.make_tensor_value_info("x", TensorProto.STRING, [2])
    with pytest.raises(Unsupported, match="string"):
        load_onnx(_single(helper.make_node("Identity", ["x"], ["y"]), [x], ["y"]))


def test_importer_data_dependent_shape_is_unsupported():
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [2])
    node = helper.make_node("Reshape", ["x", "s"], ["y"], name="dyn_reshape")
    with pytest.raises(Unsupported, match="data-dependent shape") as e:
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 4])
        load_onnx(_single(node, [X4, s], [y]))
    assert "dyn_reshape" in str(e.value)


def test_importer_constant_output_and_input_passthrough():
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Identity", ["x"], ["y"])]
    graph = helper.make_graph(nodes, "g", [X4],
                              [helper.make_tensor_value_info("s", TensorProto.INT64, [4]),
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    g = load_onnx(model)
    x = np.ones((1, 2, 4, 4), F32)
    s, y = interp.run(g, x)
    np.testing.assert_array_equal(s, [1, 2, 4, 4])
    np.testing.assert_array_equal(y, x)
    assert [v.name for v in g.outputs] == ["s", "y"]
