"""Lowering of signal.dft as numpy computes it (compiler.ops.signal): where pocketfft's complex FFT has a
plan, the float operations of compiler.ops.pocketfft as linalg / tensor operations, its products stored by
dispatches of their own (IREE would fuse them into FMAs); else one matmul of the flattened (samples, parts)
with the op's constant twiddle matrix (compiler.ops.signal.dft_matrix). Either runs in numpy's precision
(signal.dft_precision) and is rounded to the reference's, then to the output type."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from iree.compiler import ir
from iree.compiler.dialects import arith, linalg, tensor, util

from compiler.backends.mlir_lower.casts import cast_scalar
from compiler.backends.mlir_lower.linalg import matmul, pad_constant
from compiler.backends.mlir_lower.registry import (
    LowerCtx,
    as_value,
    elem_of,
    elem_type,
    lowers,
    shape_of,
    tensor_type,
)
from compiler.ir import Node
from compiler.ops import signal
from compiler.types import DType


class _MlirFFTOps:
    """compiler.ops.pocketfft.FFTOps as linalg / tensor operations on float32 or float64 tensors."""

    def __init__(self, ctx: LowerCtx, dtype: DType) -> None:
        self.ctx, self.dtype = ctx, dtype        # dtype: the IR type of the operand (before `cast`)

    def dtype_of(self, x: ir.Value) -> DType:
        et = elem_of(x)
        if isinstance(et, ir.F64Type):
            return DType.F64
        if isinstance(et, ir.F32Type):
            return DType.F32
        return self.dtype                        # the operand (float16, or a type carried in an integer)

    def _ewise(self, a: ir.Value, b: ir.Value, fn) -> ir.Value:
        shape = tuple(np.broadcast_shapes(shape_of(a), shape_of(b)))
        return self.ctx.ewise([a, b], shape, elem_of(a), fn)

    def add(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self._ewise(a, b, arith.addf)

    def sub(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self._ewise(a, b, arith.subf)

    def mul(self, x: ir.Value, c: np.ndarray) -> ir.Value:
        return self._ewise(x, self.ctx.const(np.asarray(c), self.dtype_of(x)), arith.mulf)

    def rounded(self, xs: list[ir.Value]) -> list[ir.Value]:
        """The products behind util.optimization_barrier, so that they are stored by the dispatches that make
        them: IREE marks every float operation `contract` (its AddFastMathFlagsPass), and LLVM fuses a
        product and the sum reading it into one FMA within a dispatch, which pocketfft does not."""
        return list(util.optimization_barrier([x.type for x in xs], xs))

    def slice(self, x: ir.Value, axis: int, start: int, stop: int) -> ir.Value:
        shape = list(shape_of(x))
        a = axis % len(shape)
        offsets = [0] * len(shape)
        offsets[a], shape[a] = start, stop - start
        return tensor.extract_slice(tensor_type(shape, elem_of(x)), x, [], [], [], offsets, shape,
                                    [1] * len(shape))

    def flip(self, x: ir.Value, axis: int) -> ir.Value:
        n = shape_of(x)[axis]
        if n == 1:
            return x
        return self.concat([self.slice(x, axis, j, j + 1) for j in reversed(range(n))], axis)

    def concat(self, xs: Sequence[ir.Value], axis: int) -> ir.Value:
        if len(xs) == 1:
            return xs[0]
        shape = list(shape_of(xs[0]))
        a = axis % len(shape)
        shape[a] = sum(shape_of(x)[a] for x in xs)
        return tensor.concat(tensor_type(shape, elem_of(xs[0])), a, list(xs))

    def transpose(self, x: ir.Value, perm: Sequence[int]) -> ir.Value:
        shape = shape_of(x)
        out = self.ctx.empty([shape[p] for p in perm], elem_of(x))
        return as_value(linalg.transpose(x, outs=[out], permutation=list(perm)))

    def reshape(self, x: ir.Value, shape: Sequence[int]) -> ir.Value:
        return self.ctx.reshape(x, shape)

    def shape(self, x: ir.Value) -> tuple[int, ...]:
        return shape_of(x)

    def cast(self, x: ir.Value, dtype: np.dtype) -> ir.Value:
        to, src = DType.from_numpy(np.dtype(dtype)), self.dtype_of(x)
        if src is to:
            return x
        return self.ctx.ewise([x], shape_of(x), elem_type(to), lambda v: cast_scalar(v, src, to))

    def pad(self, x: ir.Value, axis: int, after: int) -> ir.Value:
        r = len(shape_of(x))
        hi = [0] * r
        hi[axis % r] = after
        return pad_constant(self.ctx, x, [0] * r, hi, 0.0)


@lowers(signal.dft)
def _dft(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    (x,) = args
    dims, t = shape_of(x), node.outputs[0].type
    src = node.inputs[0].type.dtype
    length, inverse, onesided = node.attrs["length"], node.attrs["inverse"], node.attrs["onesided"]
    ops = _MlirFFTOps(ctx, src)
    if signal.fft_planned(length, inverse, onesided):
        y = signal.dft_by_fft(ops, x, dims, src.numpy, length, inverse, onesided)
    else:
        compute, result = signal.dft_precision(src.numpy, dims[-1], inverse)
        mat = signal.dft_matrix(dims[-2], dims[-1], length, inverse, onesided)
        flat = ops.cast(ctx.reshape(x, dims[:-2] + (dims[-2] * dims[-1],)), compute)
        cdt = DType.from_numpy(compute)
        y = matmul(ctx, flat, ctx.const(mat.astype(compute), cdt), dims[:-2] + (mat.shape[1],), elem_type(cdt))
        y = ops.cast(y, result)
    y = ctx.reshape(y, t.shape)
    res = ops.dtype_of(y)
    if res is t.dtype:
        return [y]
    return [ctx.ewise([y], t.shape, elem_type(t.dtype), lambda v: cast_scalar(v, res, t.dtype, node))]
