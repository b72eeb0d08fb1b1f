"""What a fused attention body computes (`k.fused{kernel = "attention"}`, passes.einsum.fuse_attention), read
once for every backend that lowers it as one operation: TVM's CPU and GPU kernels, MLIR's
`iree_linalg_ext.attention`.

The body is [scaled] q, [scaled] [repeated] k -> matmul(q, [transpose] k) -> [div | mul by a scalar]
-> [add mask] -> softmax(last axis) -> [where(isnan(p), 0, p)] -> matmul(., [repeated] v); in float16, casts to
float32 around the softmax. A head repeat of K or V (reshape, expand, reshape: repeat_interleave along the
heads) is read as a group count (grouped-query attention); a causal mask (trilu(expand(c), upper, k) with
c <= -1e9) as an offset.
"""
from __future__ import annotations

from dataclasses import dataclass

from compiler.backends.base import NotFusable
from compiler.ir import Graph, Value
from compiler.ops import elementwise as ew
from compiler.ops import linalg, nn, shape
from compiler.ops import unary_math as um
from compiler.types import DType
from passes.einsum import scalar_of, trilu_causal


@dataclass
class Attention:
    """What the body computes, in the kernel's terms."""

    q: Value
    k: Value
    v: Value
    mask: Value | None        # None: no mask tensor (none, or causal)
    scale: float
    k_transposed: bool        # k arrives as (..., d, lk)
    k_group: int
    v_group: int
    causal: int               # -1, or the offset of the causal mask
    zero_masked_rows: bool


def _unscale(v: Value) -> tuple[Value, float]:
    """v = src * c1 / c2 ... with scalar constants: (src, the factor)."""
    factor = 1.0
    while (n := v.producer) is not None and n.op in (ew.mul, ew.div) and len(n.inputs) == 2:
        x, other = (n.inputs[1], n.inputs[0]) if n.inputs[0].is_const else n.inputs
        c = scalar_of(other)
        if c is None or c == 0 or x.is_const or (n.op is ew.div and n.inputs[0] is not x):
            break
        factor, v = factor * (1.0 / c if n.op is ew.div else c), x
    return v, factor


def _unrepeat(v: Value) -> tuple[Value, int]:
    """v = reshape(expand(reshape(src))) repeating each head (axis -3) of src n times: (src, n)."""
    r2 = v.producer
    ex = r2.inputs[0].producer if r2 is not None and r2.op is shape.reshape else None
    r1 = ex.inputs[0].producer if ex is not None and ex.op is shape.expand else None
    if r1 is None or r1.op is not shape.reshape:
        return v, 1
    src = tuple(r1.inputs[0].type.shape)
    n = ex.outputs[0].type.shape[-3] if len(src) >= 3 else 0
    if len(src) < 3 or tuple(r1.outputs[0].type.shape) != src[:-2] + (1,) + src[-2:] or \
            tuple(ex.outputs[0].type.shape) != src[:-2] + (n,) + src[-2:] or \
            tuple(v.type.shape) != src[:-3] + (src[-3] * n,) + src[-2:]:
        return v, 1
    return r1.inputs[0], n


def read_attention(body: Graph, dtypes: tuple[DType, ...] = (DType.F32,)) -> Attention:
    """What a fused attention body computes, walked back from its result; NotFusable if it is not an attention
    body whose q, k, v are of one of `dtypes` (the TVM CPU kernel: float32; the GPU's and MLIR's: float16 too)."""
    pv = body.outputs[0].producer
    if pv is None or pv.op is not linalg.matmul:
        raise NotFusable("not an attention body")
    p, guard = pv.inputs[0], False
    if p.producer is not None and p.producer.op is ew.cast:      # float16: P cast back from float32
        p = p.producer.inputs[0]
    w = p.producer
    if w is not None and w.op is ew.where and w.inputs[0].producer is not None and \
            w.inputs[0].producer.op is um.isnan and w.inputs[0].producer.inputs[0] is w.inputs[2] and \
            scalar_of(w.inputs[1]) == 0.0:
        p, guard = w.inputs[2], True
        if p.producer is not None and p.producer.op is ew.cast:  # float16: the guard after the cast back
            p = p.producer.inputs[0]
    sm = p.producer
    if sm is None or sm.op is not nn.softmax:
        raise NotFusable("not an attention body")
    mm = next((n for n in body.nodes if n.op is linalg.matmul), None)
    if mm is None or mm is pv:
        raise NotFusable("not an attention body")
    readers = {id(x): n for n in body.nodes for x in n.inputs}
    cur, scale, mask = mm.outputs[0], 1.0, None
    while cur is not sm.inputs[0]:
        n = readers.get(id(cur))
        other = None if n is None or len(n.inputs) != 2 else n.inputs[1] if n.inputs[0] is cur else n.inputs[0]
        c = scalar_of(other) if other is not None else None
        if n is not None and n.op is ew.cast and n.outputs[0].type.dtype is DType.F32:   # float16 scores
            pass
        elif n is not None and n.op in (ew.mul, ew.div) and c and (n.op is ew.mul or n.inputs[0] is cur):
            scale *= 1.0 / c if n.op is ew.div else c
        elif n is not None and n.op is ew.add and mask is None and other is not None:
            mask = other
        else:
            raise NotFusable(f"{n.op.name if n else 'nothing'} between Q K^T and softmax")
        cur = n.outputs[0]
    q, q_scale = _unscale(mm.inputs[0])
    k, k_scale = _unscale(mm.inputs[1])
    t = k.producer
    r = k.type.rank
    transposed = not (t is not None and t.op is shape.transpose and
                      list(t.attrs["perm"]) == list(range(r - 2)) + [r - 1, r - 2])
    if not transposed:
        k, k_scale2 = _unscale(t.inputs[0])
        k_scale *= k_scale2
    k, k_group = _unrepeat(k)
    v, v_group = _unrepeat(pv.inputs[1])
    if q.type.dtype not in dtypes or any(x.type.dtype is not q.type.dtype for x in (k, v)):
        raise NotFusable(f"the attention kernel takes {' or '.join(t.value for t in dtypes)}")
    causal = trilu_causal(mask.producer) if mask is not None else -1
    return Attention(q, k, v, None if causal >= 0 else mask, scale * q_scale * k_scale, transposed,
                     k_group, v_group, causal, guard)


