"""Float attention graphs as the frontends write them, shared by the backends' fused-attention tests: the plain
chain (scale by a division or a product, K transposed or not, a padding or constant causal mask) and the
chain transformers exports (K / V heads repeated, finfo.min masks), with inputs for them."""
from __future__ import annotations

import numpy as np

from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import linalg, nn, shape
from compiler.ops import unary_math as um
from compiler.types import DType, TensorType

F32 = DType.F32


def attention_graph(b, h, lq, lk, d, mask=None, k_transposed=False, scale_op=ew.div) -> Graph:
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


def gqa_graph(b, h, kv, lq, lk, d, mask=None) -> Graph:
    """Attention as transformers exports it: K and V with `kv` heads repeated to `h` (reshape, expand,
    reshape), scores scaled by 1/sqrt(d), then a padding (b, 1, 1, lk) input mask or a constant causal
    mask (finfo.min above the diagonal, bottom-right aligned when lq < lk)."""
    g = Graph("attention")
    q = g.add_input("q", TensorType((b, h, lq, d), F32))
    k, v = (g.add_input(n, TensorType((b, kv, lk, d), F32)) for n in "kv")
    if kv != h:
        k, v = (g.add1(shape.reshape, [g.add1(shape.expand, [g.add1(shape.reshape, [x], shape=(b, kv, 1, lk, d))],
                                              shape=(b, kv, h // kv, lk, d))], shape=(b, h, lk, d)) for x in (k, v))
    s = g.add1(linalg.matmul, [q, g.add1(shape.transpose, [k], perm=(0, 1, 3, 2))])
    s = g.add1(ew.mul, [s, g.const(np.float32(1 / np.sqrt(d)), "scale")])
    if mask == "padding":
        s = g.add1(ew.add, [s, g.add_input("mask", TensorType((b, 1, 1, lk), F32))])
    elif mask == "causal":
        causal = np.triu(np.full((lq, lk), np.finfo(np.float32).min, np.float32), 1 + lk - lq)
        s = g.add1(ew.add, [s, g.const(causal[None, None], "causal")])
    g.outputs = [g.add1(linalg.matmul, [g.add1(nn.softmax, [s], axis=-1), v])]
    return g


def attention_inputs(g: Graph) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    ins = [rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]
    if g.inputs[-1].name == "mask":          # the last quarter of the keys padded, in every batch but the first
        ins[-1] = np.zeros(g.inputs[-1].type.shape, np.float32)
        ins[-1][1:, ..., -max(1, ins[-1].shape[-1] // 4):] = np.finfo(np.float32).min
        ins[-1][..., 0] = 0
    return ins


def guarded_graph() -> tuple[Graph, list[np.ndarray]]:
    """torch's ONNX export of scaled_dot_product_attention: q and k each scaled by d^-1/4, a (b, 1, lq, lk) input
    mask, where(isnan(p), 0, p) after the softmax; and inputs whose mask is -inf at random, one query of the
    second batch seeing no key (its row must read 0)."""
    b, h, lq, lk, d = 2, 2, 16, 16, 16
    g = Graph("attention")
    q, k, v = (g.add_input(n, TensorType((b, h, lq if n == "q" else lk, d), F32)) for n in "qkv")
    half = g.const(np.float32(d ** -0.25), "half_scale")
    s = g.add1(linalg.matmul, [g.add1(ew.mul, [q, half]),
                               g.add1(ew.mul, [g.add1(shape.transpose, [k], perm=(0, 1, 3, 2)), half])])
    s = g.add1(ew.add, [s, g.add_input("mask", TensorType((b, 1, lq, lk), F32))])
    p = g.add1(nn.softmax, [s], axis=-1)
    p = g.add1(ew.where, [g.add1(um.isnan, [p]), g.const(np.zeros(1, np.float32), "zero"), p])
    g.outputs = [g.add1(linalg.matmul, [p, v])]
    rng = np.random.default_rng(0)
    ins = [rng.standard_normal(x.type.shape).astype(np.float32) for x in g.inputs]
    ins[3] = np.where(rng.random(ins[3].shape) < 0.3, -np.inf, 0).astype(np.float32)
    ins[3][1, 0, 5] = -np.inf
    return g, ins
