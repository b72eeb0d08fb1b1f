"""fuse_integer_attention (opt-in: `compile(..., integer_attention=True)`, `--integer-attention`): the
unfused integer attention of an integer-only graph becomes one q.attention, Shiftmax inside the
running recurrence (compiler/ops/qattention.py).

    q.matmul(q, transpose(k)) -> q.requant(int16) -> [where(keep, s, fill)] -> q.shiftmax(axis -1)
      -> q.requant(int8 or uint8) -> q.matmul(p, v) -> q.requant
      => q.attention(q, k, v[, keep]) {block = the key block}

The chain's first requant and the mask carry over as they are. The last two requants become one: the
unfused graph computes o = (shiftmax * r_p) @ v * r_o with shiftmax ~ softmax * 2^31, the op's t ~
softmax @ v * 2^16, so its requant ratio is r_p * r_o * 2^15. The result is not the unfused one: p is
not rounded to int8 and the running corrections are I-ViT exponents (the op's docstring); the
distance is stated in tests/ops/test_qattention.py. Opt-in until its fidelity on a whole encoder is
the default's.
"""
from __future__ import annotations

from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew
from compiler.ops import ivit, qattention, quant, shape
from compiler.ops.quant import dyadic
from compiler.ops.registry import TypeRuleError
from compiler.types import DType
from passes.base import register_pass
from passes.canonicalize import dead_code

PASS = "fuse_integer_attention"
BLOCK = 64          # keys per block (the last block may be shorter): the fp32 kernel's key block


def _sole(users, v: Value, outputs: set[int]) -> Node | None:
    rs = users.get(v, [])
    return rs[0][0] if len(rs) == 1 and id(v) not in outputs else None


def _per_tensor(n: Node | None, dtype: DType | None = None) -> bool:
    return n is not None and n.op is quant.requant and len(n.attrs["multiplier"]) == 1 and \
        n.attrs["in_zero_point"] == 0 and (dtype is None or n.attrs["dtype"] is dtype)


def _plain_matmul(n: Node | None, a_types=(DType.I8,)) -> bool:
    return n is not None and n.op is quant.matmul and n.attrs["a_zero_point"] == 0 and \
        n.attrs["b_zero_point"] == 0 and not n.attrs["weight_code"] and \
        n.inputs[0].type.dtype in a_types and n.inputs[1].type.dtype is DType.I8


def _match(g: Graph, sm: Node, users, outputs: set[int]) -> tuple[list[Node], list[Node]] | None:
    """The chain around the Shiftmax `sm`: (its nodes, what replaces them: [a transpose of K when the
    chain did not transpose it,] the q.attention), or None."""
    if sm.attrs["axis"] not in (-1, sm.inputs[0].type.rank - 1):
        return None
    x, keep, fill, chain = sm.inputs[0], None, None, [sm]
    w = x.producer
    if w is not None and w.op is ew.where and w.inputs[2].is_const and w.inputs[2].const.size == 1 and \
            _sole(users, x, outputs) is sm:
        keep, fill, x, chain = w.inputs[0], int(w.inputs[2].const.reshape(-1)[0]), w.inputs[1], [w, sm]
    rq1 = x.producer
    if not _per_tensor(rq1, DType.I16) or rq1.attrs["zero_point"] != 0 or _sole(users, x, outputs) is None:
        return None
    mm1 = rq1.inputs[0].producer
    if not _plain_matmul(mm1) or _sole(users, rq1.inputs[0], outputs) is not rq1:
        return None
    rq2 = _sole(users, sm.outputs[0], outputs)          # p: int8, or uint8 (it is never negative)
    mm2 = _sole(users, rq2.outputs[0], outputs) if _per_tensor(rq2) and rq2.attrs["zero_point"] == 0 else None
    if not _plain_matmul(mm2, (DType.I8, DType.U8)) or mm2.inputs[0] is not rq2.outputs[0]:
        return None
    rq3 = _sole(users, mm2.outputs[0], outputs)
    if not _per_tensor(rq3):
        return None
    q, kt = mm1.inputs
    v = mm2.inputs[1]
    t = kt.producer
    r = kt.type.rank
    if t is not None and t.op is shape.transpose and list(t.attrs["perm"]) == list(range(r - 2)) + [r - 1, r - 2]:
        k, extra = t.inputs[0], []
    else:
        k = Value(g.fresh_name("k_rows"), kt.type.with_shape(kt.type.shape[:-2] + kt.type.shape[:-3:-1]))
        extra = [Node(shape.transpose, [kt], {"perm": tuple(range(r - 2)) + (r - 1, r - 2)}, [k], k.name)]
    a1, a2, a3 = rq1.attrs, rq2.attrs, rq3.attrs
    ratio = a2["multiplier"][0] / 2.0 ** a2["shift"][0] * a3["multiplier"][0] / 2.0 ** a3["shift"][0] * 2.0 ** 15
    m, c = dyadic(ratio)
    lk = k.type.shape[-2]
    attrs = qattention.attention.complete_attrs({
        "qk_multiplier": a1["multiplier"][0], "qk_shift": a1["shift"][0], "qk_qmin": a1["qmin"],
        "qk_qmax": a1["qmax"], "fill": a1["qmin"] if fill is None else fill, "scale": sm.attrs["scale"],
        "n": sm.attrs["n"], "block": min(BLOCK, lk), "multiplier": m, "shift": c,
        "zero_point": a3["zero_point"], "qmin": a3["qmin"], "qmax": a3["qmax"], "dtype": a3["dtype"]})
    ins = [q, k, v] + ([keep] if keep is not None else [])
    try:
        qattention.attention.infer([i.type for i in ins], attrs)
    except TypeRuleError:
        return None
    node = Node(qattention.attention, ins, attrs, rq3.outputs, rq3.name, rq3.loc)
    return [mm1, rq1] + chain + [rq2, mm2, rq3], extra + [node]


def _hits(g: Graph) -> list[tuple[list[Node], list[Node]]]:
    users, outputs = g.uses(), {id(v) for v in g.outputs}
    return [hit for n in g.nodes if n.op is ivit.shiftmax and (hit := _match(g, n, users, outputs)) is not None]


def integer_chains(g: Graph) -> list[tuple[str, tuple[Value, Value, Value]]]:
    """(name, (q, k, v)) of every unfused integer attention of g this pass would fuse (the einsum report
    counts them as 3-pass cascades)."""
    return [(chain[-1].name, tuple(new[-1].inputs[:3])) for chain, new in _hits(g)]


@register_pass(PASS)
def fuse_integer_attention(g: Graph) -> Graph:
    """Each unfused integer attention chain of g as one q.attention (module docstring)."""
    g = g.clone()
    gone: set[int] = set()
    at: dict[int, list[Node]] = {}
    for chain, new in _hits(g):
        gone |= {id(x) for x in chain}
        at[id(chain[-1])] = new
    if not at:
        return g
    g.nodes = [m for n in g.nodes for m in (at.get(id(n)) or ([] if id(n) in gone else [n]))]
    return dead_code(g)
