"""Numerical tests for the hand-scheduled TVM CPU kernels (compiler/backends/tvm_kernels) and their embedding in a
Relax module.  Each test compiles one small kernel (~0.1-0.5 s)."""

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

from compiler.backends.tvm_kernels import conv2d as C  # noqa: E402
from compiler.backends.tvm_kernels import matmul as M  # noqa: E402
from compiler.backends.tvm_kernels import pool as P  # noqa: E402
from compiler.backends.tvm_kernels import layout as L  # noqa: E402
from compiler.backends.tvm_kernels.common import SCHEDULE_ATTR, host_target  # noqa: E402

RTOL = ATOL = 1e-4
TARGET = host_target()


def _build(func):
    return tvm.compile(tvm.IRModule({"main": func}), TARGET)


def _call(func, args, out_shape):
    lib = _build(func)
    targs = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in args]
    out = tvm.runtime.empty(out_shape, "float32")
    lib["main"](*targs, out)
    return out.numpy()


def _check_attrs(func):
    assert int(func.attrs["op_pattern"]) == 8
    assert bool(func.attrs["tirx.is_scheduled"])


# ---------------------------------------------------------------------------------------------------------- conv2d
def _run_conv(spec, expect_schedule="tiled"):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((spec.n, spec.ci, spec.h, spec.w)).astype("float32")
    w = (rng.standard_normal((spec.co, spec.ci_per_group, spec.kh, spec.kw))
         / np.sqrt(spec.ci_per_group * spec.kh * spec.kw)).astype("float32")
    b = rng.standard_normal(spec.co).astype("float32")
    oh, ow = C.output_hw(spec)
    r = rng.standard_normal((spec.n, spec.co, oh, ow)).astype("float32")
    ref = C.conv2d_reference(x, w, b if spec.has_bias else None, spec.stride, spec.pad, spec.dilation, spec.groups,
                             r if spec.has_residual else None, spec.activation, spec.clip_min, spec.clip_max)
    func = C.make_conv2d(spec)
    _check_attrs(func)
    if expect_schedule:
        assert func.attrs[SCHEDULE_ATTR] == expect_schedule
    params = [p.name for p in func.params]
    assert len(params) == 3 + spec.has_bias + spec.has_residual
    args = [L.pack_nchwc_np(x, spec.in_block), C.pack_weight(spec, w)]
    assert args[1].shape == tuple(C.weight_shape(spec))
    if spec.has_bias:
        args.append(C.pack_bias(spec, b))
    if spec.has_residual:
        args.append(L.pack_nchwc_np(r, spec.out_block))
    y = _call(func, args, C.out_shape(spec))
    np.testing.assert_allclose(L.unpack_nchwc_np(y), ref, rtol=RTOL, atol=ATOL)


EPILOGUES = [
    dict(),
    dict(has_bias=True),
    dict(has_bias=True, activation="relu"),
    dict(has_bias=True, has_residual=True, activation="relu"),
    dict(has_residual=True, activation="clip", clip_min=-0.5, clip_max=0.5),
]


@pytest.mark.parametrize("epi", EPILOGUES, ids=lambda e: "-".join(f"{k}={v}" for k, v in e.items()) or "plain")
def test_conv_3x3_epilogues(epi):
    _run_conv(C.Conv2dSpec(1, 32, 14, 14, 32, 3, 3, pad=(1, 1, 1, 1), **epi))


@pytest.mark.parametrize("epi", EPILOGUES[1:4:2], ids=["bias", "bias_res_relu"])
def test_conv_1x1(epi):
    _run_conv(C.Conv2dSpec(1, 64, 14, 14, 48, 1, 1, **epi))


def test_conv_1x1_stride2():
    _run_conv(C.Conv2dSpec(1, 32, 14, 14, 64, 1, 1, stride=(2, 2), has_bias=True))


def test_conv_3x3_stride2():
    _run_conv(C.Conv2dSpec(1, 32, 15, 15, 32, 3, 3, stride=(2, 2), pad=(1, 1, 1, 1), has_bias=True,
                           activation="relu"))


