"""Shape and data-movement converters against onnxruntime, including the opset variants of
Split, Slice, Squeeze/Unsqueeze, and the ops that always fold (Shape, Size, Range, ...)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from compiler.ops import shape

F32 = np.float32
I64 = np.int64


def _x(rng, *shape):
    return rng.standard_normal(shape).astype(F32)


@pytest.mark.parametrize("target,allowzero", [([4, -1], 0), ([0, 3, -1], 0), ([-1], 0),
                                              ([2, 0, 4], 0), ([2, 3, 2, 2], 1)])
def test_reshape(check_node, rng, target, allowzero):
    g = check_node("Reshape", {"x": _x(rng, 2, 3, 4)}, 14, {"s": np.array(target, I64)},
                   allowzero=allowzero)
    assert g.nodes[0].op is shape.reshape and -1 not in g.nodes[0].attrs["shape"]


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_flatten(check_node, rng, axis):
    g = check_node("Flatten", {"x": _x(rng, 2, 3, 4)}, 13, axis=axis)
    assert g.nodes[0].op is shape.reshape


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [None, [1], [-1, 1]])
def test_squeeze(check_node, rng, opset, axes):
    feeds = {"x": _x(rng, 2, 1, 3, 1)}
    if axes is None:
        check_node("Squeeze", feeds, opset)
    elif opset >= 13:
        check_node("Squeeze", feeds, opset, {"axes": np.array(axes, I64)})
    else:
        check_node("Squeeze", feeds, opset, axes=axes)


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [[0], [1, -1], [0, 3, 2]])
def test_unsqueeze(check_node, rng, opset, axes):
    feeds = {"x": _x(rng, 2, 3)}
    if opset >= 13:
        g = check_node("Unsqueeze", feeds, opset, {"axes": np.array(axes, I64)})
    else:
        g = check_node("Unsqueeze", feeds, opset, axes=axes)
    assert g.nodes[0].op is shape.reshape


@pytest.mark.parametrize("perm", [None, [0, 2, 1], [2, 0, 1]])
def test_transpose(check_node, rng, perm):
    check_node("Transpose", {"x": _x(rng, 2, 3, 4)}, 13, **({} if perm is None else {"perm": perm}))


@pytest.mark.parametrize("axis", [1, -1, 0])
def test_concat(check_node, rng, axis):
    shapes = {1: [(2, 3, 4), (2, 1, 4), (2, 2, 4)], -1: [(2, 3, 1), (2, 3, 4)], 0: [(1, 3), (2, 3)]}
    feeds = {f"x{i}": _x(rng, *s) for i, s in enumerate(shapes[axis])}
    check_node("Concat", feeds, 13, axis=axis)


@pytest.mark.parametrize("opset,split,outputs", [(11, None, 3), (11, [1, 4, 1], 3), (13, [2, 4], 2),
                                                 (13, None, 2), (18, [3, 3], 2)])
def test_split(check_node, rng, opset, split, outputs):
    feeds = {"x": _x(rng, 2, 6, 3)}
    if split is None:
        check_node("Split", feeds, opset, n_outputs=outputs, axis=1)
    elif opset >= 13:
        check_node("Split", feeds, opset, {"s": np.array(split, I64)}, n_outputs=outputs, axis=1)
    else:
        check_node("Split", feeds, opset, n_outputs=outputs, axis=1, split=split)


def test_split_num_outputs_opset18_uneven(check_node, rng):
    g = check_node("Split", {"x": _x(rng, 7, 2)}, 18, n_outputs=3, num_outputs=3)
    assert [n.outputs[0].type.shape[0] for n in g.nodes] == [3, 3, 1]


SLICES = [
    ([1], [3], [1], None),
    ([0, 1], [2, -1], [0, 2], [1, 2]),
    ([-1], [-(2 ** 63)], [2], [-1]),              # full reverse: needs a gather
    ([3, 100], [0, -100], [1, 2], [-2, -3]),
    ([2 ** 62], [2 ** 63 - 1], [0], None),        # empty
    ([-3], [2 ** 63 - 1], [-1], [1]),
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES)
def test_slice_inputs(check_node, rng, starts, ends, axes, steps):
    inits = {"st": np.array(starts, I64), "en": np.array(ends, I64), "ax": np.array(axes, I64)}
    if steps is not None:
        inits["sp"] = np.array(steps, I64)
    check_node("Slice", {"x": _x(rng, 4, 5, 6)}, 13, inits)


def test_slice_opset9_attributes(check_node, rng):
    check_node("Slice", {"x": _x(rng, 4, 5)}, 9, starts=[1, -3], ends=[1000, -1])
    check_node("Slice", {"x": _x(rng, 4, 5)}, 9, starts=[1], ends=[3], axes=[1])


@pytest.mark.parametrize("axis,indices", [(0, [2, 0, -1]), (1, [[0, 1], [3, 3]]), (-1, 2)])
def test_gather(check_node, rng, axis, indices):
    check_node("Gather", {"x": _x(rng, 3, 4, 5)}, 13, {"i": np.array(indices, I64)}, axis=axis)


def test_gather_runtime_indices(check_node, rng):
    check_node("Gather", {"x": _x(rng, 5, 3), "i": np.array([[4, 0], [1, 1]], np.int32)}, 13)


@pytest.mark.parametrize("xs,target",
                         [((3, 1), [2, 3, 4]), ((1, 4), [3, 1]), ((2, 1, 1), [1, 1, 5])])
def test_expand_is_bidirectional(check_node, rng, xs, target):
    check_node("Expand", {"x": _x(rng, *xs)}, 13, {"s": np.array(target, I64)})


def test_tile(check_node, rng):
    check_node("Tile", {"x": _x(rng, 2, 3)}, 13, {"r": np.array([2, 3], I64)})


def test_shape_size_range_fold_to_constants(make_model, check, rng):
    """Shape -> Gather -> Div -> Range -> Reshape folds; only a reshape and the add remain."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Size", ["x"], ["n"]),
             helper.make_node("Gather", ["s", "zero"], ["d0"], axis=0),
             helper.make_node("Div", ["d0", "two"], ["step"]),
             helper.make_node("Range", ["zero", "n", "step"], ["r"]),
             helper.make_node("Shape", ["x"], ["tail"], start=-2),
             helper.make_node("Reshape", ["x", "tail_n"], ["y0"]),
             helper.make_node("Concat", ["m1", "tail"], ["tail_n"], axis=0),
             helper.make_node("Cast", ["r"], ["rf"], to=1),
             helper.make_node("Reshape", ["rf", "s"], ["rs"]),
             helper.make_node("Add", ["x", "rs"], ["y"])]
    nodes = nodes[:6] + [nodes[7], nodes[6]] + nodes[8:]
    inits = {"two": np.array(2, I64), "zero": np.array(0, I64), "m1": np.array([-1], I64)}
    model = make_model(nodes, {"x": _x(rng, 2, 3, 4)}, ["y", "s", "y0"], 15, inits)
    g = check(model, {"x": _x(rng, 2, 3, 4)})
    assert sorted(n.op.name for n in g.nodes) == ["nn.add", "nn.reshape"]
    assert g.outputs[1].is_const


