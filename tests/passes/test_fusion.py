"""fuse_kernels: what becomes one k.fused node, why a node stays out, and that the meaning is kept.
No backend is needed: the interpreter runs the fused bodies."""
from __future__ import annotations

import numpy as np

from compiler import interp
from compiler.ir import Graph
from compiler.ops import elementwise as ew, kernel, linalg, nn, quant as q, shape
from compiler.types import DType, TensorType
from compiler.verify import verify
from passes.fusion import explain_fusion, fuse

F32 = DType.F32


def _conv(g, x, co, rng, k=3):
    ci = x.type.shape[1]
    w = g.const((rng.standard_normal((co, ci, k, k)) / k).astype(np.float32), "w")
    b = g.const(rng.standard_normal(co).astype(np.float32), "b")
    return g.add1(linalg.conv, [x, w, b], strides=(1, 1), pads=(k // 2,) * 4, dilations=(1, 1))


def _bodies(g):
    return [[m.op for m in n.attrs["body"].nodes] for n in g.nodes if n.op is kernel.fused]


def _same(g, fg, *xs):
    verify(fg)
    for a, b in zip(interp.run(fg, *xs), interp.run(g, *xs)):
        np.testing.assert_array_equal(a, b)


def test_silu_is_a_dag_epilogue(rng):
    """x * sigmoid(x) reads the conv result twice: both readers join the conv's kernel."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 4, 6, 6), F32))
    c = _conv(g, x, 8, rng)
    g.outputs = [g.add1(ew.mul, [c, g.add1(ew.sigmoid, [c])])]
    fg, _ = fuse(g)
    assert _bodies(fg) == [[linalg.conv, ew.sigmoid, ew.mul]]
    assert fg.nodes[0].attrs["kernel"] == "conv"
    _same(g, fg, rng.standard_normal((1, 4, 6, 6)).astype(np.float32))


def test_residual_is_an_extra_input(rng):
    g = Graph()
    x = g.add_input("x", TensorType((1, 8, 5, 5), F32))
    r = g.add_input("r", TensorType((1, 8, 5, 5), F32))
    g.outputs = [g.add1(ew.relu, [g.add1(ew.add, [_conv(g, x, 8, rng), r])])]
    fg, _ = fuse(g)
    (n,) = fg.nodes
    assert n.op is kernel.fused and n.inputs == fg.inputs                # the anchor's data first
    assert _bodies(fg) == [[linalg.conv, ew.add, ew.relu]]
    xs = [rng.standard_normal((1, 8, 5, 5)).astype(np.float32) for _ in range(2)]
    _same(g, fg, *xs)


def test_a_value_read_outside_stops_the_kernel_there(rng):
    """The relu result is also a graph output: the kernel ends at it, the tanh after it stays out."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 4, 6, 6), F32))
    a = g.add1(ew.relu, [_conv(g, x, 4, rng)])
    g.outputs = [a, g.add1(ew.tanh, [a])]
    fg, reasons = fuse(g)
    assert _bodies(fg) == [[linalg.conv, ew.relu]]
    assert [n.op for n in fg.nodes] == [kernel.fused, ew.tanh]
    assert "also read outside" in reasons[g.nodes[-1].name]
    _same(g, fg, rng.standard_normal((1, 4, 6, 6)).astype(np.float32))


def test_explain_names_the_rule(rng):
    g = Graph()
    x = g.add_input("x", TensorType((1, 4, 6, 6), F32))
    c = _conv(g, x, 4, rng)
    g.outputs = [g.add1(nn.softmax, [c], axis=1), g.add1(ew.add, [c, g.add_input("big", TensorType(
        (2, 4, 6, 6), F32))])]
    why = explain_fusion(g)
    assert why[g.nodes[1].name] == "nn.softmax is not elementwise"
    assert why[g.nodes[2].name] == "its result is not the kernel's output shape"


def test_matmul_takes_the_transpose_of_b_as_prologue(rng):
    g = Graph()
    a = g.add_input("a", TensorType((2, 6, 8), F32))
    b = g.add_input("b", TensorType((2, 6, 8), F32))
    s = g.add1(linalg.matmul, [a, g.add1(shape.transpose, [b], perm=(0, 2, 1))])
    g.outputs = [g.add1(ew.mul, [s, g.const(np.float32(0.125))])]
    fg, _ = fuse(g)
    assert _bodies(fg) == [[shape.transpose, linalg.matmul, ew.mul]]
    assert kernel.anchor_of(fg.nodes[0].attrs["body"]).op is linalg.matmul
    _same(g, fg, *(rng.standard_normal((2, 6, 8)).astype(np.float32) for _ in range(2)))


def _requant(g, x, dtype=DType.I8, mult=(1 << 30,), shift=(31,)):
    return g.add1(q.requant, [x], multiplier=mult, shift=shift, zero_point=0, in_zero_point=0,
                  qmin=int(np.iinfo(dtype.numpy).min), qmax=int(np.iinfo(dtype.numpy).max), dtype=dtype, axis=1)


def test_integer_conv_takes_only_the_chains_its_kernel_has_slots_for(rng):
    """q.conv -> requant -> requant(int32) -> add -> requant is one kernel; a relu after it is not (the
    VNNI write-back has no slot for it) and says so."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 16, 5, 5), DType.U8))
    r = g.add_input("r", TensorType((1, 16, 5, 5), DType.I8))
    w = g.const(rng.integers(-127, 128, (16, 16, 1, 1)).astype(np.int8), "w")
    c = g.add1(q.conv, [x, w], strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), groups=1, x_zero_point=3)
    c32 = _requant(g, _requant(g, c), DType.I32)
    s = g.add1(ew.add, [c32, _requant(g, r, DType.I32)])
    y = _requant(g, s)
    g.outputs = [g.add1(ew.relu, [y])]
    fg, reasons = fuse(g)
    assert _bodies(fg)[0] == [q.conv, q.requant, q.requant, q.requant, ew.add, q.requant]
    assert [n.op for n in fg.nodes] == [kernel.fused, ew.relu]
    assert "cannot take nn.relu" in reasons[g.nodes[-1].name]
    _same(g, fg, rng.integers(0, 256, (1, 16, 5, 5)).astype(np.uint8),
          rng.integers(-128, 128, (1, 16, 5, 5)).astype(np.int8))


def test_on_a_gpu_an_integer_matmul_takes_the_residual_too(rng):
    """q.matmul -> bias -> requant -> requant(int32) -> add(requant(residual)) -> requant: on the CPU the VNNI
    matmul's write-back stops after the first requant; on a GPU (one GEMM composing any such chain,
    tvm_fused/cuda.py) the whole chain and the residual's requant are one kernel."""
    g = Graph()
    x = g.add_input("x", TensorType((2, 5, 16), DType.U8))
    r = g.add_input("r", TensorType((2, 5, 8), DType.I8))
    w = g.const(rng.integers(-127, 128, (16, 8)).astype(np.int8), "w")
    mm = g.add1(q.matmul, [x, w], a_zero_point=3, b_zero_point=0)
    b = g.add1(ew.add, [mm, g.const(rng.integers(-500, 500, 8).astype(np.int32), "b")])
    c32 = _requant(g, _requant(g, b), DType.I32)
    g.outputs = [_requant(g, g.add1(ew.add, [c32, _requant(g, r, DType.I32)]))]
    cpu, _ = fuse(g)
    assert _bodies(cpu)[0] == [q.matmul, ew.add, q.requant]
    gpu, _ = fuse(g, gpu=True)
    assert _bodies(gpu) == [[q.matmul, ew.add, q.requant, q.requant, q.requant, ew.add, q.requant]]
    xs = rng.integers(0, 256, (2, 5, 16)).astype(np.uint8), rng.integers(-128, 128, (2, 5, 8)).astype(np.int8)
    _same(g, cpu, *xs)
    _same(g, gpu, *xs)
