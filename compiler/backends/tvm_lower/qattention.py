"""Lowering of q.attention (compiler/ops/qattention.py): our one-pass integer kernel, on llvm targets
tvm_kernels/qattention.py, on cuda tvm_kernels/cuda_qattention.py (its serial CPU form when the GPU program
is built unscheduled); the batch dimensions flattened into one, a keep mask
broadcast only along the batch dimensions it does not already span."""
from __future__ import annotations

import math

from tvm import relax

from compiler.backends.tvm_kernels import cuda_qattention
from compiler.backends.tvm_kernels import qattention as kq
from compiler.backends.tvm_lower.registry import LowerCtx, lowers, tvm_dtype
from compiler.diagnostics import Unsupported
from compiler.ir import Node
from compiler.ops import ivit, qattention
from passes.einsum import default_tile


def _keep_arg(ctx: LowerCtx, node: Node, arg: relax.Expr, bh: int, lq: int, lk: int):
    """(the keep mask as (1 or bh, 1 or lq, lk), its batch, its rows)."""
    batch = tuple(node.inputs[0].type.shape[:-2])
    ms = (1,) * (len(batch) + 2 - node.inputs[3].type.rank) + tuple(node.inputs[3].type.shape)
    *mbatch, mrows, mcols = ms
    full = tuple(mbatch) + (mrows, lk)
    if mcols != lk:
        arg = ctx.bb.emit(relax.op.broadcast_to(ctx.reshape(arg, ms), full))
    nb = math.prod(mbatch)
    if nb not in (1, bh) or (nb == bh and tuple(mbatch) != batch):
        arg = ctx.bb.emit(relax.op.broadcast_to(ctx.reshape(arg, full), batch + (mrows, lk)))
        nb = bh
    return ctx.reshape(arg, (nb, mrows, lk)), nb, mrows


@lowers(qattention.attention)
def _attention(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    if ctx.target.kind not in ("llvm", "cuda"):
        raise Unsupported(f"q.attention ({node.name}) has a kernel for llvm and cuda targets only")
    cuda = ctx.target.kind == "cuda"
    q, k, v = (x.type for x in node.inputs[:3])
    *batch, lq, d = q.shape
    lk, dv = v.shape[-2:]
    bh = math.prod(batch)
    a = node.attrs
    if len(args) == 4:
        keep, mb, mr = _keep_arg(ctx, node, args[3], bh, lq, lk)
    else:
        keep, mb, mr = relax.const(True, "bool"), 0, 0
        keep = ctx.bb.emit(relax.op.broadcast_to(keep, (1, 1, lk)))
    out_dtype = tvm_dtype(node.outputs[0].type.dtype)
    tq = cuda_qattention.queries(lq, d, dv) if cuda else default_tile(lq, lk)[0]
    spec = kq.QAttentionSpec(bh, lq, lk, d, dv, tq, a["block"], a["qk_multiplier"],
                             a["qk_shift"], a["qk_qmin"], a["qk_qmax"], a["fill"], ivit.exp_unit(a["scale"]),
                             a["n"], a["multiplier"], a["shift"], a["zero_point"], a["qmin"], a["qmax"],
                             out_dtype, mb, mr)
    if cuda:
        gpu = not ctx.unscheduled
        gv = ctx.kernel(("cuda_qattention", spec, gpu), lambda: cuda_qattention.make_cuda_qattention(spec, gpu),
                        "qattention")
    else:
        gv = ctx.kernel(("qattention", spec), lambda: kq.make_qattention(spec), "qattention")
    ins = [ctx.reshape(args[0], (bh, lq, d)), ctx.reshape(args[1], (bh, lk, d)),
           ctx.reshape(args[2], (bh, lk, dv)), keep]
    out = ctx.call_kernel(gv, ins, (bh, lq, dv), out_dtype)
    return [ctx.reshape(out, node.outputs[0].type.shape)]