def test_constant_forms(make_model, check, rng):
    tensor = numpy_helper.from_array(np.arange(4, dtype=F32).reshape(1, 4), "t")
    nodes = [helper.make_node("Constant", [], ["a"], value=tensor),
             helper.make_node("Constant", [], ["b"], value_float=2.5),
             helper.make_node("Constant", [], ["c"], value_floats=[1.0, 2.0, 3.0, 4.0]),
             helper.make_node("Constant", [], ["d"], value_ints=[3, 4]),
             helper.make_node("Mul", ["x", "a"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["p"]),
             helper.make_node("Sub", ["p", "c"], ["q"]),
             helper.make_node("Tile", ["q", "dd"], ["y"]),
             helper.make_node("Constant", [], ["e"], value_int=1),
             helper.make_node("Div", ["d", "e"], ["dd"])]
    nodes = nodes[:4] + nodes[8:] + nodes[4:8]
    check(make_model(nodes, {"x": _x(rng, 3, 4)}, ["y"], 13), {"x": _x(rng, 3, 4)})


@pytest.mark.parametrize("value", [None, np.array([7], np.int32), np.array([1.5], F32)])
def test_constant_of_shape(make_model, check, rng, value):
    attrs = {} if value is None else {"value": numpy_helper.from_array(value)}
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ConstantOfShape", ["s"], ["c"], **attrs),
             helper.make_node("Identity", ["c"], ["y"])]
    check(make_model(nodes, {"x": _x(rng, 2, 3)}, ["y"], 13), {"x": _x(rng, 2, 3)})


@pytest.mark.parametrize("args", [(0, 10, 3), (10, -2, -4), (1.5, 4.0, 0.5), (5, 5, 1)])
def test_range(make_model, check, rng, args):
    dtype = F32 if isinstance(args[0], float) else I64
    inits = {n: np.array(v, dtype) for n, v in zip(("a", "b", "c"), args)}
    nodes = [helper.make_node("Range", ["a", "b", "c"], ["r"]),
             helper.make_node("Identity", ["r"], ["y"])]
    check(make_model(nodes, {"x": _x(rng, 1)}, ["y"], 11, inits), {"x": _x(rng, 1)})
