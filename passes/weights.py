"""pack_weights: each conv and matmul kernel's constant weight becomes the packed constant its kernel reads.

After assign_layouts a conv kernel's body reads its data in `in_block` channel blocks and writes its
result in `out_block` blocks; compiler/layouts.py says, from those, which packed form (dense, depthwise
or generic) and which blocks the CPU kernel reads its weight in; an int8 conv's VNNI kernel reads the
vnni form for its input block (the vnni_amx form where the backend runs it on AMX tiles); a matmul by a constant (k, n) weight reads it in column panels (fp32) or
the VNNI matmul's form (int8, or int4 two per byte; weight zero point 0). This pass stores the weight in that form: the body's OIHW constant is replaced by `layout.unpack_weight(packed constant)`. The interpreter
still computes the conv on OIHW (the meaning does not change), the backend takes the packed constant
as is, and `--emit ir` shows the bytes that run.
"""
from __future__ import annotations

import numpy as np

from compiler import layouts
from compiler.ir import Graph, Node, Value
from compiler.ops import kernel, layout as lay, linalg, quant as q
from compiler.types import DType
from passes.base import PassContext, register_pass


def _blocks(body: Graph, conv: Node) -> tuple[int, int]:
    """(in_block, out_block) the kernel's body reads its data and writes its result in (0: plain)."""
    x = conv.inputs[0].producer
    ib = x.inputs[0].type.shape[4] if x is not None and x.op is lay.unpack and x.inputs[0] in body.inputs else 0
    out = body.outputs[0].producer
    ob = out.attrs["block"] if out is not None and out.op is lay.pack else 0
    return ib, ob


def _matmul_packing(mm: Node) -> tuple[np.ndarray, dict] | None:
    """(packed weight, unpack_weight attributes) of a matmul by a constant (k, n) weight: the fp32 kernel's
    column panels, the int8 (or int4) VNNI kernel's form (weight zero point 0, not the shift-and-add realization)."""
    a, w = mm.inputs
    if not w.is_const or w.type.rank != 2 or a.type.rank < 2:
        return None
    if mm.op is linalg.matmul and a.type.dtype is DType.F32 and w.type.dtype is DType.F32:
        return layouts.pack_matmul_weight(np.asarray(w.const), "panels"), {"form": "panels"}
    if mm.op is q.matmul and w.type.dtype in (DType.I8, DType.I4) and mm.attrs["b_zero_point"] == 0 \
            and mm.attrs["realization"] != "shift" and a.type.dtype is not DType.I16:    # int16: int16 pairs
        form = "vnni_matmul" if w.type.dtype is DType.I8 else "vnni_matmul_int4"     # int4: two per byte
        return (layouts.pack_matmul_weight(np.asarray(w.const).astype(np.int8), form),
                {"form": form, "channels": w.type.shape})
    return None


def _packing(body: Graph, anchor: Node, amx: bool = False) -> tuple[np.ndarray, dict] | None:
    """(packed weight, unpack_weight attributes) of the kernel's conv or matmul, or None (no packed form
    applies: a computed weight, a 1-D or 3-D conv, an int8 conv without blocked data or with groups); `amx`: the
    backend runs the int8 conv on AMX tiles (the vnni_amx form; vnni_rows for a 1x1 conv)."""
    if anchor.op in (linalg.matmul, q.matmul):
        return _matmul_packing(anchor)
    w = anchor.inputs[1]
    if not w.is_const or w.type.rank != 4 or anchor.inputs[0].type.rank != 4:     # 2-D convs only
        return None
    ib, ob = _blocks(body, anchor)
    if anchor.op is linalg.conv and anchor.inputs[0].type.dtype is DType.F32:
        co, ci = w.type.shape[0], anchor.inputs[0].type.shape[1]
        form, ib, ob = layouts.conv_weight_form(ci, co, anchor.attrs["groups"], ib, ob)
        return layouts.pack_conv_weight(np.asarray(w.const), form, ib, ob), {"form": form}
    if anchor.op is q.conv and w.type.dtype is DType.I8 and anchor.attrs["groups"] == 1 and ib \
            and anchor.attrs["realization"] != "shift" \
            and (amx or anchor.inputs[0].type.dtype is not DType.I16):  # the shift kernel reads codes; int16 data
        # on VNNI: int16 pairs
        co, ci, _, kw = w.type.shape
        if amx and kw == 1:
            return layouts.pack_rows_conv_weight(np.asarray(w.const)), {"form": "vnni_rows", "channels": (co, ci)}
        if amx:
            return layouts.pack_amx_conv_weight(np.asarray(w.const)), {"form": "vnni_amx", "channels": (co, ci, kw)}
        return layouts.pack_vnni_conv_weight(np.asarray(w.const), ib), {"form": "vnni", "channels": (co, ci)}
    return None


def packed_body(body: Graph, amx: bool = False) -> Graph | None:
    """A copy of `body` whose conv reads its weight through layout.unpack_weight of the packed constant,
    or None (no packed form applies)."""
    at = body.nodes.index(kernel.anchor_of(body))
    packing = _packing(body, body.nodes[at], amx)
    if packing is None:
        return None
    packed, attrs = packing
    nb = body.clone()
    conv = nb.nodes[at]
    w = conv.inputs[1]
    pv = nb.const(packed, w.name + "_packed")
    out = Value(nb.fresh_name(w.name + "_oihw"), w.type)
    nb.nodes.insert(at, Node(lay.unpack_weight, [pv], lay.unpack_weight.complete_attrs(attrs), [out],
                             out.name, conv.loc))
    conv.inputs[1] = out
    return nb


@register_pass("pack_weights")
def pack_weights(g: Graph, ctx: PassContext) -> Graph:
    """The conv and matmul kernels' constant weights (fp32, int8 VNNI or AMX) as the packed constants their
    kernels read (an int8 conv the backend's kernel spec puts on AMX tiles: the vnni_amx form)."""
    g = g.clone()
    for i, n in enumerate(g.nodes):
        if n.op is not kernel.fused or n.attrs["kernel"] not in ("conv", "qconv", "matmul", "qmatmul"):
            continue
        amx = n.attrs["kernel"] == "qconv" and ctx.kernel_spec is not None and \
            getattr(ctx.kernel_spec(n), "amx", False)
        body = packed_body(n.attrs["body"], amx)
        if body is not None:
            g.nodes[i] = Node(n.op, n.inputs, {**n.attrs, "body": body}, n.outputs, n.name, n.loc)
    return g