def test_conv_7x7_stride2_3_channels_plain_input():
    ib, ob = C.choose_blocks(3, 64)
    assert (ib, ob) == (0, 16)
    _run_conv(C.Conv2dSpec(1, 3, 32, 32, 64, 7, 7, stride=(2, 2), pad=(3, 3, 3, 3), in_block=ib, out_block=ob,
                           has_bias=True, activation="relu"))


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_depthwise_3x3(stride):
    ib, ob = C.choose_blocks(32, 32, groups=32)
    spec = C.Conv2dSpec(1, 32, 14, 14, 32, 3, 3, stride=(stride, stride), pad=(1, 1, 1, 1), groups=32,
                        in_block=ib, out_block=ob, has_bias=True, activation="clip", clip_min=0.0, clip_max=6.0)
    assert C.conv_kind(spec) == "depthwise"
    _run_conv(spec)


def test_conv_depthwise_channels_24():
    ib, ob = C.choose_blocks(24, 24, groups=24)
    assert ib == ob == 8
    _run_conv(C.Conv2dSpec(1, 24, 9, 9, 24, 5, 5, pad=(2, 2, 2, 2), groups=24, in_block=ib, out_block=ob))


def test_conv_grouped_block_aligned():
    ib, ob = C.choose_blocks(32, 64, groups=4)
    spec = C.Conv2dSpec(1, 32, 10, 10, 64, 3, 3, pad=(1, 1, 1, 1), groups=4, in_block=ib, out_block=ob,
                        has_bias=True)
    assert C.conv_kind(spec) == "dense"
    _run_conv(spec)


def test_conv_grouped_generic():
    spec = C.Conv2dSpec(1, 32, 10, 10, 64, 3, 3, pad=(1, 1, 1, 1), groups=4, in_block=16, out_block=16,
                        has_bias=True, activation="relu")
    assert C.conv_kind(spec) == "generic"
    _run_conv(spec)


def test_conv_depthwise_multiplier():  # groups == ci, co = 2 * ci: generic kind
    spec = C.Conv2dSpec(1, 8, 9, 9, 16, 3, 3, pad=(1, 1, 1, 1), groups=8, in_block=8, out_block=16)
    assert C.conv_kind(spec) == "generic"
    _run_conv(spec)


def test_conv_dilation2():
    _run_conv(C.Conv2dSpec(1, 16, 13, 13, 16, 3, 3, pad=(2, 2, 2, 2), dilation=(2, 2), has_bias=True))


def test_conv_asymmetric_padding():
    _run_conv(C.Conv2dSpec(1, 16, 12, 11, 32, 3, 3, stride=(2, 2), pad=(0, 1, 1, 2), has_residual=True))


@pytest.mark.parametrize("ci,co", [(24, 40), (40, 24), (3, 24)])
def test_conv_channels_not_multiple_of_16(ci, co):
    ib, ob = C.choose_blocks(ci, co)
    _run_conv(C.Conv2dSpec(1, ci, 11, 11, co, 3, 3, pad=(1, 1, 1, 1), in_block=ib, out_block=ob, has_bias=True,
                           activation="relu"))


def test_conv_plain_nchw_output():
    _run_conv(C.Conv2dSpec(1, 24, 10, 10, 40, 3, 3, pad=(1, 1, 1, 1), in_block=8, out_block=0, has_bias=True,
                           has_residual=True, activation="relu"))


def test_conv_prime_width_and_batch2():
    _run_conv(C.Conv2dSpec(2, 16, 13, 13, 32, 3, 3, pad=(1, 1, 1, 1), has_bias=True))


def test_conv_mixed_blocks():
    _run_conv(C.Conv2dSpec(1, 32, 8, 8, 32, 1, 1, in_block=8, out_block=16, activation="relu"))


