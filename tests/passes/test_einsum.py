"""fuse_attention and the einsum-cascade analysis: the attention chain becomes one k.fused attention node
with the interpreter giving the same result, and the pass counts over the keys are 3 as written, 2 with
deferred normalization, 1 with the running max (buffers: the S x S scores vs one block). Causal
constant masks (-inf, finfo.min, -1e9; top-left and bottom-right aligned) are recognized and computed in
the body as trilu(expand(c)); K / V heads repeated as repeat_interleave exports them are read unrepeated;
the split scale and NaN guard of torch's sdpa export join the chain."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import interp
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import indexing, kernel, linalg, nn, shape
from compiler.ops import unary_math as um
from compiler.types import DType, TensorType
from passes.einsum import (
    ONE_PASS,
    THREE_PASS,
    TWO_PASS,
    body_causal,
    buffer_elements,
    cascades,
    causal_offset,
    find_chains,
    fuse_attention,
    online_attention,
    passes_over,
    repeat_group,
    report,
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
    if isinstance(mask, np.ndarray):
        s = g.add1(ew.add, [s, g.const(mask, "causal_mask")])
    elif mask:
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
    assert node.attrs["kernel"] == "attention" and node.attrs["tile"] == ()      # choose_tiles fills it
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


# -- causal masks, grouped-query heads, the exported forms -----------------------------------------------

MIN = np.finfo(np.float32).min


def _causal_graph(fill, rank=4, lq=16, lk=16, offset=0, h=2) -> Graph:
    mask = np.triu(np.full((lq, lk), fill, np.float32), offset + 1).reshape((1,) * (rank - 2) + (lq, lk))
    return _attention_graph(b=1, h=h, lq=lq, lk=lk, mask=mask)


@pytest.mark.parametrize("fill,rank,lq,offset", [(-np.inf, 4, 16, 0), (MIN, 4, 16, 0), (-1e9, 2, 16, 0),
                                                 (MIN, 4, 8, 16)])
def test_fuse_attention_recognizes_causal_masks(fill, rank, lq, offset):
    g = _causal_graph(fill, rank, lq=lq, lk=24, offset=offset)
    (ch,) = find_chains(g)
    assert ch.causal == offset
    after = fuse_attention(g)
    (node,) = after.nodes
    assert len(node.inputs) == 3 and body_causal(node.attrs["body"]) == offset   # no mask operand
    ops = [n.op for n in node.attrs["body"].nodes]
    assert ops[:2] == [shape.expand, indexing.trilu]       # the mask, computed: the same values
    q, k, v = _inputs(g)
    np.testing.assert_array_equal(interp.run(after, q, k, v)[0], interp.run(g, q, k, v)[0])


@pytest.mark.parametrize("mask", [
    np.triu(np.full((16, 24), -1e4, np.float32), 1),        # not far enough below: exp does not vanish
    np.triu(np.full((16, 24), MIN, np.float32), 0),          # the first query sees no key
    np.tril(np.full((16, 24), MIN, np.float32), -1),         # the other triangle
    np.triu(np.full((16, 24), MIN, np.float32), 1) + np.eye(16, 24, dtype=np.float32),
])
def test_causal_offset_refuses_other_masks(mask):
    assert causal_offset(mask) is None
    assert causal_offset(np.stack([np.triu(np.full((4, 4), MIN, np.float32), 1),
                                   np.triu(np.full((4, 4), MIN, np.float32), 2)])) is None


def _gqa_graph(h=8, kv=2, lq=16, lk=16, d=8, split_scale=False, nan_guard=False) -> Graph:
    """K, V repeated from kv to h heads as transformers' repeat_kv exports (reshape, expand, reshape);
    with `split_scale` the scale split over q and k^T and the NaN guard after the softmax, as torch's
    ONNX export of scaled_dot_product_attention writes them."""
    g = Graph("gqa")
    q = g.add_input("q", TensorType((1, h, lq, d), F32))
    k, v = (g.add_input(n, TensorType((1, kv, lk, d), F32)) for n in "kv")
    k, v = (g.add1(shape.reshape, [g.add1(shape.expand, [g.add1(shape.reshape, [x], shape=(1, kv, 1, lk, d))],
                                          shape=(1, kv, h // kv, lk, d))], shape=(1, h, lk, d)) for x in (k, v))
    kt = g.add1(shape.transpose, [k], perm=(0, 1, 3, 2))
    if split_scale:
        half = g.const(np.float32(d ** -0.25), "half")
        s = g.add1(linalg.matmul, [g.add1(ew.mul, [q, half]), g.add1(ew.mul, [kt, half])])
    else:
        s = g.add1(ew.div, [g.add1(linalg.matmul, [q, kt]), g.const(np.float32(np.sqrt(d)), "sqrt_d")])
    p = g.add1(nn.softmax, [s], axis=-1)
    if nan_guard:
        p = g.add1(ew.where, [g.add1(um.isnan, [p]), g.const(np.zeros(1, np.float32), "zero"), p])
    g.outputs = [g.add1(linalg.matmul, [p, v])]
    return g


@pytest.mark.parametrize("h,kv,split", [(8, 2, False), (4, 1, False), (6, 3, True)])
def test_fuse_attention_reads_shared_kv_heads(h, kv, split):
    g = _gqa_graph(h, kv, split_scale=split, nan_guard=split)
    (ch,) = find_chains(g)
    assert (ch.k_group, ch.v_group, ch.nan_guard) == (h // kv, h // kv, split)
    assert ch.scale == pytest.approx(1 / np.sqrt(8))
    after = fuse_attention(g)
    (node,) = after.nodes
    assert [x.type.shape[1] for x in node.inputs] == [h, kv, kv]      # the kernel reads K, V unrepeated
    ins = _inputs(g)
    _close(interp.run(after, *ins)[0], interp.run(g, *ins)[0])
    text = report(g)
    assert f"each K head serves {h // kv} query heads" in text and "read in place, not repeated" in text


def test_fuse_attention_leaves_a_repeat_read_elsewhere():
    """A repeated K that another op also reads stays outside: the chain takes the repeated tensor."""
    g = _gqa_graph()
    rep = next(n for n in g.nodes if n.op is shape.transpose).inputs[0]
    g.outputs.append(g.add1(ew.neg, [rep]))
    (ch,) = find_chains(g)
    assert ch.k_group == 1 and ch.k is rep and ch.v_group == 4


def test_repeat_group_needs_interleaved_heads():
    assert repeat_group((1, 2, 16, 8), (1, 2, 1, 16, 8), (1, 2, 4, 16, 8), (1, 8, 16, 8)) == 4
    assert repeat_group((1, 2, 16, 8), (1, 1, 2, 16, 8), (1, 4, 2, 16, 8), (1, 8, 16, 8)) is None   # tiled
    assert repeat_group((2, 16, 8), (2, 1, 16, 8), (2, 3, 16, 8), (6, 16, 8)) == 3


def test_einsum_report_states_causal_block_skipping():
    text = report(_causal_graph(MIN, lq=64, lk=64))
    before, after = text.split("// after fuse_attention")
    assert "causal (key j visible to query i iff j <= i + 0)" in before and "skipped" not in before
    assert "key blocks past the diagonal skipped, the mask not read" in after


@pytest.mark.parametrize("lq,h", [(1, 1), (16, 4), (128, 16)])
@pytest.mark.parametrize("mask", [None, "padding", "causal"])
def test_fuse_attention_keeps_meaning_across_lengths_and_heads(lq, h, mask):
    """fused == unfused in the interpreter, and both == the 1-pass cascade run literally."""
    g = _causal_graph(MIN, lq=lq, lk=lq, h=h) if mask == "causal" else \
        _attention_graph(b=1 + (mask == "padding"), h=h, lq=lq, lk=lq, mask=mask == "padding")
    ins = _inputs(g)
    want = interp.run(g, *ins)[0]
    _close(interp.run(fuse_attention(g), *ins)[0], want)
    q, k, v = ins[:3]
    m = ins[3] if len(ins) == 4 else (g.nodes[[n.op for n in g.nodes].index(ew.add)].inputs[1].const
                                      if mask == "causal" else None)
    _close(online_attention(q, k, v, 1 / np.sqrt(8), m, block=16), want)


@requires_torch
@pytest.mark.parametrize("form", ["causal_gqa", "bool_mask"])
def test_sdpa_converter_writes_causal_and_grouped_attention(form):
    """The torch frontend's scaled_dot_product_attention: is_causal and enable_gqa as the constant
    causal mask and the head repeat, a boolean mask as the additive where(mask, 0, -inf); fuse_attention
    reads each back and keeps PyTorch's result."""
    import torch
    import torch.nn.functional as F

    import compiler
    kv = 2 if form == "causal_gqa" else 8
    kwargs = dict(is_causal=True, enable_gqa=True) if form == "causal_gqa" else {}

    class Sdpa(torch.nn.Module):
        def forward(self, q, k, v, mask):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=None if kwargs else mask, **kwargs)

    torch.manual_seed(0)
    ins = (torch.randn(1, 8, 16, 8), torch.randn(1, kv, 16, 8), torch.randn(1, kv, 16, 8),
           torch.rand(1, 1, 16, 16) < 0.7)
    ins[3][..., 0] = True
    g = compiler.optimize(compiler.import_model(Sdpa(), example_inputs=ins))
    (ch,) = find_chains(g)
    assert (ch.causal, ch.k_group, ch.v_group) == ((0, 4, 4) if kwargs else (-1, 1, 1))
    want = Sdpa()(*ins).numpy()
    feeds = [t.numpy() for t in ins][:len(g.inputs)]
    _close(interp.run(fuse_attention(g), *feeds)[0], want, rtol=1e-5)
