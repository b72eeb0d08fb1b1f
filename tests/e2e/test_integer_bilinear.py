"""A small FPN-like CNN with bilinear upsampling (conv -> relu -> 2x bilinear -> concat with a skip -> conv),
built as ONNX (fast) and in torch (slow: torch.export), compiled with quantize="int8", integer_only=True: the
upsample is q.resize_linear, no float value is left between the inputs and the outputs, the TVM executable
matches the interpreter bit for bit, and the output keeps cosine >= 0.99 with FP32."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import requires_torch, requires_tvm

pytestmark = requires_tvm


def _inputs(n: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(n)]


def _check(model, fp32, xs, mode: str, **kw) -> None:
    """Compile `model` integer-only, calibrated on xs[:4]; check it on xs[1] and the unseen xs[4] against
    the interpreter (bit for bit) and against fp32(x) (cosine)."""
    import compiler
    from compiler import interp
    from compiler.ops import quant, shape

    cm = compiler.compile(model, "llvm -num-threads=1", quantize="int8", integer_only=True,
                          calibration=[[x] for x in xs[:4]], **kw)
    g = cm.graph
    ops = [n.op for n in g.nodes]
    assert quant.resize_linear in ops and shape.resize not in ops
    (r,) = [n for n in g.nodes if n.op is quant.resize_linear]
    assert r.attrs["coordinate_transformation_mode"] == mode
    # the certificate ran inside compile (integer_only=True); on the final IR, where the input quantize and the
    # output dequantize sit in fused kernels, no value between the graph's inputs and outputs is float
    io = {id(v) for v in [*g.inputs, *g.outputs]}
    assert all(id(v) in io for n in g.nodes for v in [*n.inputs, *n.outputs] if v.type.dtype.is_float)
    for x in (xs[1], xs[4]):
        got = cm.run(x)[0]
        np.testing.assert_array_equal(got, interp.run(g, x)[0])
        ref = fp32(x)
        cos = float(np.dot(got.ravel(), ref.ravel()) / (np.linalg.norm(got) * np.linalg.norm(ref)))
        assert cos >= 0.99, cos


def _onnx_fpn():
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(1)

    def init(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["a"]),
        helper.make_node("Resize", ["a", "", "s"], ["up"], mode="linear", coordinate_transformation_mode="half_pixel"),
        helper.make_node("Conv", ["x", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["skip"]),
        helper.make_node("Concat", ["up", "skip"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w3", "b3"], ["y"], pads=[1, 1, 1, 1]),
    ]
    inits = [init("w1", 8, 3, 3, 3), init("b1", 8), init("w2", 4, 3, 3, 3), init("b2", 4),
             init("w3", 5, 12, 3, 3), init("b3", 5), numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")]
    graph = helper.make_graph(nodes, "fpn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 16, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_onnx_bilinear_fpn_integer_only_bit_exact_and_close_to_fp32():
    import compiler
    from compiler import interp
    model = _onnx_fpn()
    float_graph = compiler.import_model(model)
    _check(model, lambda x: interp.run(float_graph, x)[0], _inputs(), "half_pixel")


@pytest.mark.slow
@requires_torch
@pytest.mark.parametrize("align_corners", [False, True])
def test_torch_bilinear_fpn_integer_only_bit_exact_and_close_to_fp32(align_corners):
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.down = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.skip = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.head = torch.nn.Conv2d(12, 5, 3, padding=1)

        def forward(self, x):
            a = torch.relu(self.down(x))
            up = torch.nn.functional.interpolate(a, scale_factor=2, mode="bilinear", align_corners=align_corners)
            return self.head(torch.cat([up, torch.relu(self.skip(x))], 1))
    torch.manual_seed(0)
    net = Net().eval()
    xs = _inputs()

    def fp32(x):
        with torch.no_grad():
            return net(torch.from_numpy(x)).numpy()
    mode = "align_corners" if align_corners else "pytorch_half_pixel"
    _check(net, fp32, xs, mode, example_inputs=(torch.from_numpy(xs[0]),))
