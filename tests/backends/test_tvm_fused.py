"""Fused kernels on the CPU: which nodes the kernel-level passes make one scheduled kernel, and that graphs
mixing blocked kernels with generic ops still compute what the interpreter computes."""
from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("tvm")

from compiler import interp  # noqa: E402
from tests.backends.kernel_ir import build, kernels  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import elementwise as ew, linalg, nn, reduce as rd, shape  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402

F32 = DType.F32
TARGET = Target("llvm", num_threads=1)


def _conv(g, x, co, k=3, stride=1, groups=1, bias=True, rng=np.random.default_rng(0)):
    ci = x.type.shape[1]
    ins = [x, g.const((rng.standard_normal((co, ci // groups, k, k)) / k).astype(np.float32), "w")]
    if bias:
        ins.append(g.const(rng.standard_normal(co).astype(np.float32), "b"))
    p = k // 2
    return g.add1(linalg.conv, ins, strides=(stride, stride), pads=(p, p, p, p), dilations=(1, 1),
                  groups=groups)


def _kernel_calls(exe) -> list[str]:
    """Names of the call_tir'd kernels in the Relax module, numbering stripped."""
    return re.findall(r"call_tir\(cls\.([a-z_0-9]+?)_\d+,", exe.source("relax"))


def _check(g, *inputs):
    exe = build(g, TARGET)
    for got, want in zip(exe.run(list(inputs)), interp.run(g, *inputs)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    return exe


def _groups(g):
    return kernels(g, TARGET)[1]


def test_residual_block_fuses_epilogues_and_stays_blocked(rng):
    g = Graph()
    x = g.add_input("x", TensorType((1, 16, 12, 12), F32))
    a = g.add1(ew.relu, [_conv(g, x, 32)])
    b = _conv(g, a, 32)
    s = _conv(g, x, 32, k=1)                           # shortcut
    y = g.add1(ew.relu, [g.add1(ew.add, [b, s])])
    y = g.add1(nn.max_pool, [y], kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0), dilations=(1, 1))
    y = g.add1(rd.reduce_mean, [y], axes=(2, 3), keepdims=True)
    g.outputs = [g.add1(shape.reshape, [y], shape=(1, 32))]
    groups = _groups(g)
    assert [grp.kind for grp in groups] == ["conv", "conv", "conv", "pool", "pool"]
    assert [n.op for n in groups[0].nodes] == [linalg.conv, ew.relu]
    fused = [grp for grp in groups if grp.kind == "conv" and len(grp.nodes) == 3][0]
    assert [n.op for n in fused.nodes] == [linalg.conv, ew.add, ew.relu] and fused.spec.has_residual
    exe = _check(g, rng.standard_normal((1, 16, 12, 12)).astype(np.float32))
    calls = _kernel_calls(exe)
    assert "unpack_nchwc" not in calls                    # global pool output reshapes for free
    assert calls.count("pack_nchwc") == 1                 # the input, packed once for two convs


def test_bias_add_and_clip_fold_into_conv(rng):
    g = Graph()
    x = g.add_input("x", TensorType((1, 8, 9, 9), F32))
    c = _conv(g, x, 8, bias=False)
    c = g.add1(ew.add, [c, g.const(rng.standard_normal((1, 8, 1, 1)).astype(np.float32))])
    g.outputs = [g.add1(ew.clip, [c], min=0.0, max=6.0)]
    (grp,) = _groups(g)
    assert grp.spec.has_bias and grp.spec.activation == "clip" and len(grp.nodes) == 3
    _check(g, rng.standard_normal((1, 8, 9, 9)).astype(np.float32) * 4)


def test_depthwise_then_generic_consumer_unpacks(rng):
    """softmax over channels has no blocked form: the conv result is unpacked for it."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 16, 7, 7), F32))
    d = g.add1(ew.relu, [_conv(g, x, 16, groups=16)])
    g.outputs = [g.add1(nn.softmax, [d], axis=1), g.add1(ew.sigmoid, [d])]
    exe = _check(g, rng.standard_normal((1, 16, 7, 7)).astype(np.float32))
    assert _kernel_calls(exe).count("unpack_nchwc") == 1


def test_linear_with_bias_and_gelu_is_one_kernel(rng):
    g = Graph()
    x = g.add_input("x", TensorType((2, 5, 24), F32))
    y = g.add1(linalg.matmul, [x, g.const(rng.standard_normal((24, 32)).astype(np.float32))])
    y = g.add1(ew.add, [y, g.const(rng.standard_normal(32).astype(np.float32))])
    g.outputs = [g.add1(ew.gelu, [y])]
    (grp,) = _groups(g)
    assert grp.kind == "matmul" and grp.spec.activation == "gelu_erf" and grp.spec.m == 10
    _check(g, rng.standard_normal((2, 5, 24)).astype(np.float32))


def _attention(rng):
    g = Graph()
    q = g.add_input("q", TensorType((1, 2, 6, 8), F32))
    k = g.add_input("k", TensorType((1, 2, 6, 8), F32))
    kt = g.add1(shape.transpose, [k], perm=(0, 1, 3, 2))
    s = g.add1(nn.softmax, [g.add1(linalg.matmul, [q, kt])], axis=-1)
    g.outputs = [g.add1(linalg.matmul, [s, q])]
    return g


def test_attention_is_one_kernel(rng):
    g = _attention(rng)
    assert [k.kind for k in kernels(g, TARGET)[1]] == ["attention"]
    exe = _check(g, *(rng.standard_normal((1, 2, 6, 8)).astype(np.float32) for _ in range(2)))
    assert _kernel_calls(exe) == ["attention"]


def test_attention_scores_use_transposed_b(rng):
    """Without fuse_attention, Q K^T reads K through the transpose (no copy) in the matmul kernel."""
    g = _attention(rng)
    groups = kernels(g, TARGET, disable=("fuse_attention",))[1]
    assert [grp.spec.transpose_b for grp in groups] == [True, False]
    xs = [rng.standard_normal((1, 2, 6, 8)).astype(np.float32) for _ in range(2)]
    for got, want in zip(build(g, TARGET, disable=("fuse_attention",)).run(xs), interp.run(g, *xs)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_non_float32_conv_takes_the_generic_path(rng):
    g = Graph()
    x = g.add_input("x", TensorType((1, 4, 6, 6), DType.F16))
    w = g.const(rng.standard_normal((4, 4, 3, 3)).astype(np.float16))
    g.outputs = [g.add1(linalg.conv, [x, w], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))]
    fg, ks = kernels(g, TARGET)
    assert [k.spec for k in ks] == [None]                 # fused, but no scheduled fp32 kernel: op by op
    xs = rng.standard_normal((1, 4, 6, 6)).astype(np.float16)
    np.testing.assert_allclose(build(g).run([xs])[0], interp.run(g, xs)[0], rtol=1e-2, atol=1e-2)


def test_softmax_over_an_inner_axis_is_one_kernel(rng):
    """YOLO's DFL head: softmax over 16 bins with a long contiguous inner axis."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 16, 4, 70), F32))
    g.outputs = [g.add1(nn.softmax, [x], axis=1)]
    exe = _check(g, (rng.standard_normal((1, 16, 4, 70)) * 8).astype(np.float32))
    assert _kernel_calls(exe) == ["softmax"]


@pytest.mark.parametrize("shape,axis", [((1, 7, 7, 96), -1), ((2, 5, 4, 16), 2)])
def test_layer_norm_over_the_last_axes_is_one_kernel(rng, shape, axis):
    """ConvNeXt's channel-last LayerNorm: one row per parallel iteration, vector partial sums."""
    g = Graph()
    x = g.add_input("x", TensorType(shape, F32))
    norm = shape[axis:]
    gamma = g.const(rng.standard_normal(norm).astype(np.float32))
    beta = g.const(rng.standard_normal(norm).astype(np.float32))
    g.outputs = [g.add1(nn.layer_norm, [x, gamma, beta], axis=axis, epsilon=1e-6)]
    exe = _check(g, (rng.standard_normal(shape) * 4 + 2).astype(np.float32))
    assert _kernel_calls(exe) == ["layernorm"]


def test_residual_conv_writes_over_the_dying_residual(rng):
    """A bottleneck block whose input is a kernel's result: the closing conv writes its output over that
    residual (call_tir_inplace), and every run computes what the interpreter computes (no input of a
    later run is clobbered)."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 16, 12, 12), F32))
    h = g.add1(ew.relu, [_conv(g, x, 32)])
    a = g.add1(ew.relu, [_conv(g, h, 32, k=1)])
    b = _conv(g, a, 32)
    y = g.add1(ew.relu, [g.add1(ew.add, [b, h])])
    g.outputs = [g.add1(rd.reduce_mean, [y], axes=(2, 3), keepdims=False)]
    fg, _ = kernels(g, TARGET)
    assert sorted(n.attrs["inplace"] for n in fg.nodes if n.op.name == "k.fused") == [-1, -1, -1, 1]
    exe = build(g, TARGET)
    assert exe.source("relax").count("call_tir_inplace") == 1
    xs = [rng.standard_normal((1, 16, 12, 12)).astype(np.float32) for _ in range(2)]
    for xv in xs + xs:
        np.testing.assert_allclose(exe.run([xv])[0], interp.run(g, xv)[0], rtol=1e-4, atol=1e-4)


def test_conv_kernels_take_the_packed_weight_constants_as_is(rng):
    """The weight the kernel is called with is the IR's packed constant itself (pack_weights), not a copy
    packed again at lowering; and the program computes what the interpreter computes."""
    from compiler.backends.tvm_fused import fp32, kernel_spec
    from compiler.ops import kernel, layout as lay
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 12, 12), F32))
    a = g.add1(ew.relu, [_conv(g, x, 16)])
    b = _conv(g, a, 16, groups=16)
    g.outputs = [_conv(g, b, 32, k=1)]
    fg, _ = kernels(g, TARGET)
    convs = [n for n in fg.nodes if n.op is kernel.fused and n.attrs["kernel"] == "conv"]
    assert len(convs) == 3
    for n in convs:
        w = kernel.anchor_of(n.attrs["body"]).inputs[1]
        assert w.producer.op is lay.unpack_weight
        assert fp32.packed_weight(kernel_spec(n), w) is w.producer.inputs[0].const
    _check(g, rng.standard_normal((1, 3, 12, 12)).astype(np.float32))


def test_matmul_kernels_take_the_packed_weight_constants_as_is(rng):
    """A linear layer's kernel is called with the IR's column-panel constant itself (pack_weights)."""
    from compiler.backends.tvm_fused import fp32, kernel_spec
    from compiler.ops import kernel, layout as lay
    g = Graph()
    x = g.add_input("x", TensorType((4, 24), F32))
    w = g.const(rng.standard_normal((24, 48)).astype(np.float32), "w")
    g.outputs = [g.add1(ew.relu, [g.add1(linalg.matmul, [x, w])])]
    fg, _ = kernels(g, TARGET)
    (n,) = [n for n in fg.nodes if n.op is kernel.fused and n.attrs["kernel"] == "matmul"]
    wv = kernel.anchor_of(n.attrs["body"]).inputs[1]
    assert wv.producer.op is lay.unpack_weight and wv.producer.attrs["form"] == "panels"
    assert fp32.packed_matmul_weight(kernel_spec(n), wv) is wv.producer.inputs[0].const
    _check(g, rng.standard_normal((4, 24)).astype(np.float32))


def test_a_constant_mask_broadcast_over_heads_fuses_into_the_scores_matmul(rng):
    """Unfused attention (fuse_attention off): Q K^T * scale + a (1, 1, S, S) causal mask is one matmul
    kernel reading the mask at the output's index, not TVM's unscheduled matmul-add."""
    s_, h, d = 16, 3, 8
    g = Graph()
    q_ = g.add_input("q", TensorType((1, h, s_, d), F32))
    k_ = g.add_input("k", TensorType((1, h, d, s_), F32))
    mask = np.triu(np.full((s_, s_), -np.inf, np.float32), 1)[None, None]
    sc = g.add1(ew.add, [g.add1(ew.mul, [g.add1(linalg.matmul, [q_, k_]), g.const(np.float32(0.3), "scale")]),
                         g.const(mask, "mask")])
    g.outputs = [g.add1(nn.softmax, [sc], axis=-1)]
    (grp, *_), = [[k for k in kernels(g, TARGET, disable=("fuse_attention",))[1] if k.kind == "matmul"]]
    assert [n.op for n in grp.nodes] == [linalg.matmul, ew.mul, ew.add]
    exe = build(g, TARGET, disable=("fuse_attention",))
    assert _kernel_calls(exe).count("matmul") == 1
    xs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]
    np.testing.assert_allclose(exe.run(xs)[0], interp.run(g, *xs)[0], rtol=1e-5, atol=1e-6)


def test_an_input_padding_mask_broadcast_over_heads_fuses_into_the_scores_matmul(rng):
    """Unfused attention with a padding mask that is an input ((b, 1, 1, S), broadcast over heads and
    queries): Q K^T * scale + mask is one scheduled matmul kernel reading the mask at the output's index."""
    s_, h, d = 16, 3, 8
    g = Graph()
    q_ = g.add_input("q", TensorType((2, h, s_, d), F32))
    k_ = g.add_input("k", TensorType((2, h, d, s_), F32))
    m_ = g.add_input("mask", TensorType((2, 1, 1, s_), F32))
    sc = g.add1(ew.add, [g.add1(ew.mul, [g.add1(linalg.matmul, [q_, k_]), g.const(np.float32(0.3), "scale")]), m_])
    g.outputs = [g.add1(nn.softmax, [sc], axis=-1)]
    (grp, *_), = [[k for k in kernels(g, TARGET, disable=("fuse_attention",))[1] if k.kind == "matmul"]]
    assert [n.op for n in grp.nodes] == [linalg.matmul, ew.mul, ew.add]
    exe = build(g, TARGET, disable=("fuse_attention",))
    assert _kernel_calls(exe).count("matmul") == 1
    xs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]
    xs[2][1, ..., s_ // 2:] = -1e9
    np.testing.assert_allclose(exe.run(xs)[0], interp.run(g, *xs)[0], rtol=1e-5, atol=1e-6)


def test_float_max_of_an_all_minus_inf_row_is_minus_inf():
    """reduce_max starts from -inf, as numpy does (TVM's own starts from the lowest finite float): the
    fully-masked-row test of an attention export compares it with -inf."""
    g = Graph()
    m = g.add_input("m", TensorType((1, 4, 4), F32))
    mx = g.add1(rd.reduce_max, [m], axes=(1,), keepdims=True)
    mn = g.add1(rd.reduce_min, [g.add1(ew.neg, [m])], axes=(1, 2), keepdims=False)
    g.outputs = [g.add1(ew.equal, [mx, g.const(np.float32(-np.inf), "ninf")]), mn]
    x = np.full((1, 4, 4), -np.inf, np.float32)
    x[0, :, 0] = 0
    exe = build(g, TARGET)
    for got, want in zip(exe.run([x]), interp.run(g, x)):
        np.testing.assert_array_equal(got, want)
    assert exe.run([x])[0].tolist() == [[[False, True, True, True]]]
