"""The fused attention kernel (one pass over key blocks, online softmax) against the interpreter, rel 1e-4:
masks (padding, broadcast over heads; a constant causal mask, which the kernel applies itself, skipping
the key blocks past the diagonal), K arriving transposed, lengths that are not a multiple of the vector
width, one query, a block size that splits the keys, grouped-query heads (K and V read unrepeated), the
NaN guard torch's export puts after the softmax; and the fused build == the unfused build == the
interpreter for lengths 1..128 (1024 marked slow) and 1..16 heads."""
from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("tvm")

from compiler import interp
from compiler.ir import Graph, Node
from compiler.ops import elementwise as ew
from compiler.ops import kernel, linalg, nn, shape
from compiler.types import DType, TensorType
from passes.einsum import fuse_attention
from tests.backends.attention_graphs import attention_graph, attention_inputs, gqa_graph, guarded_graph
from tests.backends.kernel_ir import build

F32 = DType.F32


def _run(g: Graph, tile=None):
    rng = np.random.default_rng(0)
    ins = [rng.standard_normal(v.type.shape).astype(np.float32) * 2 for v in g.inputs]
    if g.inputs[-1].name == "mask":
        ins[-1] = np.where(rng.random(ins[-1].shape) < 0.3, -1e9, 0).astype(np.float32)
        ins[-1][..., 0] = 0
    fused = fuse_attention(g)
    if tile is not None:
        n = fused.nodes[0]
        fused.nodes[0] = Node(n.op, n.inputs, {**n.attrs, "tile": tile}, n.outputs, n.name, n.loc)
    assert fused.nodes[0].op is kernel.fused and fused.nodes[0].attrs["kernel"] == "attention"
    exe = build(fused)
    assert re.search(r"call_tir\(cls\.attention_\d+", exe.source("relax"))
    got, want = exe.run(ins)[0], interp.run(g, *ins)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.parametrize("b,h,lq,lk,d", [(1, 6, 32, 32, 64), (2, 3, 20, 36, 8), (1, 2, 1, 16, 16),
                                         (1, 1, 16, 1, 16)])
def test_attention_kernel_matches_interpreter(b, h, lq, lk, d):
    _run(attention_graph(b, h, lq, lk, d))


@pytest.mark.parametrize("mask", ["padding", "causal"])
def test_attention_kernel_masks(mask):
    _run(attention_graph(2, 4, 48, 48, 32, mask=mask))


def test_attention_kernel_k_transposed_and_multiplied_scale():
    _run(attention_graph(1, 4, 32, 64, 32, k_transposed=True, scale_op=ew.mul))


def test_attention_kernel_key_blocks_split_the_keys():
    _run(attention_graph(1, 2, 64, 128, 64, mask="causal"), tile=(16, 32))


# -- causal masks, grouped-query heads, lengths 1..1024: fused == unfused == interpreter ----------------


