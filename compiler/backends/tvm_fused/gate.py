"""The "gate" kernel of fused nodes (passes/gate.py): a squeeze-excite gate multiply on blocked 8-bit data,
requant((cast(a) [+- zero points]) * (cast(g) [+- zero points])), as tvm_kernels/gate.py's kernel with the
channel block as vector lanes. Every partial value is checked to stay inside int32 (as the reference
computes it), and the requant takes the cheapest form exact for the product's range."""
from __future__ import annotations

import numpy as np
from tvm import relax

from compiler.backends.tvm_fused import emit
from compiler.backends.tvm_fused.body import KernelBody, NotFusable
from compiler.backends.tvm_fused.integer import INT_DATA
from compiler.backends.tvm_kernels import gate as kg
from compiler.backends.tvm_kernels import qconv2d as kq
from compiler.backends.tvm_lower.registry import LowerCtx, tvm_dtype
from compiler.ir import Value
from compiler.ops import elementwise as ew
from compiler.ops import quant as q
from compiler.types import DType

_I32 = (-2**31, 2**31 - 1)


def _factor(v: Value, body_inputs: list[Value]) -> tuple[int, int, int]:
    """(operand index, offset added after the cast, the source's range + offset) of one product factor."""
    off = 0
    while True:
        p = v.producer
        if p is None:
            raise NotFusable("a product factor that is not a cast operand")
        if p.op is ew.cast:
            src = p.inputs[0]
            if src not in body_inputs or p.attrs["to"] is not DType.I32 or \
                    src.type.dtype not in INT_DATA:
                raise NotFusable("the gate kernel reads 8- or 16-bit operands")
            lo, hi = q.INT_RANGE[src.type.dtype]
            if not (_I32[0] <= lo + off and hi + off <= _I32[1]):
                raise NotFusable("an offset that leaves int32")
            return body_inputs.index(src), off, (lo + off, hi + off)
        c = p.inputs[1]
        if p.op not in (ew.add, ew.sub) or not c.is_const or c.type.dtype is not DType.I32:
            raise NotFusable("only zero points between the cast and the product")
        k = int(np.asarray(c.const).reshape(-1)[0])
        off += k if p.op is ew.add else -k
        if abs(off) >= 2**24:
            raise NotFusable("an offset that leaves int32")
        v = p.inputs[0]


def gate_plan(kb: KernelBody):
    body = kb.body
    rq_n = body.outputs[0].producer
    mul = rq_n.inputs[0].producer if rq_n is not None and rq_n.op is q.requant else None
    if mul is None or mul.op is not ew.mul or len(body.inputs) != 2 or len(rq_n.attrs["multiplier"]) != 1:
        raise NotFusable("not a gate: requant(mul(...)) per tensor")
    (ia, off_a, ra), (ig, off_g, rg) = (_factor(v, body.inputs) for v in mul.inputs)
    if body.inputs[ia].type.shape != body.outputs[0].type.shape:
        (ia, off_a, ra), (ig, off_g, rg) = (ig, off_g, rg), (ia, off_a, ra)
    a, g = body.inputs[ia], body.inputs[ig]
    if ia == ig or a.type.rank != 5 or g.type.shape != (*a.type.shape[:2], 1, 1, a.type.shape[4]):
        raise NotFusable("the gate kernel reads (n, c/b, h, w, b) and (n, c/b, 1, 1, b)")
    corners = [x * y for x in ra for y in rg]
    if min(corners) < _I32[0] or max(corners) > _I32[1]:
        raise NotFusable("a product that leaves int32")
    r = rq_n.attrs
    m, c = int(r["multiplier"][0]), int(r["shift"][0])
    form = kq.requant_form([m], [c], r["in_zero_point"], r["zero_point"], (min(corners), max(corners)),
                           (r["qmin"], r["qmax"]))
    rq = kq.Requant(r["in_zero_point"], r["zero_point"], r["qmin"], r["qmax"], tvm_dtype(r["dtype"]), form)
    spec = kg.GateSpec(*a.type.shape, tvm_dtype(a.type.dtype), tvm_dtype(g.type.dtype), off_a, off_g, m, c, rq)
    return spec, ia, ig


def emit_gate(ctx: LowerCtx, kb: KernelBody, args: list[relax.Expr]) -> relax.Expr:
    spec, ia, ig = gate_plan(kb)
    over = 0 if kb.node.attrs["inplace"] == ia and spec.a_dtype == spec.rq.dtype else -1

    def build():
        func = kg.make_gate(spec)
        return emit.write_over(func, "a") if over == 0 else func

    gv = ctx.kernel(("gate", spec, over == 0), build, "se_gate")
    return ctx.call_kernel(gv, [args[ia], args[ig]], spec.shape(), spec.rq.dtype, inplace=over)
