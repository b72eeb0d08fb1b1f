"""canonicalize passes: what each rewrites, and that the meaning is kept (interp is the oracle)."""
from __future__ import annotations

import io

import numpy as np
import pytest

from compiler import interp
from compiler.diagnostics import Unsupported
from compiler.ir import Graph
from compiler.ops import elementwise as ew, linalg, nn, shape
from compiler.types import DType, TensorType
from passes import PassContext, run_pipeline
from passes.base import resolve
from passes.canonicalize import dead_code, fold_batch_norm, fold_constants, remove_identity

F32 = DType.F32


def _same_meaning(before: Graph, after: Graph, *inputs, rtol=1e-5):
    for a, b in zip(interp.run(before, *inputs), interp.run(after, *inputs)):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=1e-5)


def _bn_params(g, c, rng):
    return [g.const(rng.uniform(0.5, 2, c).astype(np.float32), "scale"),
            g.const(rng.standard_normal(c).astype(np.float32), "bias"),
            g.const(rng.standard_normal(c).astype(np.float32), "mean"),
            g.const(rng.uniform(0.5, 2, c).astype(np.float32), "var")]


def test_fold_constants_folds_shape_chain(rng):
    g = Graph()
    x = g.add_input("x", TensorType((2, 6), F32))
    c = g.const(np.arange(6, dtype=np.float32).reshape(2, 3), "c")
    c2 = g.add1(shape.transpose, [c], perm=(1, 0))            # constant subgraph
    c3 = g.add1(shape.reshape, [c2], shape=(1, 6))
    y = g.add1(ew.add, [x, c3])
    g.outputs = [y]
    after = fold_constants(g)
    assert [n.op for n in after.nodes] == [ew.add]
    assert after.nodes[0].inputs[1].is_const
    assert [n.op for n in g.nodes] == [shape.transpose, shape.reshape, ew.add]   # input untouched
    _same_meaning(g, after, rng.standard_normal((2, 6)).astype(np.float32))


def test_remove_identity_and_noop_reshape(rng):
    g = Graph()
    x = g.add_input("x", TensorType((2, 3), F32))
    y = g.add1(ew.identity, [x])
    y = g.add1(shape.reshape, [y], shape=(2, 3))
    y = g.add1(shape.transpose, [y], perm=(0, 1))
    y = g.add1(ew.relu, [y])
    y = g.add1(shape.reshape, [y], shape=(3, 2))               # a real reshape stays
    g.outputs = [y]
    after = remove_identity(g)
    assert [n.op for n in after.nodes] == [ew.relu, shape.reshape]
    _same_meaning(g, after, rng.standard_normal((2, 3)).astype(np.float32))


def test_dead_code_drops_unused_nodes():
    g = Graph()
    x = g.add_input("x", TensorType((4,), F32))
    g.add1(ew.exp, [x])                                          # unused
    y = g.add1(ew.relu, [x])
    g.outputs = [y]
    assert [n.op for n in dead_code(g).nodes] == [ew.relu]


@pytest.mark.parametrize("with_bias", [False, True])
def test_fold_batch_norm_into_conv(rng, with_bias):
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 6, 6), F32))
    ins = [x, g.const(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")]
    if with_bias:
        ins.append(g.const(rng.standard_normal(4).astype(np.float32), "b"))
    y = g.add1(linalg.conv, ins, strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))
    y = g.add1(nn.batch_norm, [y, *_bn_params(g, 4, rng)], epsilon=1e-3)
    g.outputs = [g.add1(ew.relu, [y])]
    after = fold_batch_norm(g)
    assert [n.op for n in after.nodes] == [linalg.conv, ew.relu]
    assert len(after.nodes[0].inputs) == 3
    _same_meaning(g, after, rng.standard_normal((1, 3, 6, 6)).astype(np.float32), rtol=1e-4)


def test_fold_batch_norm_into_matmul_bias(rng):
    g = Graph()
    x = g.add_input("x", TensorType((5, 8), F32))
    y = g.add1(linalg.matmul, [x, g.const(rng.standard_normal((8, 4)).astype(np.float32), "w")])
    y = g.add1(ew.add, [y, g.const(rng.standard_normal(4).astype(np.float32), "b")])
    g.outputs = [g.add1(nn.batch_norm, [y, *_bn_params(g, 4, rng)])]
    after = fold_batch_norm(g)
    assert [n.op for n in after.nodes] == [linalg.matmul, ew.add]
    _same_meaning(g, after, rng.standard_normal((5, 8)).astype(np.float32), rtol=1e-4)


def test_fold_batch_norm_standalone_becomes_affine(rng):
    g = Graph()
    x = g.add_input("x", TensorType((2, 4, 3, 3), F32))
    g.outputs = [g.add1(nn.batch_norm, [x, *_bn_params(g, 4, rng)])]
    after = fold_batch_norm(g)
    assert [n.op for n in after.nodes] == [ew.mul, ew.add]
    _same_meaning(g, after, rng.standard_normal((2, 4, 3, 3)).astype(np.float32))


def test_fold_batch_norm_keeps_shared_conv_output(rng):
    """The conv result also feeds another node, so its weights must not change."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 2, 4, 4), F32))
    c = g.add1(linalg.conv, [x, g.const(rng.standard_normal((2, 2, 1, 1)).astype(np.float32))],
               strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1))
    b = g.add1(nn.batch_norm, [c, *_bn_params(g, 2, rng)])
    g.outputs = [g.add1(ew.add, [b, c])]
    after = fold_batch_norm(g)
    assert [n.op for n in after.nodes] == [linalg.conv, ew.mul, ew.add, ew.add]
    _same_meaning(g, after, rng.standard_normal((1, 2, 4, 4)).astype(np.float32))


def test_pipeline_prints_after_and_verifies(rng):
    g = Graph()
    x = g.add_input("x", TensorType((3,), F32))
    g.outputs = [g.add1(ew.relu, [g.add1(ew.identity, [x])])]
    out = io.StringIO()
    ctx = PassContext(print_after=frozenset({"remove_identity"}), out=out)
    after = run_pipeline(g, ["fold_constants", "remove_identity"], ctx)
    assert "IR after remove_identity" in out.getvalue() and '"nn.identity"' not in out.getvalue()
    assert [name for name, _ in ctx.timings] == ["fold_constants", "remove_identity"]
    assert [n.op for n in after.nodes] == [ew.relu]


def test_resolve_edits_pipeline_and_rejects_unknown():
    base = ["fold_constants", "remove_identity", "dead_code"]
    assert resolve(base, disable=["remove_identity"]) == ["fold_constants", "dead_code"]
    assert resolve(base, passes=["dead_code"]) == ["dead_code"]
    with pytest.raises(Unsupported, match="unknown pass 'nope'"):
        resolve(base, disable=["nope"])


def test_crashing_pass_is_reported_with_a_reproducer(monkeypatch):
    from passes.base import PASSES, Pass, PassFailed

    def boom(g):
        raise ZeroDivisionError("oops")

    monkeypatch.setitem(PASSES, "boom", Pass("boom", boom, "crashes"))
    g = Graph()
    x = g.add_input("x", TensorType((2,), F32))
    g.outputs = [g.add1(ew.relu, [x])]
    with pytest.raises(PassFailed, match="pass 'boom' crashed: ZeroDivisionError: oops") as e:
        run_pipeline(g, ["boom"])
    repro = e.value.hint.split("saved in ")[1].split(";")[0]
    with open(repro) as f:
        assert '"nn.relu"' in f.read()
