"""LpPool, MaxPool's Indices output, MaxUnpool, Col2Im and DeformConv (compositions of IR ops) against
onnxruntime (MaxUnpool with an output_shape against onnx.reference, whose zero-padding at the end the
conformance cases expect)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from compiler import interp
from compiler.ops import linalg
from frontends.onnx import load_onnx
from tests.conftest import requires_tvm

F32 = np.float32


def _x(rng, *shape):
    return rng.standard_normal(shape).astype(F32)


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "p": 3, "pads": [1, 2, 2, 1]},
    {"kernel_shape": [2, 3], "p": 2, "strides": [2, 1], "dilations": [2, 1]},
    {"kernel_shape": [2, 2], "p": 1, "auto_pad": "SAME_UPPER"},
    {"kernel_shape": [3, 2], "p": 4, "auto_pad": "SAME_LOWER", "strides": [2, 2]},
    {"kernel_shape": [3, 3], "p": 2, "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
], ids=lambda a: str(a))
def test_lp_pool(check_node, rng, attrs):
    check_node("LpPool", {"x": _x(rng, 2, 3, 7, 8)}, 18, rtol=1e-4, **attrs)


def test_lp_pool_1d_and_3d(check_node, rng):
    check_node("LpPool", {"x": _x(rng, 1, 2, 9)}, 11, kernel_shape=[3], strides=[2])
    check_node("LpPool", {"x": _x(rng, 1, 2, 4, 5, 3)}, 18, kernel_shape=[2, 2, 2], p=3, rtol=1e-4)


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]},
    {"kernel_shape": [2, 3], "storage_order": 1, "strides": [1, 2]},
    {"kernel_shape": [3, 3], "pads": [1, 2, 0, 1], "storage_order": 1, "dilations": [2, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
], ids=lambda a: str(a))
def test_max_pool_indices(check_node, rng, attrs):
    x = rng.integers(0, 6, (2, 3, 7, 8)).astype(F32)        # ties: the first maximum wins
    check_node("MaxPool", {"x": x}, 12, n_outputs=2, **attrs)


def test_max_pool_indices_1d_3d_and_int(check_node, rng):
    check_node("MaxPool", {"x": _x(rng, 2, 2, 9)}, 12, n_outputs=2, kernel_shape=[3], pads=[1, 1])
    check_node("MaxPool", {"x": _x(rng, 1, 2, 4, 5, 3)}, 12, n_outputs=2, kernel_shape=[2, 2, 2])
    x = rng.integers(-100, 100, (1, 2, 5, 5)).astype(np.int8)
    check_node("MaxPool", {"x": x}, 12, n_outputs=2, kernel_shape=[2, 2], pads=[1, 1, 0, 0])


def test_max_unpool_inverts_max_pool(make_model, check, rng):
    pool = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], strides=[2, 2])
    unpool = helper.make_node("MaxUnpool", ["y", "i"], ["z"], kernel_shape=[2, 2], strides=[2, 2])
    x = _x(rng, 2, 3, 6, 4)
    check(make_model([pool, unpool], {"x": x}, ["z"], 11), {"x": x})


def test_max_unpool_with_output_shape_pads_the_end(make_model, rng):
    feeds = {"x": _x(rng, 1, 2, 2, 3),
             "i": np.array([[[[0, 3, 5], [10, 12, 15]], [[17, 18, 21], [24, 29, 31]]]])}
    node = helper.make_node("MaxUnpool", ["x", "i", "shape"], ["z"], kernel_shape=[2, 2], strides=[2, 2])
    model = make_model([node], feeds, ["z"], 11, {"shape": np.array([1, 2, 5, 7], np.int64)})
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2, 5, 7]))
    want = ReferenceEvaluator(model).run(None, feeds)[0]
    got = interp.run(load_onnx(model), **feeds)[0]
    assert got.shape == (1, 2, 5, 7)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("attrs,image,block,length", [
    ({}, [5, 5], [2, 3], 12),
    ({"strides": [2, 1], "pads": [1, 0, 1, 2]}, [6, 5], [3, 2], 18),
    ({"dilations": [1, 2], "strides": [1, 2]}, [5, 7], [2, 2], 12),
])
def test_col2im(check_node, rng, attrs, image, block, length):
    x = _x(rng, 2, 3 * int(np.prod(block)), length)
    g = check_node("Col2Im", {"x": x}, 18, {"image": np.array(image), "block": np.array(block)}, **attrs)
    assert [n.op for n in g.nodes][-1] is linalg.conv_transpose


def test_col2im_5d(check_node, rng):
    x = _x(rng, 1, 2 * 4, 3 * 2 * 5)
    check_node("Col2Im", {"x": x}, 18, {"image": np.array([4, 3, 5]), "block": np.array([2, 2, 1])})


@pytest.mark.slow
@requires_tvm
def test_pool_compositions_compile_with_tvm(make_model, rng):
    """MaxPool's Indices into MaxUnpool, LpPool and Col2Im through TVM against onnx.reference."""
    import compiler
    x, cols = _x(rng, 1, 2, 6, 6), _x(rng, 1, 2 * 4, 16)
    nodes = [helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("MaxUnpool", ["y", "i"], ["u"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("LpPool", ["x"], ["lp"], kernel_shape=[2, 2], p=3),
             helper.make_node("Col2Im", ["c", "image", "block"], ["im"])]
    inits = {"image": np.array([5, 5]), "block": np.array([2, 2])}
    model = make_model(nodes, {"x": x, "c": cols}, ["i", "u", "lp", "im"], 18, inits)
    want = ReferenceEvaluator(model).run(None, {"x": x, "c": cols})
    for got, ref in zip(compiler.compile(model, target="llvm").run(x, cols), want):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("attrs,w_shape,out", [
    ({"kernel_shape": [3, 2], "pads": [1, 0, 0, 1]}, (5, 4, 3, 2), (5, 5)),
    ({"kernel_shape": [2, 2], "group": 2, "offset_group": 2, "strides": [2, 1], "dilations": [1, 2]},
     (6, 2, 2, 2), (3, 3)),
], ids=["mask_bias", "groups"])
def test_deform_conv(check_node, rng, attrs, w_shape, out):
    """Offsets of a few pixels (taps land between pixels and outside X), with and without mask and bias."""
    x, w = _x(rng, 2, 4, 6, 5), _x(rng, *w_shape)
    og, taps = attrs.get("offset_group", 1), w_shape[2] * w_shape[3]
    offset = (rng.standard_normal((2, og * taps * 2, *out)) * 2).astype(F32)
    feeds = {"x": x, "w": w, "o": offset}
    if "group" not in attrs:
        feeds.update(b=_x(rng, w_shape[0]), m=rng.uniform(0, 1, (2, og * taps, *out)).astype(F32))
    check_node("DeformConv", feeds, 19, rtol=1e-4, atol=1e-5, **attrs)
