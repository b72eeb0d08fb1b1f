"""pack_weights: each fp32 conv kernel's weight becomes the packed constant its kernel reads.

After assign_layouts a conv kernel's body reads its data in `in_block` channel blocks and writes its
result in `out_block` blocks; compiler/layouts.py says, from those, which packed form (dense, depthwise
or generic) and which blocks the CPU kernel reads its weight in. This pass stores the weight in that
form: the body's OIHW constant is replaced by `layout.unpack_weight(packed constant)`. The interpreter
still computes the conv on OIHW (the meaning does not change), the backend takes the packed constant
as is, and `--emit ir` shows the bytes that run.
"""
from __future__ import annotations

import numpy as np

from compiler import layouts
from compiler.ir import Graph, Node, Value
from compiler.ops import kernel, layout as lay, linalg
from compiler.types import DType
from passes.base import PassContext, register_pass


def _blocks(body: Graph, conv: Node) -> tuple[int, int]:
    """(in_block, out_block) the kernel's body reads its data and writes its result in (0: plain)."""
    x = conv.inputs[0].producer
    ib = x.inputs[0].type.shape[4] if x is not None and x.op is lay.unpack and x.inputs[0] in body.inputs else 0
    out = body.outputs[0].producer
    ob = out.attrs["block"] if out is not None and out.op is lay.pack else 0
    return ib, ob


def packed_body(body: Graph) -> Graph | None:
    """A copy of `body` whose fp32 conv reads its weight through layout.unpack_weight of the packed
    constant, or None (not an fp32 conv with a constant OIHW weight)."""
    conv = kernel.anchor_of(body)
    if conv.op is not linalg.conv or conv.inputs[0].type.dtype is not DType.F32 or not conv.inputs[1].is_const:
        return None
    ib, ob = _blocks(body, conv)
    w = conv.inputs[1]
    co, ci = w.type.shape[0], conv.inputs[0].type.shape[1]
    form, ib, ob = layouts.conv_weight_form(ci, co, conv.attrs["groups"], ib, ob)
    nb = body.clone()
    conv = next(n for n in nb.nodes if n.op is linalg.conv)
    w = conv.inputs[1]
    packed = nb.const(layouts.pack_conv_weight(np.asarray(w.const), form, ib, ob), w.name + "_packed")
    out = Value(nb.fresh_name(w.name + "_oihw"), w.type)
    nb.nodes.insert(nb.nodes.index(conv), Node(lay.unpack_weight, [packed], {"form": form}, [out],
                                               out.name, conv.loc))
    conv.inputs[1] = out
    return nb


@register_pass("pack_weights")
def pack_weights(g: Graph, ctx: PassContext) -> Graph:
    """The fp32 conv kernels' weights as the packed constants their kernels read."""
    g = g.clone()
    for i, n in enumerate(g.nodes):
        if n.op is not kernel.fused or n.attrs["kernel"] != "conv":
            continue
        body = packed_body(n.attrs["body"])
        if body is not None:
            g.nodes[i] = Node(n.op, n.inputs, {**n.attrs, "body": body}, n.outputs, n.name, n.loc)
    return g
