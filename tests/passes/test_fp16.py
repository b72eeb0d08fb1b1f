"""convert_fp16 (passes/fp16.py): a small conv net and a small attention block computed in float16 keep their
meaning through the reference interpreter (within FP16_RTOL of the float32 result, relative to the
output's largest magnitude), every float op is float16 except the documented FP32_OPS, and the
signature stays float32."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import interp
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import linalg, nn, reduce, shape
from compiler.types import DType, TensorType
from passes import PassContext, run_pipeline
from passes.fp16 import F16_OPS, FP32_OPS, computes_in_f16

F32, F16 = DType.F32, DType.F16
FP16_RTOL = 5e-3     # float16 rounds at 4.9e-4 relative; both graphs measured at 4.5e-4 to 6.1e-4 here


def _w(g: Graph, rng, *shape_, scale=None) -> object:
    scale = scale if scale is not None else 1.0 / np.sqrt(np.prod(shape_[1:]) or 1)
    return g.const((rng.standard_normal(shape_) * scale).astype(np.float32), "w")


def _conv_net(rng) -> Graph:
    """conv-relu, max pool, a grouped conv with a residual, global mean, a linear layer and softmax."""
    g = Graph("convnet")
    x = g.add_input("x", TensorType((1, 3, 16, 16), F32))
    conv = {"strides": (1, 1), "pads": (1, 1, 1, 1), "dilations": (1, 1)}
    y = g.add1(ew.relu, [g.add1(linalg.conv, [x, _w(g, rng, 8, 3, 3, 3), _w(g, rng, 8, scale=0.1)], **conv)])
    y = g.add1(nn.max_pool, [y], kernel=(2, 2), strides=(2, 2), pads=(0,) * 4, dilations=(1, 1))
    r = g.add1(linalg.conv, [y, _w(g, rng, 8, 4, 3, 3), _w(g, rng, 8, scale=0.1)], groups=2, **conv)
    y = g.add1(ew.relu, [g.add1(ew.add, [r, y])])
    y = g.add1(reduce.reduce_mean, [y], axes=(2, 3), keepdims=False)
    y = g.add1(linalg.matmul, [y, _w(g, rng, 8, 10)])
    g.outputs = [g.add1(nn.softmax, [y], axis=-1), y]
    return g


def _attention(rng, seq=8, hidden=32, heads=2) -> Graph:
    """Pre-norm self-attention with an additive mask (float32's minimum, as exporters write it), an
    output projection, a residual and a GELU feed-forward layer."""
    d = hidden // heads
    g = Graph("attention")
    x = g.add_input("x", TensorType((1, seq, hidden), F32))
    h = g.add1(nn.layer_norm, [x, g.const(np.ones(hidden, np.float32)), g.const(np.zeros(hidden, np.float32))])

    def heads_of(w):
        t = g.add1(linalg.matmul, [h, w])
        return g.add1(shape.transpose, [g.add1(shape.reshape, [t], shape=(1, seq, heads, d))], perm=(0, 2, 1, 3))
    q, k, v = (heads_of(_w(g, rng, hidden, hidden)) for _ in range(3))
    s = g.add1(linalg.matmul, [q, g.add1(shape.transpose, [k], perm=(0, 1, 3, 2))])
    s = g.add1(ew.mul, [s, g.const(np.float32(1 / np.sqrt(d)))])
    mask = np.where(np.arange(seq) < seq - 2, 0, np.finfo(np.float32).min).astype(np.float32)
    s = g.add1(ew.add, [s, g.const(mask.reshape(1, 1, 1, seq), "mask")])
    p = g.add1(nn.softmax, [s], axis=-1)
    o = g.add1(shape.reshape, [g.add1(shape.transpose, [g.add1(linalg.matmul, [p, v])], perm=(0, 2, 1, 3))],
               shape=(1, seq, hidden))
    y = g.add1(ew.add, [x, g.add1(linalg.matmul, [o, _w(g, rng, hidden, hidden)])])
    f = g.add1(ew.gelu, [g.add1(linalg.matmul, [y, _w(g, rng, hidden, 2 * hidden)])])
    g.outputs = [g.add1(ew.add, [y, g.add1(linalg.matmul, [f, _w(g, rng, 2 * hidden, hidden)])])]
    return g


def _fp16(g: Graph) -> Graph:
    return run_pipeline(g, ["convert_fp16"], PassContext())      # verifies the graph after the pass


@pytest.mark.parametrize("build", [_conv_net, _attention], ids=["conv_net", "attention"])
def test_convert_fp16_keeps_the_meaning_within_fp16_tolerance(build):
    rng = np.random.default_rng(0)
    g = build(rng)
    h = _fp16(g)
    for _ in range(3):
        x = rng.standard_normal(g.inputs[0].type.shape).astype(np.float32)
        for want, got in zip(interp.run(g, x), interp.run(h, x)):
            assert got.dtype == np.float32 and got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=0, atol=FP16_RTOL * float(np.abs(want).max()))


@pytest.mark.parametrize("build", [_conv_net, _attention], ids=["conv_net", "attention"])
def test_convert_fp16_types_every_float_op_f16_but_the_fp32_list(build):
    g = build(np.random.default_rng(0))
    h = _fp16(g)
    assert [v.type for v in h.inputs] == [v.type for v in g.inputs]
    assert [v.type for v in h.outputs] == [v.type for v in g.outputs]
    float_ops = [n for n in h.nodes if n.op is not ew.cast and any(
        v.type.dtype.is_float for v in (*n.inputs, *n.outputs))]
    for n in float_ops:
        dts = {v.type.dtype for v in (*n.inputs, *n.outputs) if v.type.dtype.is_float}
        assert dts == ({F16} if computes_in_f16(n) else {F32}), (n, dts)
        assert n.op in F16_OPS | FP32_OPS
    f32_ops = {n.op.name for n in float_ops if not computes_in_f16(n)}
    assert f32_ops == ({"nn.reduce_mean", "nn.softmax"} if g.name == "convnet" else {"nn.layer_norm", "nn.softmax"})
    f32_consts = {id(v) for n in float_ops if not computes_in_f16(n) for v in n.inputs if v.is_const}
    assert all(v.const.dtype == (np.float32 if id(v) in f32_consts else np.float16)
               for v in h.constants() if v.type.dtype.is_float)      # layer_norm's scale and bias: f32
    # one cast per value that crosses between the two types, made once: conv net x -> f16, relu -> f32
    # (mean), mean -> f16, linear -> f32 (softmax and the output); attention x -> f16 (residual),
    # layer_norm -> f16, scores -> f32 (softmax), probabilities -> f16, the output -> f32
    casts = [n.name for n in h.nodes if n.op is ew.cast]
    assert len(casts) == {"convnet": 4, "attention": 5}[g.name], casts


def test_convert_fp16_saturates_constants_and_leaves_integers_alone():
    g = Graph()
    x = g.add_input("x", TensorType((4,), F32))
    i = g.add_input("i", TensorType((4,), DType.I64))
    big = g.add1(ew.add, [x, g.const(np.float32([1e5, -np.finfo(np.float32).max, 1.0, -np.inf]))])
    n = g.add1(ew.add, [i, g.const(np.int64([1, 2, 3, 4]))])
    index = g.add1(ew.cast, [g.add1(nn.softmax, [x])], to=DType.I32)   # float32 op -> int: stays float32
    g.outputs = [big, g.add1(ew.add, [g.add1(ew.cast, [n], to=F32), x]), n,
                 g.add1(ew.cast, [g.add1(ew.mul, [x, g.const(np.float32(1000.5))])], to=DType.I32), index]
    h = _fp16(g)
    assert h.outputs[3].producer.inputs[0].type.dtype is F16       # a float16 op's result, as it comes
    softmax = h.outputs[4].producer.inputs[0]
    assert softmax.type.dtype is F32 and softmax.producer.op is nn.softmax
    (c,) = [v.const for v in h.constants() if v.type.dtype is F16 and v.type.shape == (4,)]
    assert c.tolist() == [65504.0, -65504.0, 1.0, -np.inf]
    assert h.outputs[2].type.dtype is DType.I64 and h.outputs[2].producer.inputs[1].const.dtype == np.int64
    cast_in = [n for n in h.nodes if n.op is ew.cast and n.inputs[0].type.dtype is DType.I64]
    assert [c.attrs["to"] for c in cast_in] == [F16]       # int -> float32 becomes int -> float16
    got = interp.run(h, np.float32([1, 2, 3, 4]), np.int64([0, 1, 2, 3]))
    assert got[1].tolist() == [2, 5, 8, 11] and got[2].tolist() == [1, 3, 5, 7]
    f16_products = (np.float16([1, 2, 3, 4]) * np.float16(1000.5)).astype(np.int32)
    assert got[3].tolist() == f16_products.tolist() != [1000, 2001, 3001, 4002]     # 3001.5 -> 3002
    assert [v.type for v in h.outputs] == [v.type for v in g.outputs]


@pytest.mark.parametrize("backend", ["tvm", "mlir"])
@pytest.mark.parametrize("build", [_conv_net, _attention], ids=["conv_net", "attention"])
def test_convert_fp16_graphs_compile_on_both_cpu_backends(build, backend):
    """compile(..., precision="fp16") on llvm: the executable agrees with the interpreter on its own
    (float16) final IR, and with the float32 model within FP16_RTOL; it takes and gives float32."""
    pytest.importorskip("tvm" if backend == "tvm" else "iree.compiler")
    import compiler
    rng = np.random.default_rng(0)
    g = build(rng)
    cm = compiler.compile(g, "llvm", backend=backend, precision="fp16")
    assert any(v.type.dtype is F16 for n in cm.graph.walk() for v in n.outputs)
    x = rng.standard_normal(g.inputs[0].type.shape).astype(np.float32)
    for want, ref16, got in zip(interp.run(g, x), interp.run(cm.graph, x), cm.run(x)):
        assert got.dtype == np.float32
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(got, ref16, rtol=0, atol=1e-3 * scale)
        np.testing.assert_allclose(got, want, rtol=0, atol=FP16_RTOL * scale)


def test_precision_fp16_refuses_quantize_and_unknown_precisions():
    import compiler
    from compiler.diagnostics import InvalidInput
    g = _conv_net(np.random.default_rng(0))
    with pytest.raises(InvalidInput, match="cannot be combined with quantize='int8'") as e:
        compiler.compile(g, "llvm", precision="fp16", quantize="int8", calibration=[])
    assert e.value.code == 2
    with pytest.raises(InvalidInput, match="expected one of: fp32, fp16"):
        compiler.compile(g, "llvm", precision="bf16")


def test_cli_precision_fp16_checks_and_refuses_quantize(tmp_path):
    """--precision fp16 --check passes (the executable within float16 tolerance of the interpreter);
    with --quantize it exits 2."""
    pytest.importorskip("tvm")
    from tests.test_cli import DEMO, run_cli
    r = run_cli(DEMO, "--precision", "fp16", "--check", "-o", tmp_path / "m.dyc")
    assert r.returncode == 0, r.stderr
    r = run_cli(DEMO, "--precision", "fp16", "--quantize", "int8", "--calibration", tmp_path / "c.npz")
    assert r.returncode == 2 and "precision='fp16' cannot be combined" in r.stderr, r.stderr
    assert "--precision {fp32,fp16}" in run_cli("--help").stdout


@pytest.mark.parametrize("backend", ["tvm", "mlir"])
def test_float16_matmul_and_conv_sum_in_float32_on_both_cpu_backends(backend):
    """As the reference (numpy) does, a float16 matmul or conv (the grouped conv's generic form too) sums
    its products in float32 and rounds once: equal to the interpreter. The MLIR module says so (IREE's CPU
    code would hide a float16 accumulator here: x86 has no float16 adds; its CUDA code would not)."""
    pytest.importorskip("tvm" if backend == "tvm" else "iree.compiler")
    import re

    import compiler
    g = Graph()
    a = g.add_input("a", TensorType((1, 4096), F16))
    x = g.add_input("x", TensorType((1, 8192, 1, 1), F16))
    ones = g.const(np.ones((4096, 1), np.float16))
    w = g.const(np.ones((2, 4096, 1, 1), np.float16))
    conv = {"strides": (1, 1), "pads": (0,) * 4, "dilations": (1, 1)}
    g.outputs = [g.add1(linalg.matmul, [a, ones]), g.add1(linalg.conv, [x, w], groups=2, **conv)]
    cm = compiler.compile(g, "llvm", backend=backend)
    inputs = [np.full(v.type.shape, 0.1, np.float16) for v in g.inputs]
    for got, want in zip(cm.run(*inputs), interp.run(g, *inputs)):
        assert got.dtype == np.float16 and got.ravel().tolist() == want.ravel().tolist()
    if backend == "mlir":
        text = cm.executable.source("mlir")
        assert re.search(r"linalg\.matmul ins\(.*xf16>\) outs\(.*\) -> tensor<1x1xf32>", text)
        assert text.count("arith.truncf") == 2 and "arith.extf" in text      # the conv's generic form
