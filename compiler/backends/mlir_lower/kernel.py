"""The MLIR lowering of a fused kernel: its body, op by op, in place. IREE then forms its own
dispatch regions; the body's ops are exactly the ones our fusion pass grouped."""
from __future__ import annotations

from iree.compiler import ir

from compiler.backends.mlir_lower.registry import LowerCtx, lower_nodes, lowers, read
from compiler.ir import Node
from compiler.ops import kernel


@lowers(kernel.fused)
def _fused(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    body = node.attrs["body"]
    env = {id(v): a for v, a in zip(body.inputs, args)}
    lower_nodes(ctx, body.nodes, env)
    return [read(ctx, env, v) for v in body.outputs]
