"""choose_tiles: each fused kernel's register tile, from the cost model, as the node's `tile` attribute.

The backend describes a kernel (`PassContext.kernel_spec`: node -> the spec its tunable kernel is built
from); `costmodel.policy.choose` ranks that kernel's candidate tiles with the learned model (or the
kernel's own choice where the model has no booster for its kind). Without a backend, tiles stay empty
and each kernel uses its default.
"""
from __future__ import annotations

from compiler.ir import Graph, Node
from compiler.ops import kernel
from passes.base import PassContext, register_pass


def _with_tile(n: Node, tile: tuple[int, ...]) -> Node:
    return Node(n.op, n.inputs, {**n.attrs, "tile": tuple(int(t) for t in tile)}, n.outputs, n.name, n.loc)


@register_pass("choose_tiles")
def choose_tiles(g: Graph, ctx: PassContext) -> Graph:
    """Register tiles of the fused conv / matmul kernels, chosen by the cost model."""
    if ctx.kernel_spec is None:
        return g
    from costmodel import policy
    g = g.clone()
    target = None if ctx.target is None else str(ctx.target)
    for i, n in enumerate(g.nodes):
        if n.op is not kernel.fused or n.attrs["tile"]:
            continue
        spec = ctx.kernel_spec(n)
        if spec is not None:
            tile, _source = policy.choose(spec, target)
            g.nodes[i] = _with_tile(n, tile)
    return g
