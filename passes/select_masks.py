"""select_masks: an additive attention mask that only ever adds 0 or "minus infinity" becomes a select,
before quantization.

    softmax(s + where(c, 0, m))  =>  softmax(where(c, s, m))      m <= MASK_FLOOR (a constant scalar)

Exporters write masks this way (transformers: torch.finfo(float32).min where a key is masked). The two
are equal for every finite score: s + m rounds to m where |s| < 2^103 (half an ulp of m). Quantized, the
select keeps the mask exact: the additive form would put the mask on an 8-bit grid calibrated on
unmasked data, which loses "minus infinity" (a masked score would come back as an ordinary one); the
select leaves the scores on their own grid and tells the integer softmax (passes/ivit.py) which keys to
drop.
"""
from __future__ import annotations

from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew
from compiler.ops import nn
from passes.base import register_pass
from passes.canonicalize import dead_code

MASK_FLOOR = -1e30          # a mask value at or below this is "minus infinity" to a float32 softmax


def is_mask_value(v: Value) -> bool:
    """A constant scalar at or below MASK_FLOOR (-inf included)."""
    m = v.float_scalar()
    return m is not None and m <= MASK_FLOOR


def _additive_mask(n: Node, users: dict) -> tuple[Value, Value, Value] | None:
    """(scores, cond, m) of n = add(scores, where(cond, 0, m)) whose only reader is a softmax; None else."""
    if n.op is not ew.add or [u.op for u, _ in users.get(n.outputs[0], [])] != [nn.softmax]:
        return None
    for i in (0, 1):
        w, s = n.inputs[i].producer, n.inputs[1 - i]
        if w is None or w.op is not ew.where:
            continue
        c, zero, m = w.inputs
        if zero.float_scalar() == 0.0 and is_mask_value(m) and s.type.dtype is m.type.dtype \
                and n.outputs[0].type.shape == s.type.shape:
            return s, c, m
    return None


@register_pass("select_masks")
def select_masks(g: Graph) -> Graph:
    """softmax(s + where(c, 0, m)) with m <= MASK_FLOOR => softmax(where(c, s, m)) (module docstring)."""
    g = g.clone()
    users = g.uses()
    for n in g.nodes:
        match = _additive_mask(n, users)
        if match is None:
            continue
        s, c, m = match
        n.op, n.inputs, n.attrs = ew.where, [c, s, m], ew.where.complete_attrs({})
    return dead_code(g)
