"""recognize_gelu: the erf-form GELU chains become nn.gelu; near misses are left alone."""
from __future__ import annotations

import math

import numpy as np

from compiler import interp
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.types import DType, TensorType
from passes.recognize import recognize_gelu


def _c(g, v):
    return g.const(np.array(v, np.float32))


def _gelu_torch_order(g, x):
    h = g.add1(ew.div, [x, _c(g, math.sqrt(2))])
    e = g.add1(ew.erf, [h])
    a = g.add1(ew.add, [e, _c(g, 1.0)])
    m = g.add1(ew.mul, [x, a])
    return g.add1(ew.mul, [m, _c(g, 0.5)])


def _gelu_half_first(g, x):
    xh = g.add1(ew.mul, [x, _c(g, 0.5)])
    h = g.add1(ew.mul, [x, _c(g, 1 / math.sqrt(2))])
    e = g.add1(ew.erf, [h])
    a = g.add1(ew.add, [_c(g, 1.0), e])
    return g.add1(ew.mul, [xh, a])


def _graph(builder):
    g = Graph()
    x = g.add_input("x", TensorType((4, 16), DType.F32))
    y = g.add1(ew.relu, [x])
    g.outputs = [builder(g, y)]
    return g


def test_recognize_gelu_both_orders():
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32) * 3
    for builder in (_gelu_torch_order, _gelu_half_first):
        g = _graph(builder)
        after = recognize_gelu(g)
        assert [n.op for n in after.nodes] == [ew.relu, ew.gelu]
        np.testing.assert_allclose(interp.run(after, x)[0], interp.run(g, x)[0], rtol=1e-5, atol=1e-6)


def test_recognize_gelu_skips_wrong_constant_and_shared_intermediate():
    def wrong(g, x):
        h = g.add1(ew.div, [x, _c(g, 2.0)])                   # not sqrt(2)
        a = g.add1(ew.add, [g.add1(ew.erf, [h]), _c(g, 1.0)])
        return g.add1(ew.mul, [g.add1(ew.mul, [x, a]), _c(g, 0.5)])
    assert ew.gelu not in [n.op for n in recognize_gelu(_graph(wrong)).nodes]

    g = _graph(_gelu_torch_order)
    erf_out = next(n for n in g.nodes if n.op is ew.erf).outputs[0]
    g.outputs.append(erf_out)                                 # the erf result is needed too
    assert ew.gelu not in [n.op for n in recognize_gelu(g).nodes]


def test_recognize_decomposed_layer_norm_and_tanh_gelu_from_torch_export(tmp_path):
    """torch.onnx at opset 13 spells LayerNorm as ReduceMean/Sub/Pow/Sqrt/Div/Mul/Add and
    GELU(approximate='tanh') as a Pow/Tanh chain: both come back as one op each."""
    torch = __import__("pytest").importorskip("torch")
    import compiler
    from examples.zoo import export_onnx

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = torch.nn.LayerNorm(16)
            self.fc = torch.nn.Linear(16, 16)

        def forward(self, x):
            return self.fc(torch.nn.functional.gelu(self.ln(x), approximate="tanh"))

    torch.manual_seed(0)
    m = Block().eval()
    torch.nn.init.normal_(m.ln.weight)
    torch.nn.init.normal_(m.ln.bias)
    path = export_onnx(m, torch.randn(3, 16), tmp_path / "b.onnx", opset=13)
    before = compiler.import_model(path)
    after = compiler.optimize(before)
    assert after.op_histogram() == {"nn.add": 1, "nn.gelu": 1, "nn.layer_norm": 1, "nn.matmul": 1}
    assert next(n for n in after.nodes if n.op is ew.gelu).attrs["approximate"] == "tanh"
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32) * 2
    np.testing.assert_allclose(interp.run(after, x)[0], interp.run(before, x)[0], rtol=1e-5, atol=1e-5)
