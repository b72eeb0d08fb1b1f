"""The TVM lowering of the kernel-level IR: `k.fused` nodes become our scheduled kernels, `layout.pack`
and `layout.unpack` become conversion kernels.

A fused node is emitted as the kernel of its anchor (`kernel` attribute) with its body's layouts and
epilogue; a body that kernel cannot take is lowered op by op through the ops' own lowerings (the body is the
meaning, so this is always right, only slower). On a GPU target the integer convs and matmuls and the float16
convs with their epilogues are one GEMM each, an attention one kernel (cuda.py); every other fused node is
lowered op by op there.
Nothing here decides: fusion, layouts and tiles come from the passes.
"""
from __future__ import annotations

import numpy as np
from tvm import relax

from compiler.backends.tvm_fused import attention, cuda, fp32, gate, int_matmul, integer
from compiler.backends.tvm_fused.body import NotFusable, parse
from compiler.backends.tvm_kernels import layout as klayout
from compiler.backends.tvm_lower.registry import LowerCtx, lower_nodes, lowers, read, tvm_dtype
from compiler.ir import Node
from compiler.target import Target
from compiler.ops import kernel
from compiler.ops import layout as lay
from compiler.ops import reduce as rd



def _reduce(ctx, kb, args):
    if kb.anchor.op is rd.reduce_sum:
        return integer.emit_int_global_sum(ctx, kb, args)
    return fp32.emit_pool(ctx, kb, args)


EMITTERS = {
    "conv": fp32.emit_conv, "matmul": fp32.emit_matmul, "pool": fp32.emit_pool, "reduce": _reduce,
    "qconv": integer.emit_qconv, "qmatmul": int_matmul.emit_qmatmul, "shiftmax": integer.emit_shiftmax,
    "quantize": integer.emit_quantize, "attention": attention.emit_attention, "gate": gate.emit_gate,
}
CUDA_EMITTERS = {"qconv": cuda.emit_qconv, "qmatmul": cuda.emit_qmatmul, "conv": cuda.emit_conv,
                 "attention": cuda.emit_attention, "pool": cuda.emit_pool, "reduce": cuda.emit_pool}


def inline(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> relax.Expr:
    """The body op by op, through each op's own lowering."""
    body = node.attrs["body"]
    env = {id(v): a for v, a in zip(body.inputs, args)}
    lower_nodes(ctx, body.nodes, env)
    return read(env, body.outputs[0])


def kernel_spec(node: Node, target: Target | None = None):
    """The spec of the tunable kernel (conv, matmul, int8 conv / matmul / batched matmul, fp32 attention)
    fused `node` is built from for `target`, or None: what the tile pass asks the cost model about. On a target
    with AMX-INT8 an int8 matmul's or conv's spec says amx where an AMX kernel takes it (int_matmul.qmatmul_plan,
    integer.qconv_plan). On cuda: the tensor-core GEMM of an int8 or float16 conv / constant-weight matmul
    (cuda.gemm_spec)."""
    kind = node.attrs["kernel"]
    try:
        kb = parse(node)
        if target is not None and target.kind == "cuda":
            return cuda.gemm_spec(kb, target)
        if kind == "conv":
            return fp32.conv_plan(kb)[0]
        if kind == "matmul":
            return fp32.matmul_plan(kb)[0]
        if kind == "qconv":
            return integer.qconv_plan(kb, target)[0]
        if kind == "qmatmul":
            return (int_matmul.qmatmul_plan(kb, target) if lay.is_const_weight(kb.anchor.inputs[1])
                    else int_matmul.qbmm_plan(kb, target))[0]
        if kind == "attention":
            return attention.attention_plan(kb)[0]
    except NotFusable:
        return None
    return None


@lowers(kernel.fused)
def _fused(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    emitter = (EMITTERS if ctx.target.kind == "llvm" else CUDA_EMITTERS).get(node.attrs["kernel"])
    if emitter is not None:
        try:
            return [emitter(ctx, parse(node), args)]
        except NotFusable:
            pass
    return [inline(ctx, node, args)]


@lowers(lay.pack)
def _pack(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    n, c, h, w = node.inputs[0].type.shape
    b, fill = node.attrs["block"], node.attrs["fill"]
    dt = tvm_dtype(node.inputs[0].type.dtype)
    out = node.outputs[0].type.shape
    if ctx.target.kind == "cuda":       # dlight schedules it, FuseOps may join it to its producer
        return [ctx.emit_te(klayout.pack_nchwc_te, args[0], b, fill, name="pack_nchwc")]
    if c % b == 0:
        gv = ctx.kernel(("pack", n, c, h, w, b, dt), lambda: klayout.make_pack_nchwc(n, c, h, w, b, dt),
                         "pack_nchwc")
    else:
        cp = out[1] * b
        gv = ctx.kernel(("pack_pad", n, c, h, w, b, cp, dt, fill),
                         lambda: klayout.make_pack_channels(n, c, h, w, b, cp, dt, fill), "pack_nchwc")
    return [ctx.call_kernel(gv, args, out, dt)]


@lowers(lay.unpack)
def _unpack(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    n, cb, h, w, b = node.inputs[0].type.shape
    c = node.attrs["channels"]
    dt = tvm_dtype(node.inputs[0].type.dtype)
    if h == w == 1 and c == cb * b:          # (n, c/b, 1, 1, b) already has NCHW element order
        return [relax.op.reshape(args[0], (n, c, h, w))]
    if c == cb * b and ctx.target.kind != "cuda":
        gv = ctx.kernel(("unpack", n, c, h, w, b, dt), lambda: klayout.make_unpack_nchwc(n, c, h, w, b, dt),
                         "unpack_nchwc")
        return [ctx.call_kernel(gv, args, (n, c, h, w), dt)]
    return [ctx.emit_te(klayout.unpack_nchwc_te, args[0], c, name="unpack_nchwc")]


@lowers(lay.unpack_weight)
def _unpack_weight(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    """A packed constant weight read op by op (a body no kernel took): unpacked at compile time."""
    w = node.inputs[0]
    if not w.is_const:
        raise NotImplementedError("layout.unpack_weight of a computed tensor")
    (oihw,) = lay.unpack_weight.reference([np.asarray(w.const)], node.attrs)
    return [relax.const(oihw, tvm_dtype(w.type.dtype))]
