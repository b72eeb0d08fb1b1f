"""Lowering of signal.dft as numpy computes it (compiler.ops.signal): where pocketfft's complex FFT has a
plan, the float operations of compiler.ops.pocketfft as relax operations, each product a kernel that rounds
it (TVM would fuse it into an FMA); else one matmul of the flattened (samples, parts) with the op's constant
twiddle matrix (compiler.ops.signal.dft_matrix). Either runs in numpy's precision (signal.dft_precision)
and is rounded to the reference's, then to the output type."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tvm import relax, te, tirx

from compiler.backends.tvm_cuda_source import IEEE_OPS
from compiler.backends.tvm_kernels.common import OP_PATTERN_OPAQUE
from compiler.backends.tvm_lower.registry import LowerCtx, const, dtype_of, lowers, shape_of
from compiler.ir import Node
from compiler.ops import signal

R = relax.op


class _RelaxFFTOps:
    """compiler.ops.pocketfft.FFTOps as relax operations, each bound as it is made."""

    def __init__(self, ctx: LowerCtx) -> None:
        self.ctx = ctx

    def _axis(self, x: relax.Expr, axis: int) -> int:
        return axis % len(shape_of(x))

    def _ieee(self, dt: str) -> bool:
        """Whether float operations of `dt` must be IEEE_OPS's: float32 in a cuda build (TVM's nvcc runs
        with --use_fast_math, which flushes subnormal operands and results of float32 arithmetic to zero)."""
        return self.ctx.target.kind == "cuda" and not self.ctx.unscheduled and dt == "float32"

    def _elementwise(self, op: str, a: relax.Expr, b: relax.Expr) -> relax.Expr:
        """a op b as one IEEE operation per element, an elementwise kernel that FuseOps fuses with the
        slices and concatenations around it as it would R.add."""
        return self.ctx.emit_te(lambda x, y: _rounded(op, x, y, True), a, b, name=f"fft_{op}")

    def add(self, a: relax.Expr, b: relax.Expr) -> relax.Expr:
        return self._elementwise("add", a, b) if self._ieee(dtype_of(a)) else self.ctx.emit(R.add(a, b))

    def sub(self, a: relax.Expr, b: relax.Expr) -> relax.Expr:
        return self._elementwise("sub", a, b) if self._ieee(dtype_of(a)) else self.ctx.emit(R.subtract(a, b))

    def mul(self, x: relax.Expr, c: np.ndarray) -> relax.Expr:
        """x * c, each product rounded before anything adds to it: pocketfft's (and numpy's) products are
        not fused into the sums that read them, and TVM's LLVM and CUDA code generation contract a * b + c
        to an FMA. A product by 0 or +-1 is exact, and a contraction of it changes nothing (on cuda in
        float32 it is IEEE_OPS's multiplication all the same, which keeps a subnormal x). The rounded
        products are a kernel of their own, opaque to FuseOps: fused with the add / sub / slice network of
        the passes around them, every output's expression would be inlined as a tree (compute_inline),
        whose size grows with each pass."""
        dt = dtype_of(x)
        cc = const(c, dt)
        if np.all(np.isin(np.abs(c), (0.0, 1.0))):
            return self._elementwise("mul", x, cc) if self._ieee(dt) else self.ctx.emit(R.multiply(x, cc))
        xs, cs = shape_of(x), tuple(int(d) for d in c.shape)
        out = tuple(np.broadcast_shapes(xs, cs))
        cuda = self.ctx.target.kind == "cuda" and not self.ctx.unscheduled      # else compiled for the CPU

        def make() -> tirx.PrimFunc:
            xt, ct = te.placeholder(xs, dt, "x"), te.placeholder(cs, dt, "c")
            func = te.create_prim_func([xt, ct, _rounded("mul", xt, ct, cuda)])
            return func.with_attr("op_pattern", OP_PATTERN_OPAQUE)
        gv = self.ctx.kernel(("signal.fft_mul", xs, cs, dt, cuda), make, "fft_mul")
        return self.ctx.call_kernel(gv, [x, cc], out, dt)

    def rounded(self, xs: list[relax.Expr]) -> list[relax.Expr]:
        return xs                   # `mul` already rounds each product

    def slice(self, x: relax.Expr, axis: int, start: int, stop: int) -> relax.Expr:
        return self.ctx.emit(R.strided_slice(x, [self._axis(x, axis)], [start], [stop]))

    def flip(self, x: relax.Expr, axis: int) -> relax.Expr:
        return self.ctx.emit(R.flip(x, self._axis(x, axis)))

    def concat(self, xs: Sequence[relax.Expr], axis: int) -> relax.Expr:
        return self.ctx.emit(R.concat(list(xs), self._axis(xs[0], axis)))

    def transpose(self, x: relax.Expr, perm: Sequence[int]) -> relax.Expr:
        return self.ctx.emit(R.permute_dims(x, list(perm)))

    def reshape(self, x: relax.Expr, shape: Sequence[int]) -> relax.Expr:
        return self.ctx.reshape(x, shape)

    def shape(self, x: relax.Expr) -> tuple[int, ...]:
        return shape_of(x)

    def cast(self, x: relax.Expr, dtype: np.dtype) -> relax.Expr:
        dt = np.dtype(dtype).name
        return x if dtype_of(x) == dt else self.ctx.emit(R.astype(x, dt))

    def pad(self, x: relax.Expr, axis: int, after: int) -> relax.Expr:
        width = [0] * (2 * len(shape_of(x)))
        width[2 * self._axis(x, axis) + 1] = after
        return self.ctx.emit(R.nn.pad(x, width, "constant", 0.0))


def _rounded(op: str, x: te.Tensor, c: te.Tensor, cuda: bool) -> te.Tensor:
    """x op c (op "mul", "add" or "sub"; numpy broadcasting), each a single rounded float operation that no
    contraction reaches. On cuda a float32 one is IEEE_OPS's (TVM's nvcc runs with --use_fast_math, under
    which even __fmul_rn / __fadd_rn flush subnormals to zero), a float64 one CUDA's __dmul_rn / __dadd_rn /
    __dsub_rn; on the CPU (products only) the product stands behind llvm.arithmetic.fence."""
    xs, cs = [int(d) for d in x.shape], [int(d) for d in c.shape]
    out = tuple(np.broadcast_shapes(tuple(xs), tuple(cs)))
    dt = x.dtype

    def at(t: te.Tensor, shape: list[int], i: tuple) -> tirx.PrimExpr:
        i = i[len(i) - len(shape):]
        return t(*[0 if d == 1 else v for d, v in zip(shape, i)])

    def body(*i):
        a, b = at(x, xs, i), at(c, cs, i)
        if cuda:
            name = f"__d{op}_rn" if dt == "float64" else IEEE_OPS[op]
            return tirx.call_pure_extern(dt, name, a, b)
        assert op == "mul", op          # on the CPU only products need it: LLVM does not contract a sum
        return tirx.call_llvm_pure_intrin(dt, "llvm.arithmetic.fence", a * b)
    return te.compute(out, body, name=f"fft_{op}")


@lowers(signal.dft)
def lower_dft(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    (x,) = args
    dims, dt = shape_of(x), dtype_of(x)
    length, inverse, onesided = node.attrs["length"], node.attrs["inverse"], node.attrs["onesided"]
    ops = _RelaxFFTOps(ctx)
    in_dtype = node.inputs[0].type.dtype.numpy
    if signal.fft_planned(length, inverse, onesided):
        y = signal.dft_by_fft(ops, x, dims, in_dtype, length, inverse, onesided)
    else:
        compute, result = signal.dft_precision(in_dtype, dims[-1], inverse)
        mat = signal.dft_matrix(dims[-2], dims[-1], length, inverse, onesided)
        flat = ops.cast(ctx.emit(R.reshape(x, dims[:-2] + (dims[-2] * dims[-1],))), compute)
        y = ops.cast(ctx.emit(R.matmul(flat, const(mat, compute.name))), result)
    y = ctx.emit(R.reshape(y, node.outputs[0].type.shape))
    return [y if dtype_of(y) == dt else R.astype(y, dt)]
