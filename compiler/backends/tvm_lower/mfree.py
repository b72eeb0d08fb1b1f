"""Lowering of the multiplication-free attention (compiler/ops/mfree.py): the leading (batch, head) dims
flattened, then our CPU kernel (tvm_kernels/binary_attention.py), bit-exact with the reference."""
from __future__ import annotations

import math

from tvm import relax

from compiler.backends.tvm_kernels.binary_attention import BinaryAttentionSpec, make_binary_attention
from compiler.backends.tvm_lower.registry import LowerCtx, lowers
from compiler.diagnostics import Unsupported
from compiler.ir import Node
from compiler.ops import mfree


@lowers(mfree.binary_attention)
def _binary_attention(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    if ctx.target.kind != "llvm":
        raise Unsupported(f"tvm: mfree.binary_attention has a CPU kernel only, not one for {ctx.target.kind}")
    q, k, v = (x.type.shape for x in node.inputs)
    bh = math.prod(q[:-2])
    spec = BinaryAttentionSpec(bh, q[-2], k[-2], q[-1], v[-1])
    flat = [ctx.reshape(a, (bh,) + tuple(s[-2:])) for a, s in zip(args, (q, k, v))]
    gv = ctx.kernel(("binary_attention", spec), lambda: make_binary_attention(spec), "binary_attention")
    out = ctx.call_kernel(gv, flat, (bh, spec.lq, spec.dv))
    return [ctx.reshape(out, node.outputs[0].type.shape)]
