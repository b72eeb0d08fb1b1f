"""The MLIR lowering of a fused kernel: its body, op by op, in place. IREE then forms its own
dispatch regions; the body's ops are exactly the ones our fusion pass grouped."""
from __future__ import annotations

from iree.compiler import ir

from compiler.backends.mlir_lower.registry import LOWERINGS, LowerCtx, lowers
from compiler.ir import Node
from compiler.ops import kernel


@lowers(kernel.fused)
def _fused(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    body = node.attrs["body"]
    env = {id(v): a for v, a in zip(body.inputs, args)}

    def read(v):
        if id(v) not in env:
            env[id(v)] = ctx.const(v.const, v.type.dtype)
        return env[id(v)]
    for n in body.nodes:
        for v, o in zip(n.outputs, LOWERINGS[n.op](ctx, n, [read(v) for v in n.inputs])):
            env[id(v)] = o
    return [read(v) for v in body.outputs]
