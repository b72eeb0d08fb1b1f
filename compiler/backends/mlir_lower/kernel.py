"""The MLIR lowering of a fused kernel. A fused attention is one `iree_linalg_ext.attention` where the op
can state its body (attention.py); every other fused kernel is its body, op by op, in place: IREE then forms
its own dispatch regions, and the body's ops are exactly the ones our fusion pass grouped."""
from __future__ import annotations

from iree.compiler import ir

from compiler.backends.base import NotFusable
from compiler.backends.mlir_lower.attention import lower_attention
from compiler.backends.mlir_lower.linalg import fenced_convs
from compiler.backends.mlir_lower.registry import LowerCtx, lower_nodes, lowers, read
from compiler.ir import Node
from compiler.ops import kernel
from passes.einsum import KERNEL as ATTENTION


@lowers(kernel.fused)
def _fused(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    if node.attrs["kernel"] == ATTENTION:
        try:
            return lower_attention(ctx, node, args)
        except NotFusable:
            pass
    body = node.attrs["body"]
    env = {id(v): a for v, a in zip(body.inputs, args)}
    lower_nodes(ctx, body.nodes, env, fenced_convs(ctx, body.nodes))
    return [read(ctx, env, v) for v in body.outputs]
