"""Lowering of signal.dft: one matmul of the flattened (samples, parts) with the op's constant twiddle
matrix (compiler.ops.signal.dft_matrix), float16 and bfloat16 computed in float32."""
from __future__ import annotations

from tvm import relax

from compiler.backends.tvm_lower.registry import LowerCtx, const, dtype_of, lowers, shape_of
from compiler.ir import Node
from compiler.ops import signal

R = relax.op


@lowers(signal.dft)
def lower_dft(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    (x,) = args
    dims, dt = shape_of(x), dtype_of(x)
    acc = dt if dt in ("float32", "float64") else "float32"
    mat = signal.dft_matrix(dims[-2], dims[-1], node.attrs["length"], node.attrs["inverse"],
                            node.attrs["onesided"])
    flat = ctx.emit(R.reshape(x, dims[:-2] + (dims[-2] * dims[-1],)))
    if acc != dt:
        flat = ctx.emit(R.astype(flat, acc))
    y = ctx.emit(R.matmul(flat, const(mat, acc)))
    if acc != dt:
        y = ctx.emit(R.astype(y, dt))
    return [R.reshape(y, node.outputs[0].type.shape)]
