"""Lowering of the multiplication-free attention (compiler/ops/mfree.py): the leading (batch, head) dims
flattened, then our kernel, bit-exact with the reference: on llvm targets the CPU kernel
(tvm_kernels/binary_attention.py), on cuda the two GPU kernels of tvm_kernels/cuda_binary_attention.py (max|V| per
head, then the attention; their serial CPU form when the GPU program is built unscheduled)."""
from __future__ import annotations

import math

from tvm import relax

from compiler.backends.tvm_kernels import cuda_binary_attention as cba
from compiler.backends.tvm_kernels.binary_attention import BinaryAttentionSpec, make_binary_attention
from compiler.backends.tvm_lower.registry import LowerCtx, lowers
from compiler.diagnostics import Unsupported
from compiler.ir import Node
from compiler.ops import mfree


@lowers(mfree.binary_attention)
def _binary_attention(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    if ctx.target.kind not in ("llvm", "cuda"):
        raise Unsupported(f"tvm: mfree.binary_attention has kernels for llvm and cuda, not {ctx.target.kind}")
    q, k, v = (x.type.shape for x in node.inputs)
    bh = math.prod(q[:-2])
    spec = BinaryAttentionSpec(bh, q[-2], k[-2], q[-1], v[-1])
    flat = [ctx.reshape(a, (bh,) + tuple(s[-2:])) for a, s in zip(args, (q, k, v))]
    if ctx.target.kind == "cuda":
        try:
            cba.plan(spec.d, spec.dv)
        except ValueError as e:
            raise Unsupported(f"tvm: mfree.binary_attention ({node.name}) on cuda: {e}") from None
        gpu = not ctx.unscheduled
        n = spec.lk * spec.dv
        gmax = ctx.kernel(("cuda_binary_attention_vmax", bh, n, gpu), lambda: cba.make_cuda_vmax(bh, n, gpu),
                          "binary_attention_vmax")
        part = ctx.call_kernel(gmax, [ctx.reshape(flat[2], (bh, n))], (bh,), "int32")
        gv = ctx.kernel(("cuda_binary_attention", spec, gpu), lambda: cba.make_cuda_binary_attention(spec, gpu),
                        "binary_attention")
        out = ctx.call_kernel(gv, flat + [part], (bh, spec.lq, spec.dv))
    else:
        gv = ctx.kernel(("binary_attention", spec), lambda: make_binary_attention(spec), "binary_attention")
        out = ctx.call_kernel(gv, flat, (bh, spec.lq, spec.dv))
    return [ctx.reshape(out, node.outputs[0].type.shape)]
