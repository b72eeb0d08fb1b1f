"""Lowering of signal.dft: one matmul of the flattened (samples, parts) with the op's constant twiddle
matrix (compiler.ops.signal.dft_matrix)."""
from __future__ import annotations

from iree.compiler import ir

from compiler.backends.mlir_lower.linalg import matmul
from compiler.backends.mlir_lower.registry import LowerCtx, elem_type, lowers, shape_of
from compiler.ir import Node
from compiler.ops import signal


@lowers(signal.dft)
def _dft(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    (x,) = args
    dims, t = shape_of(x), node.outputs[0].type
    mat = signal.dft_matrix(dims[-2], dims[-1], node.attrs["length"], node.attrs["inverse"],
                            node.attrs["onesided"])
    flat = ctx.reshape(x, dims[:-2] + (dims[-2] * dims[-1],))
    y = matmul(ctx, flat, ctx.const(mat.astype(t.dtype.numpy), t.dtype), dims[:-2] + (mat.shape[1],),
               elem_type(t.dtype))
    return [ctx.reshape(y, t.shape)]
