"""Test helper: the unfused integer attention chain as passes/ivit.py writes it, on random int8 data."""
from __future__ import annotations

import math

import numpy as np

from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import ivit, quant, shape
from compiler.ops.quant import dyadic
from compiler.types import DType, TensorType

S_QKV, S_SCORE, S_OUT = 0.05, 0.004, 0.03      # q, k, v grids; the int16 scores' grid; the output's


def exp_bits(lk: int, scale: float = S_SCORE) -> int:
    """The largest n <= 15 with lk |x0| 2^n <= 2^31 - 1 (what passes/ivit.py picks)."""
    x0 = -ivit.exp_unit(scale)
    return min(15, int(math.floor(math.log2((2**31 - 1) / (lk * x0)))))


def chain(b: int, h: int, lq: int, lk: int, d: int, mask: str | None = None) -> Graph:
    """q.matmul(q, k^T) -> requant(int16, / sqrt d) -> [where(keep, s, int16 min)] -> shiftmax ->
    requant(int8, 2^-7 grid) -> q.matmul(p, v) -> requant(int8). keep: a (b, 1, 1, lk) input ("padding")
    or a constant lower triangle, bottom-right aligned ("causal")."""
    g = Graph("qattention")
    q = g.add_input("q", TensorType((b, h, lq, d), DType.I8))
    k, v = (g.add_input(n, TensorType((b, h, lk, d), DType.I8)) for n in "kv")
    acc = g.add1(quant.matmul, [q, g.add1(shape.transpose, [k], perm=(0, 1, 3, 2))])
    m, c = dyadic(S_QKV * S_QKV / math.sqrt(d) / S_SCORE)
    s = g.add1(quant.requant, [acc], multiplier=(m,), shift=(c,), qmin=-32768, qmax=32767, dtype=DType.I16)
    if mask is not None:
        keep = g.add_input("keep", TensorType((b, 1, 1, lk), DType.BOOL)) if mask == "padding" else \
            g.const(np.tril(np.ones((lq, lk), bool), lk - lq), "causal")
        s = g.add1(ew.where, [keep, s, g.const(np.array(-32768, np.int16), "dropped")])
    e = g.add1(ivit.shiftmax, [s], scale=S_SCORE, n=exp_bits(lk), axis=-1, dtype=DType.I32, dividend_bits=62)
    m, c = dyadic(2.0 ** -31 * 127)
    p = g.add1(quant.requant, [e], multiplier=(m,), shift=(c,), qmin=-128, qmax=127, dtype=DType.I8)
    m, c = dyadic(S_QKV / 127 / S_OUT)
    g.outputs = [g.add1(quant.requant, [g.add1(quant.matmul, [p, v])], multiplier=(m,), shift=(c,),
                        qmin=-128, qmax=127, dtype=DType.I8)]
    return g


def inputs(g: Graph, seed: int = 0) -> list[np.ndarray]:
    """int8 q, k, v (about N(0, 1) on their grid) and, with a mask, the last quarter of the keys dropped
    in every batch but the first."""
    rng = np.random.default_rng(seed)
    ins = [np.clip(np.rint(rng.standard_normal(x.type.shape) / S_QKV / 1.5), -128, 127).astype(np.int8)
           for x in g.inputs[:3]]
    if len(g.inputs) == 4:
        keep = np.ones(g.inputs[3].type.shape, bool)
        keep[1:, ..., -max(1, keep.shape[-1] // 4):] = False
        ins.append(keep)
    return ins
