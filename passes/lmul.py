"""lmul_attention (`compile(..., lmul="attention")`): attention's two matmuls multiply by L-Mul, one
integer add per product (compiler/ops/lmul.py); every other matmul of the model keeps float multiplies.

    matmul(q, kT) -> [scale] -> [mask] -> softmax -> matmul(., v)
      => lmul.matmul(q, kT) -> [scale] -> [mask] -> softmax -> lmul.matmul(., v)

    k.fused{kernel = "attention", body = that chain}
      => k.fused{kernel = "lmul_attention", body = the chain with both matmuls lmul.matmul, tile = ()}

"Attention" is what fuse_attention fuses (passes.einsum.find_chains), so both passes agree on it.

Why after fuse_attention, rewriting inside the fused body (rather than before fusion): the fused node's
meaning is its body, so rewriting the body keeps the attention one unit of the IR without teaching
fuse_attention a second matmul flavour, and the pass gives the same result whether or not the
target's pipeline fused (the GPU and MLIR pipelines do not run fuse_attention; there the chain is
rewritten in place). The kernel name changes because the one-pass attention kernel multiplies in
float: no backend has an L-Mul one-pass kernel yet, so backends lower an "lmul_attention" body op by op
(scores materialized, as unfused), and the einsum report does not count it as a 1-pass cascade. An
L-Mul attention kernel would register under that name without touching this pass.
"""
from __future__ import annotations

from compiler.ir import Graph, Node
from compiler.ops import kernel, linalg, lmul
from passes.base import register_pass
from passes.einsum import KERNEL as ATTENTION
from passes.einsum import find_chains

LMUL_KERNEL = "lmul_attention"
DTYPE = "f32"
MANTISSA_BITS = 3          # the paper's 3-bit form; see tests/passes/test_lmul.py for its accuracy


def _to_lmul(n: Node, dtype: str, mantissa_bits: int) -> Node:
    attrs = lmul.matmul.complete_attrs({"dtype": dtype, "mantissa_bits": mantissa_bits})
    lmul.matmul.infer([v.type for v in n.inputs], attrs)      # the op's type rule checks the form
    return Node(lmul.matmul, n.inputs, attrs, n.outputs, n.name, n.loc)


def _rewrite_chains(g: Graph, dtype: str, mantissa_bits: int) -> int:
    """Rewrite, in place, the matmuls of every attention chain of g (a graph this pass owns)."""
    targets = {id(n) for ch in find_chains(g) for n in ch.nodes if n.op is linalg.matmul}
    g.nodes = [_to_lmul(n, dtype, mantissa_bits) if id(n) in targets else n for n in g.nodes]
    return len(targets)


def rewrite_attention(g: Graph, dtype: str = DTYPE, mantissa_bits: int = MANTISSA_BITS) -> Graph:
    """g with attention's matmuls as lmul.matmul of the given form, fused or not (module docstring)."""
    g = g.clone()
    _rewrite_chains(g, dtype, mantissa_bits)
    for i, n in enumerate(g.nodes):
        if n.op is kernel.fused and n.attrs["kernel"] == ATTENTION:
            body = n.attrs["body"].clone()          # bodies are shared with the input graph
            if _rewrite_chains(body, dtype, mantissa_bits) == 2:
                g.nodes[i] = Node(kernel.fused, n.inputs,
                                  {**n.attrs, "kernel": LMUL_KERNEL, "body": body, "tile": ()},
                                  n.outputs, n.name, n.loc)
    return g


@register_pass("lmul_attention")
def lmul_attention(g: Graph) -> Graph:
    """Attention's matmuls (Q K^T, P V; fused or not) -> lmul.matmul, 3-bit mantissa L-Mul."""
    return rewrite_attention(g)
