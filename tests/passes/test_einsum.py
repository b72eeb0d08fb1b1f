"""fuse_attention and the einsum-cascade analysis: the attention chain becomes one k.fused attention node
with the interpreter giving the same result, and the pass counts over the keys are 3 as written, 2 with
deferred normalization, 1 with the running max (buffers: the S x S scores vs one block)."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import interp
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import kernel, linalg, nn, shape
from compiler.types import DType, TensorType
from passes.einsum import (
    ONE_PASS,
    THREE_PASS,
    TWO_PASS,
    buffer_elements,
    cascades,
    find_chains,
    fuse_attention,
    online_attention,
    passes_over,
)
from tests.conftest import requires_torch

F32 = DType.F32


def _attention_graph(b=2, h=3, lq=16, lk=24, d=8, mask=True, scores_out=False) -> Graph:
    g = Graph("attention")
    q = g.add_input("q", TensorType((b, h, lq, d), F32))
    k = g.add_input("k", TensorType((b, h, lk, d), F32))
    v = g.add_input("v", TensorType((b, h, lk, d), F32))
    s = g.add1(linalg.matmul, [q, g.add1(shape.transpose, [k], perm=(0, 1, 3, 2))])
    s = g.add1(ew.div, [s, g.const(np.float32(np.sqrt(d)), "sqrt_d")])
    if mask:
        s = g.add1(ew.add, [s, g.add_input("mask", TensorType((b, 1, lq, lk), F32))])
    p = g.add1(nn.softmax, [s], axis=-1)
    g.outputs = [g.add1(linalg.matmul, [p, v])] + ([p] if scores_out else [])
    return g


def _inputs(g: Graph):
    rng = np.random.default_rng(0)
    ins = [rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]
    if len(ins) == 4:          # a padding mask: the last keys of the second batch masked out
        ins[3] = np.zeros_like(ins[3])
        ins[3][1, ..., -5:] = -1e9
    return ins


def _close(got, want, rtol=1e-5):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * float(np.abs(want).max()))


@pytest.mark.parametrize("mask", [False, True])
def test_fuse_attention_makes_one_kernel_and_keeps_meaning(mask):
    g = _attention_graph(mask=mask)
    after = fuse_attention(g)
    assert [n.op for n in after.nodes] == [kernel.fused]
    node = after.nodes[0]
    assert node.attrs["kernel"] == "attention" and node.attrs["tile"] == (16, 24)
    assert [op.name for op in (m.op for m in node.attrs["body"].nodes)] == \
        ["nn.transpose", "nn.matmul", "nn.div"] + (["nn.add"] if mask else []) + ["nn.softmax", "nn.matmul"]
    ins = _inputs(g)
    _close(interp.run(after, *ins)[0], interp.run(g, *ins)[0])


def test_fuse_attention_leaves_scores_read_elsewhere():
    g = _attention_graph(scores_out=True)
    assert find_chains(g) == []
    assert not any(n.op is kernel.fused for n in fuse_attention(g).nodes)


def test_pass_counts_of_the_three_cascades():
    assert [passes_over(c, "m") for c in (THREE_PASS, TWO_PASS)] == [3, 2]
    assert passes_over(ONE_PASS, "m1") == 1          # one walk over the key blocks
    assert passes_over(ONE_PASS, "m0") == 2          # max, then exp, inside each block
    sizes = {"p": 512, "m": 512, "e": 64, "f": 64, "p0": 32, "m0": 64, "m1": 8}
    assert buffer_elements(THREE_PASS, "m", sizes) == 512 * 512
    assert buffer_elements(TWO_PASS, "m", sizes) == 512 * 512
    assert buffer_elements(ONE_PASS, "m1", sizes) == 0
    assert buffer_elements(ONE_PASS, "m0", sizes) == 32 * 64


def test_pass_counts_before_and_after_fuse_attention():
    g = _attention_graph(lq=64, lk=128)
    (_, before, sb), = cascades(g)
    (_, after, sa), = cascades(fuse_attention(g))
    assert (before, passes_over(before, "m"), buffer_elements(before, "m", sb)) == (THREE_PASS, 3, 64 * 128)
    assert (after, passes_over(after, "m1"), buffer_elements(after, "m0", sa)) == (ONE_PASS, 1, 32 * 64)


@pytest.mark.parametrize("block", [1, 5, 8, 24])
def test_online_attention_equals_the_interpreter(block):
    g = _attention_graph()
    q, k, v, m = _inputs(g)
    _close(online_attention(q, k, v, 1 / np.sqrt(8), m, block), interp.run(g, q, k, v, m)[0])


@requires_torch
def test_fuse_attention_on_the_bert_encoder_export(tmp_path):
    import torch

    import compiler
    from examples.zoo import BertEncoder, export_onnx
    torch.manual_seed(0)
    model, x = BertEncoder(vocab=100, hidden=64, heads=4, ffn=128, layers=2, seq=16).eval(), \
        torch.randint(0, 100, (1, 16))
    g = compiler.optimize(compiler.import_model(export_onnx(model, x, tmp_path / "bert.onnx")))
    after = fuse_attention(g)
    fused = [n for n in after.nodes if n.op is kernel.fused]
    assert len(fused) == 2 and all(n.attrs["kernel"] == "attention" for n in fused)
    assert not any(n.op is nn.softmax for n in after.nodes)
    _close(interp.run(after, x.numpy())[0], interp.run(g, x.numpy())[0])