# ---------------------------------------------------------------------------------------------------------- matmul
def _run_mm(spec):
    rng = np.random.default_rng(1)
    a = rng.standard_normal(M.a_shape(spec)).astype("float32")
    raw = (spec.n, spec.k) if spec.transpose_b else (spec.k, spec.n)
    if not spec.b_is_const:
        raw = (*spec.batch, *raw)
    b = (rng.standard_normal(raw) / np.sqrt(spec.k)).astype("float32")
    bias = rng.standard_normal(spec.n).astype("float32")
    ref = M.matmul_reference(a, b, bias if spec.has_bias else None, spec.transpose_b, spec.activation)
    func = M.make_matmul(spec)
    _check_attrs(func)
    assert func.attrs[SCHEDULE_ATTR] == "tiled"
    args = [a, M.pack_b(spec, b) if spec.b_is_const else b] + ([bias] if spec.has_bias else [])
    np.testing.assert_allclose(_call(func, args, M.out_shape(spec)), ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("act", ["none", "relu", "gelu_erf", "gelu_tanh"])
def test_matmul_linear_activations(act):
    _run_mm(M.MatmulSpec((1,), 32, 96, 64, has_bias=True, activation=act))


@pytest.mark.parametrize("transpose_b", [False, True])
def test_matmul_const_transpose(transpose_b):
    _run_mm(M.MatmulSpec((), 24, 40, 72, transpose_b=transpose_b, has_bias=True))


@pytest.mark.parametrize("transpose_b", [False, True])
def test_matmul_batched_activations(transpose_b):
    _run_mm(M.MatmulSpec((1, 3), 32, 48, 16, b_is_const=False, transpose_b=transpose_b))


def test_matmul_attention_shapes():
    _run_mm(M.MatmulSpec((1, 2), 128, 128, 64, b_is_const=False, transpose_b=True))
    _run_mm(M.MatmulSpec((1, 2), 128, 64, 128, b_is_const=False))


def test_matmul_classifier_head_m1():
    spec = M.MatmulSpec((), 1, 1000, 256, transpose_b=True, has_bias=True)
    assert M.k_split(spec) > 1  # skinny path: independent partial sums over k
    _run_mm(spec)


@pytest.mark.parametrize("transpose_b", [False, True])
def test_matmul_skinny_activations(transpose_b):
    _run_mm(M.MatmulSpec((2,), 2, 40, 64, b_is_const=False, transpose_b=transpose_b, activation="gelu_tanh"))
    _run_mm(M.MatmulSpec((), 3, 48, 30, transpose_b=transpose_b, has_bias=True, activation="relu"))


def test_matmul_odd_sizes():
    _run_mm(M.MatmulSpec((2,), 7, 10, 9, has_bias=True, activation="relu"))
    _run_mm(M.MatmulSpec((3,), 5, 6, 11, b_is_const=False, transpose_b=True, activation="gelu_erf"))


# ------------------------------------------------------------------------------------------------------------ pool
POOLS = [
    P.PoolSpec("max", 1, 32, 16, 16, 3, 3, (2, 2), (1, 1, 1, 1)),
    P.PoolSpec("avg", 1, 24, 13, 13, 3, 3, (2, 2), (1, 1, 1, 1), block=8),
    P.PoolSpec("avg", 1, 24, 13, 13, 3, 3, (2, 2), (1, 0, 1, 2), block=8, count_include_pad=True),
    P.PoolSpec("avg", 1, 16, 13, 13, 2, 2, (2, 2), block=16, ceil_mode=True),
    P.PoolSpec("max", 1, 6, 13, 13, 2, 2, (2, 2), block=0, ceil_mode=True),
    P.PoolSpec("max", 1, 16, 9, 9, 3, 3, (1, 1), (2, 2, 2, 2), dilation=(2, 2), block=4),
    P.PoolSpec("global_avg", 1, 64, 7, 7),
    P.PoolSpec("global_max", 1, 40, 5, 6, block=8),
]


@pytest.mark.parametrize("spec", POOLS, ids=lambda s: f"{s.kind}-c{s.c}-b{s.block}")
def test_pool(spec):
    x = np.random.default_rng(2).standard_normal((spec.n, spec.c, spec.h, spec.w)).astype("float32")
    func = P.make_pool2d(spec)
    _check_attrs(func)
    y = _call(func, [L.pack_nchwc_np(x, spec.block)], P.pool_out_shape(spec))
    np.testing.assert_allclose(L.unpack_nchwc_np(y), P.pool2d_reference(x, spec), rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------------------- layout
def test_layout_roundtrip():
    n, c, h, w = 2, 48, 5, 7
    x = np.random.default_rng(3).standard_normal((n, c, h, w)).astype("float32")
    f_pack, f_unpack = L.make_pack_nchwc(n, c, h, w, 16), L.make_unpack_nchwc(n, c, h, w, 16)
    _check_attrs(f_pack)
    packed = _call(f_pack, [x], (n, c // 16, h, w, 16))
    np.testing.assert_array_equal(packed, L.pack_nchwc_np(x, 16))
    np.testing.assert_array_equal(_call(f_unpack, [packed], (n, c, h, w)), x)
    re8 = _call(L.make_repack_nchwc(n, c, h, w, 16, 8), [packed], (n, c // 8, h, w, 8))
    np.testing.assert_array_equal(re8, L.pack_nchwc_np(x, 8))
    np.testing.assert_array_equal(L.unpack_nchwc_np(re8), x)


# ------------------------------------------------------------------------------------------------------- embedding
def _relax_module(spec, prim):
    """main(x, w, b) = relu(2 * my_conv(x * 2, w, b)), my_conv being the scheduled kernel via call_tir."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(C.data_shape(spec), "float32"))
    w = relax.Var("w", relax.TensorType(C.weight_shape(spec), "float32"))
    b = relax.Var("b", relax.TensorType(C.bias_shape(spec), "float32"))
    gv = bb.add_func(prim.with_attr("global_symbol", "my_conv"), "my_conv")
    with bb.function("main", [x, w, b]):
        with bb.dataflow():
            x2 = bb.emit(relax.op.multiply(x, relax.const(2.0, "float32")))
            y = bb.emit(relax.call_tir(gv, [x2, w, b], relax.TensorType(C.out_shape(spec), "float32")))
            z = bb.emit_output(bb.emit(relax.op.nn.relu(relax.op.add(y, y))))
        bb.emit_func_output(z)
    return bb.get()


def _lower(mod):
    seq = tvm.transform.Sequential([relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                                    relax.transform.FoldConstant(), relax.transform.FuseOps(),
                                    relax.transform.FuseTIR()])
    with TARGET:
        return seq(mod)


def test_relax_embedding_keeps_schedule():
    spec = C.Conv2dSpec(1, 16, 8, 8, 32, 3, 3, pad=(1, 1, 1, 1), has_bias=True, activation="relu")
    prim = C.make_conv2d(spec)
    mod = _lower(_relax_module(spec, prim))
    # FuseOps/FuseTIR must leave the opaque kernel alone: same function, same schedule, not fused with neighbours
    tvm.ir.assert_structural_equal(mod["my_conv"], prim.with_attr("global_symbol", "my_conv"))
    fused = [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert not any("my_conv" in n and n != "my_conv" for n in fused), fused
    vm = relax.VirtualMachine(tvm.compile(mod, TARGET), tvm.cpu())
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 16, 8, 8)).astype("float32")
    w = (rng.standard_normal((32, 16, 3, 3)) / 12).astype("float32")
    b = rng.standard_normal(32).astype("float32")
    out = vm["main"](tvm.runtime.tensor(L.pack_nchwc_np(x, 16)), tvm.runtime.tensor(C.pack_weight(spec, w)),
                     tvm.runtime.tensor(C.pack_bias(spec, b)))
    ref = np.maximum(2 * C.conv2d_reference(2 * x, w, b, pad=(1, 1, 1, 1), activation="relu"), 0)
    np.testing.assert_allclose(L.unpack_nchwc_np(out.numpy()), ref, rtol=RTOL, atol=ATOL)


def test_host_target():
    t = host_target(1)
    assert t.kind.name == "llvm"
    assert int(t.attrs["num-cores"]) == 1
    assert str(t.attrs["mcpu"])
