"""shiftadd_attention (`compile(..., shiftadd_attention=True)`, `--shiftadd-attention`): ShiftAddViT's
binary-code linear attention, post-training (no retraining). Every softmax attention chain that
passes.einsum.find_chains finds (unfused: this pass runs before fuse_attention) becomes one
mfree.binary_attention (compiler/ops/mfree.py states its meaning):

    matmul(q', kT') -> [scale] -> softmax -> [NaN rows to 0] -> matmul(., v')
      => mfree.binary_attention(q', transpose(kT'), v')

q', kT' and v' are the values the chain's two matmuls read (the q / k scalings, K's transpose and a
grouped-query head repeat stay in front of the op, so its operands have the matmuls' shapes; a
transpose of K's last two axes that only the chain reads is dropped instead of transposed back). The
score scale (1/sqrt(d)) is dropped: the codes [q' > 0], [k' > 0] do not change under a positive
factor; a chain whose score scale is not positive is refused. The op's output replaces the chain's,
so every reader is unchanged. In a float16 model (precision="fp16") the op reads Q, K and V cast to float32
and its result is cast back to float16 (the op is defined on float32).

This changes the model's meaning on purpose (softmax attention -> binary linear attention, V in int8):
the interpreter runs the new op's reference, and the TVM kernel matches it bit for bit. Refused, with
an Unsupported error naming the attention: a chain with an additive mask (linear attention has no
(query, key) score to mask; a causal prefix-sum form is not implemented).
"""
from __future__ import annotations

from compiler.diagnostics import Unsupported
from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew
from compiler.ops import linalg, mfree, shape
from compiler.types import DType, TensorType
from passes.base import register_pass
from passes.einsum import AttentionChain, find_chains


def _forward(ch: AttentionChain, qk: Node) -> list[Node]:
    """The chain's nodes from Q K^T on (scale, mask, softmax, NaN guard, P V): those that read its
    scores, directly or not."""
    made = {id(o) for o in qk.outputs}
    out = [qk]
    for n in ch.nodes:
        if n is not qk and any(id(v) in made for v in n.inputs):
            out.append(n)
            made.update(id(o) for o in n.outputs)
    return out


def _score_scale(fwd: list[Node]) -> float:
    """The product of the scalar scalings between Q K^T and the softmax (the chain's form guarantees
    every mul / div there is one: x * c, c * x or x / c)."""
    made = {id(o) for n in fwd for o in n.outputs}
    factor = 1.0
    for n in fwd:
        if n.op in (ew.mul, ew.div):
            i = 1 if id(n.inputs[0]) in made else 0
            c = float(n.inputs[i].const.reshape(-1)[0])
            factor *= 1.0 / c if n.op is ew.div else c
    return factor


def _last_two_swapped(n: Node) -> bool:
    r = n.outputs[0].type.rank
    return n.op is shape.transpose and list(n.attrs["perm"]) == list(range(r - 2)) + [r - 1, r - 2]


def _rewrite(g: Graph, ch: AttentionChain) -> tuple[list[Node], set[int]]:
    """(the nodes that replace the chain, the ids of the chain's nodes they replace)."""
    pv = ch.nodes[-1]
    qk = next(n for n in ch.nodes if n.op is linalg.matmul and n is not pv)
    name = pv.name
    if ch.mask is not None:
        raise Unsupported(f"shiftadd_attention: attention {name!r} has an additive mask "
                          f"({ch.mask.name}); binary linear attention Q (K^T V) forms no (query, key) score "
                          "to mask", pv.loc)
    fwd = _forward(ch, qk)
    if (scale := _score_scale(fwd)) <= 0:
        raise Unsupported(f"shiftadd_attention: attention {name!r} scales its scores by {scale} (not > 0)",
                          pv.loc)
    gone = {id(n) for n in fwd}
    q, kt, v = qk.inputs[0], qk.inputs[1], pv.inputs[1]
    new: list[Node] = []
    tr = kt.producer
    if tr is not None and _last_two_swapped(tr) and id(tr) in {id(n) for n in ch.nodes}:   # only qk reads kt
        k = tr.inputs[0]
        gone.add(id(tr))
    else:
        r = kt.type.rank
        perm = tuple(range(r - 2)) + (r - 1, r - 2)
        *lead, d, lk = kt.type.shape
        k = Value(g.fresh_name(kt.name + "_k"), TensorType((*lead, lk, d), kt.type.dtype))
        new.append(Node(shape.transpose, [kt], shape.transpose.complete_attrs({"perm": perm}), [k], k.name,
                        pv.loc))
    out = pv.outputs[0]
    if q.type.dtype is DType.F16:                                        # a float16 model: the op in float32
        q, k, v = (_cast(g, x, DType.F32, new, pv.loc) for x in (q, k, v))
        out = Value(g.fresh_name(name + "_f32"), TensorType(out.type.shape, DType.F32))
    mfree.binary_attention.infer([q.type, k.type, v.type], {})          # the op's type rule checks the form
    new.append(Node(mfree.binary_attention, [q, k, v], {}, [out], name, pv.loc))
    if out is not pv.outputs[0]:
        new.append(Node(ew.cast, [out], ew.cast.complete_attrs({"to": DType.F16}), [pv.outputs[0]],
                        pv.outputs[0].name, pv.loc))
    return new, gone


def _cast(g: Graph, x: Value, to: DType, new: list[Node], loc) -> Value:
    """x cast to `to` (the cast appended to `new`)."""
    y = Value(g.fresh_name(f"{x.name}_{to.value}"), TensorType(x.type.shape, to))
    new.append(Node(ew.cast, [x], ew.cast.complete_attrs({"to": to}), [y], y.name, loc))
    return y


def rewrite_attention(g: Graph) -> tuple[Graph, int]:
    """(g with every softmax attention chain as mfree.binary_attention, how many were rewritten)."""
    g = g.clone()
    chains = find_chains(g)
    at: dict[int, list[Node]] = {}
    gone: set[int] = set()
    for ch in chains:
        new, dropped = _rewrite(g, ch)
        at[id(ch.nodes[-1])] = new
        gone |= dropped
    out: list[Node] = []
    for n in g.nodes:
        out.extend(at.get(id(n), []))
        if id(n) not in gone:
            out.append(n)
    g.nodes = out
    return g, len(chains)


@register_pass("shiftadd_attention")
def shiftadd_attention(g: Graph) -> Graph:
    """Softmax attention chains (unfused) -> mfree.binary_attention: ShiftAddViT's binary-code linear
    attention, codes [Q > 0], [K > 0], V in int8, masked adds only."""
    return rewrite_attention(g)[0]
