"""assign_inplace: which fused kernels may write their result into an operand's buffer.

A kernel whose output has the shape and dtype (blocked shapes included; quantization parameters may
differ, they do not change the bytes) of one of its operands, where that operand dies at this kernel (no node after it reads the operand), can write its result over the operand: a conv
with a residual add reads residual[i] and writes out[i] at the same index, so one buffer serves both.
That saves the output's allocation and, more to the point, a stream of memory traffic: the kernel reads
and writes the same cache lines instead of reading one tensor and filling another.

Only an operand the body reads elementwise qualifies (an epilogue operand such as the residual, possibly
through `layout.unpack`): the anchor reads its input at other indices (a 3x3 window), so writing over it
would be wrong. The operand must also be a kernel's own fresh result: not a graph input or output (the caller's tensors), not a
constant, and not produced by a view op (a reshape's result shares its source's buffer, which may still
be live). The rule is the IR's; the backend decides whether its kernel can honour it (the attribute is a
permission, not an obligation) and the meaning of the graph does not change.
"""
from __future__ import annotations

from compiler.ir import Graph, Node, Value
from compiler.ops import kernel, layout
from passes.base import PassContext, register_pass
from passes.fusion import ELEMENTWISE


def _read_elementwise(body: Graph, v: Value) -> bool:
    """Every read of `v` in `body` is by an elementwise op, directly or through layout.unpack."""
    users = body.uses().get(v, [])
    for n, _ in users:
        if n.op is layout.unpack:
            if not _read_elementwise(body, n.outputs[0]):
                return False
        elif n.op not in ELEMENTWISE:
            return False
    return bool(users)


def inplace_operand(n: Node, last_use: dict[int, Node], outputs: set[int]) -> int:
    """The index of the operand `n` may overwrite with its result, or -1."""
    out = n.outputs[0]
    if len(n.outputs) != 1 or id(out) in outputs:
        return -1
    for i, v in enumerate(n.inputs):
        if v.is_const or v.producer is None or v.producer.op is not kernel.fused or id(v) in outputs:
            continue
        same_buffer = (v.type.shape, v.type.dtype) == (out.type.shape, out.type.dtype)
        if not same_buffer or last_use.get(id(v)) is not n or n.inputs.count(v) != 1:
            continue
        if _read_elementwise(n.attrs["body"], n.attrs["body"].inputs[i]):
            return i
    return -1


@register_pass("assign_inplace")
def assign_inplace(g: Graph, ctx: PassContext) -> Graph:
    """Sets `inplace` on each fused kernel with an operand that dies there and has its result's type."""
    g = g.clone()
    last_use = {id(v): n for n in g.nodes for v in n.inputs}   # node order is execution order
    outputs = {id(v) for v in g.outputs}
    for i, n in enumerate(g.nodes):
        if n.op is not kernel.fused or n.attrs["inplace"] >= 0:
            continue
        k = inplace_operand(n, last_use, outputs)
        if k >= 0:
            g.nodes[i] = Node(n.op, n.inputs, {**n.attrs, "inplace": k}, n.outputs, n.name, n.loc)
    return g