def _fused_unfused_interp(g: Graph) -> None:
    fused = fuse_attention(g)
    (node,) = fused.nodes
    assert node.op is kernel.fused and node.attrs["kernel"] == "attention"
    ins = attention_inputs(g)
    want = interp.run(g, *ins)[0]
    tol = dict(rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    np.testing.assert_allclose(interp.run(fused, *ins)[0], want, **tol)
    exe = build(g)
    assert re.search(r"call_tir\(cls\.attention_\d+", exe.source("relax"))
    np.testing.assert_allclose(exe.run(ins)[0], want, **tol)
    np.testing.assert_allclose(build(g, disable=("fuse_attention",)).run(ins)[0], want, **tol)


@pytest.mark.parametrize("b,h,kv,lq,lk,d,mask", [
    (1, 1, 1, 1, 1, 16, None),
    (1, 4, 4, 1, 16, 64, "causal"),          # one query (decoding): it sees every key
    (2, 3, 3, 16, 16, 32, "padding"),
    (1, 16, 16, 16, 16, 64, "causal"),
    (1, 6, 1, 16, 16, 64, "causal"),         # multi-query: one K/V head
    (1, 8, 2, 128, 128, 64, "causal"),       # grouped-query
    (1, 2, 2, 128, 128, 64, None),
    (2, 16, 4, 128, 128, 32, "padding"),
])
def test_attention_kernel_fused_equals_unfused_and_interpreter(b, h, kv, lq, lk, d, mask):
    _fused_unfused_interp(gqa_graph(b, h, kv, lq, lk, d, mask))


@pytest.mark.slow
@pytest.mark.parametrize("h,kv,mask", [(12, 12, "causal"), (8, 2, None), (4, 4, "padding"), (16, 4, "causal")])
def test_attention_kernel_fused_equals_unfused_and_interpreter_1024(h, kv, mask):
    _fused_unfused_interp(gqa_graph(1, h, kv, 1024, 1024, 64, mask))


def test_attention_kernel_reads_causal_and_grouped_heads_from_the_body():
    """The kernel takes the causal offset instead of the mask tensor, and the K/V heads unrepeated."""
    from compiler.backends.attention_body import read_attention
    node = fuse_attention(gqa_graph(1, 8, 2, 16, 48, 32, "causal")).nodes[0]
    a = read_attention(node.attrs["body"])
    assert (a.mask, a.causal, a.k_group, a.v_group) == (None, 32, 4, 4)
    assert a.k.type.shape == (1, 2, 48, 32) and not a.k_transposed
    node = fuse_attention(gqa_graph(2, 4, 4, 16, 16, 32, "padding")).nodes[0]
    a = read_attention(node.attrs["body"])
    assert (a.mask.type.shape, a.causal, a.k_group) == ((2, 1, 1, 16), -1, 1)


@pytest.mark.parametrize("tile", [(16, 16), (8, 32), (32, 64)])
def test_attention_kernel_causal_block_skipping(tile):
    """Blocks wholly past the diagonal skipped, those crossing it masked in the kernel: any tiling."""
    _run(gqa_graph(1, 2, 1, 64, 64, 32, "causal"), tile=tile)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_attention_kernel_nan_guard_zeroes_fully_masked_rows():
    """torch's ONNX export of scaled_dot_product_attention: where(isnan(p), 0, p) after the softmax; a
    query whose every key is -inf gives 0, as the unfused graph does."""
    g, ins = guarded_graph()
    fused = fuse_attention(g)
    assert [n.op for n in fused.nodes] == [kernel.fused]
    want = interp.run(g, *ins)[0]
    assert np.isfinite(want).all() and not want[1, :, 5].any()
    got = build(g).run(ins)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.parametrize("rows,tile", [(1, (16, 16)), (32, (16, 16)), (32, (8, 32))])
def test_attention_kernel_skips_fully_padded_key_blocks(rows, tile):
    """A padding mask (finfo.min on the last keys, per batch, or per query row) whose key blocks are
    wholly masked: the kernel skips them and still equals the interpreter; a batch in which one query
    sees no key at all walks every block (the unfused softmax then averages over every key)."""
    b, h, lq, lk, d = 3, 2, 32, 64, 16
    g = Graph("attention")
    q, k, v = (g.add_input(n, TensorType((b, h, lq if n == "q" else lk, d), F32)) for n in "qkv")
    s = g.add1(linalg.matmul, [q, g.add1(shape.transpose, [k], perm=(0, 1, 3, 2))])
    s = g.add1(ew.mul, [s, g.const(np.float32(d ** -0.5), "scale")])
    s = g.add1(ew.add, [s, g.add_input("mask", TensorType((b, 1, rows, lk), F32))])
    g.outputs = [g.add1(linalg.matmul, [g.add1(nn.softmax, [s], axis=-1), v])]
    rng = np.random.default_rng(2)
    ins = [rng.standard_normal(x.type.shape).astype(np.float32) for x in g.inputs]
    mask = np.zeros((b, 1, rows, lk), np.float32)
    mask[1, ..., 20:] = np.finfo(np.float32).min         # keys 32.. are whole masked blocks
    mask[2, ..., 40:] = np.finfo(np.float32).min
    mask[2, ..., rows - 1, :] = np.finfo(np.float32).min  # batch 2: a query (all of them if rows == 1) sees no key
    ins[3] = mask
    fused = fuse_attention(g)
    n = fused.nodes[0]
    fused.nodes[0] = Node(n.op, n.inputs, {**n.attrs, "tile": tile}, n.outputs, n.name, n.loc)
    want = interp.run(g, *ins)[0]
    got = build(fused).run(ins)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
