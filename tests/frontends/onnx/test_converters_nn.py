"""Conv, pooling, normalization, softmax and contraction converters against onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.ops import elementwise as ew
from compiler.ops import linalg, reduce

F32 = np.float32


def _x(rng, *shape):
    return rng.standard_normal(shape).astype(F32)


CONV = [
    ({}, (1, 4, 9, 9), (6, 4, 3, 3)),
    ({"strides": [2, 1], "pads": [1, 0, 2, 1], "dilations": [1, 2]}, (2, 4, 9, 10), (6, 4, 3, 3)),
    ({"group": 2, "strides": [2, 2]}, (1, 4, 8, 8), (6, 2, 3, 3)),
    ({"group": 4}, (1, 4, 7, 7), (4, 1, 3, 3)),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (1, 3, 8, 7), (5, 3, 4, 4)),
    ({"auto_pad": "SAME_LOWER", "strides": [2, 3]}, (1, 3, 8, 7), (5, 3, 4, 3)),
    ({"auto_pad": "VALID", "strides": [2, 2]}, (1, 3, 8, 7), (5, 3, 3, 2)),
    ({"pads": [1, 2]}, (2, 3, 11), (4, 3, 3)),
    ({"strides": [1, 2, 1]}, (1, 2, 5, 6, 4), (3, 2, 2, 3, 2)),
]


@pytest.mark.parametrize("attrs,xs,ws", CONV)
@pytest.mark.parametrize("bias", [False, True])
def test_conv(check_node, rng, attrs, xs, ws, bias):
    inits = {"w": _x(rng, *ws)} | ({"b": _x(rng, ws[0])} if bias else {})
    check_node("Conv", {"x": _x(rng, *xs)}, 11, inits, **attrs)


CONV_T = [
    ({}, (1, 4, 5, 5), (4, 3, 3, 3)),
    ({"strides": [2, 2], "pads": [1, 0, 1, 2], "output_padding": [1, 0]},
     (1, 4, 5, 6), (4, 3, 3, 3)),
    ({"strides": [2, 3], "dilations": [2, 1], "group": 2}, (2, 4, 4, 4), (4, 2, 3, 2)),
    ({"strides": [2, 2], "output_shape": [11, 12]}, (1, 2, 5, 5), (2, 3, 3, 3)),
    ({"strides": [2, 2], "output_shape": [10, 9]}, (1, 2, 5, 5), (2, 3, 3, 3)),
    ({"strides": [2, 2], "auto_pad": "SAME_UPPER"}, (1, 2, 5, 5), (2, 3, 4, 4)),
    ({"strides": [2, 2], "auto_pad": "SAME_LOWER"}, (1, 2, 5, 5), (2, 3, 4, 4)),
    ({"strides": [2, 2], "auto_pad": "SAME_UPPER"}, (1, 2, 5, 5), (2, 3, 3, 3)),
    ({"strides": [2, 2], "auto_pad": "SAME_LOWER"}, (1, 2, 5, 5), (2, 3, 3, 2)),
    ({"strides": [3]}, (1, 2, 7), (2, 2, 4)),
]


@pytest.mark.parametrize("attrs,xs,ws", CONV_T)
@pytest.mark.parametrize("bias", [False, True])
def test_conv_transpose(check_node, rng, attrs, xs, ws, bias):
    inits = {"w": _x(rng, *ws)} | ({"b": _x(rng, ws[1] * attrs.get("group", 1))} if bias else {})
    check_node("ConvTranspose", {"x": _x(rng, *xs)}, 11, inits, **attrs)


POOL = [
    (10, {"kernel_shape": [3, 3]}),
    (10, {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1]}),
    (10, {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    (11, {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    (11, {"kernel_shape": [2, 3], "strides": [2, 3], "auto_pad": "SAME_LOWER"}),
    (11, {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "VALID"}),
]


@pytest.mark.parametrize("opset,attrs", POOL + [(12, {"kernel_shape": [3, 3], "dilations": [2, 1]}),
                                                 (12, {"kernel_shape": [2, 2], "dilations": [2, 2],
                                                       "ceil_mode": 1, "strides": [2, 2]})])
def test_max_pool(check_node, rng, opset, attrs):
    check_node("MaxPool", {"x": _x(rng, 2, 3, 9, 8)}, opset, **attrs)


@pytest.mark.parametrize("opset,attrs", POOL)
@pytest.mark.parametrize("include_pad", [0, 1])
def test_average_pool(check_node, rng, opset, attrs, include_pad):
    check_node("AveragePool", {"x": _x(rng, 2, 3, 9, 8)}, opset, count_include_pad=include_pad,
               **attrs)


def test_average_pool_dilations_opset19(check_node, rng):
    check_node("AveragePool", {"x": _x(rng, 1, 2, 9, 9)}, 19, kernel_shape=[2, 2], dilations=[2, 2],
               pads=[1, 1, 1, 1], count_include_pad=1)


def test_pool_1d_and_3d(check_node, rng):
    check_node("MaxPool", {"x": _x(rng, 1, 2, 10)}, 12, kernel_shape=[3], strides=[2])
    check_node("AveragePool", {"x": _x(rng, 1, 2, 5, 6, 4)}, 11, kernel_shape=[2, 2, 2])


@pytest.mark.parametrize("op_type,ir_op", [("GlobalAveragePool", reduce.reduce_mean),
                                           ("GlobalMaxPool", reduce.reduce_max)])
def test_global_pool(check_node, rng, op_type, ir_op):
    g = check_node(op_type, {"x": _x(rng, 2, 3, 5, 4)}, 9)
    assert g.nodes[0].op is ir_op and g.nodes[0].attrs["axes"] == (2, 3)


@pytest.mark.parametrize("opset", [9, 15])
def test_batch_norm(check_node, rng, opset):
    c = 4
    inits = {"s": _x(rng, c), "b": _x(rng, c), "m": _x(rng, c),
             "v": rng.uniform(0.5, 2, c).astype(F32)}
    check_node("BatchNormalization", {"x": _x(rng, 2, c, 3, 5)}, opset, inits, epsilon=1e-3)


def test_instance_norm(check_node, rng):
    check_node("InstanceNormalization", {"x": _x(rng, 2, 3, 4, 5)}, 9,
               {"s": _x(rng, 3), "b": _x(rng, 3)}, epsilon=1e-4)


@pytest.mark.parametrize("axis,bias", [(-1, True), (1, True), (2, False)])
def test_layer_norm(check_node, rng, axis, bias):
    pshape = (2, 3, 5)[axis % 3:] if axis != -1 else (5,)
    inits = {"s": _x(rng, *pshape)} | ({"b": _x(rng, *pshape)} if bias else {})
    check_node("LayerNormalization", {"x": _x(rng, 2, 3, 5)}, 17, inits, axis=axis, epsilon=1e-4,
               rtol=1e-4)


@pytest.mark.parametrize("size", [3, 5])
def test_lrn(check_node, rng, size):
    check_node("LRN", {"x": _x(rng, 2, 6, 3, 3)}, 13, size=size, alpha=0.01, beta=0.6, bias=2.0)


@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset,axis", [(11, None), (11, 0), (11, 2), (11, -1), (13, None), (13, 1),
                                        (13, -3)])
def test_softmax_opset_semantics(check_node, rng, op_type, opset, axis):
    attrs = {} if axis is None else {"axis": axis}
    check_node(op_type, {"x": _x(rng, 2, 3, 4)}, opset, **attrs)


GEMM = [
    ({}, (3, 4), (4, 5), (5,)),
    ({"transA": 1}, (4, 3), (4, 5), (3, 5)),
    ({"transB": 1, "alpha": 0.5, "beta": 2.0}, (3, 4), (5, 4), (1, 5)),
    ({"transA": 1, "transB": 1, "alpha": 1.5}, (4, 3), (5, 4), None),
    ({"beta": 0.25}, (3, 4), (4, 5), (3, 1)),
]


@pytest.mark.parametrize("attrs,a,b,c", GEMM)
@pytest.mark.parametrize("const_b", [False, True])
def test_gemm(check_node, rng, attrs, a, b, c, const_b):
    feeds, inits = {"a": _x(rng, *a)}, {}
    (inits if const_b else feeds)["b"] = _x(rng, *b)
    if c is not None:
        inits["c"] = _x(rng, *c)
    g = check_node("Gemm", feeds, 13, inits, input_names=["a", "b"] + (["c"] if c else []), **attrs)
    assert g.nodes[-2 if c is not None else -1].op in (linalg.matmul, ew.mul)


def test_gemm_folds_transposed_constant_weight(check_node, rng):
    inits = {"b": _x(rng, 5, 4), "c": _x(rng, 5)}
    g = check_node("Gemm", {"a": _x(rng, 3, 4)}, 13, inits, transB=1)
    assert [n.op for n in g.nodes] == [linalg.matmul, ew.add]


@pytest.mark.parametrize("a,b", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (3, 4, 2)),
                                 ((4,), (4, 5)), ((2, 3, 4), (4,))])
def test_matmul(check_node, rng, a, b):
    check_node("MatMul", {"a": _x(rng, *a), "b": _x(rng, *b)}, 13)


@pytest.mark.parametrize("eq,shapes", [("bij, bjk -> bik", [(2, 3, 4), (2, 4, 5)]),
                                       ("ij->ji", [(3, 4)]), ("i,i", [(5,), (5,)]),
                                       ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 2)]),
                                       ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)])])
def test_einsum(check_node, rng, eq, shapes):
    feeds = {f"x{i}": _x(rng, *s) for i, s in enumerate(shapes)}
    g = check_node("Einsum", feeds, 12, equation=eq)
    assert " " not in g.nodes[0].attrs["equation"]
