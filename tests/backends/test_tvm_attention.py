"""The fused attention kernel (one pass over key blocks, online softmax) against the interpreter, rel 1e-4:
masks (padding, broadcast over heads; a constant causal mask), K arriving transposed, lengths that are not
a multiple of the vector width, one query, and a block size that splits the keys."""
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
from tests.backends.kernel_ir import build

F32 = DType.F32


def _graph(b, h, lq, lk, d, mask=None, k_transposed=False, scale_op=ew.div) -> Graph:
    g = Graph("attention")
    q = g.add_input("q", TensorType((b, h, lq, d), F32))
    if k_transposed:
        kt = g.add_input("kt", TensorType((b, h, d, lk), F32))
    else:
        kt = g.add1(shape.transpose, [g.add_input("k", TensorType((b, h, lk, d), F32))], perm=(0, 1, 3, 2))
    v = g.add_input("v", TensorType((b, h, lk, d), F32))
    c = np.float32(np.sqrt(d)) if scale_op is ew.div else np.float32(1 / np.sqrt(d))
    s = g.add1(scale_op, [g.add1(linalg.matmul, [q, kt]), g.const(c, "scale")])
    if mask == "padding":
        s = g.add1(ew.add, [s, g.add_input("mask", TensorType((b, 1, 1, lk), F32))])
    elif mask == "causal":
        causal = np.triu(np.full((lq, lk), -1e9, np.float32), 1)[None, None]
        s = g.add1(ew.add, [s, g.const(causal, "causal")])
    g.outputs = [g.add1(linalg.matmul, [g.add1(nn.softmax, [s], axis=-1), v])]
    return g


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
    _run(_graph(b, h, lq, lk, d))


@pytest.mark.parametrize("mask", ["padding", "causal"])
def test_attention_kernel_masks(mask):
    _run(_graph(2, 4, 48, 48, 32, mask=mask))


def test_attention_kernel_k_transposed_and_multiplied_scale():
    _run(_graph(1, 4, 32, 64, 32, k_transposed=True, scale_op=ew.mul))


def test_attention_kernel_key_blocks_split_the_keys():
    _run(_graph(1, 2, 64, 128, 64, mask="causal"), tile=(16, 32))
