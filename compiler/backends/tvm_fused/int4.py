"""A q.matmul kernel whose constant weight is int4 (DType.I4: `--quantize mixed`'s 4-bit layers, or
weight_bits=4) runs the int4 VNNI matmul (tvm_kernels/qmatmul_int4.py): the weight stays two values per
byte in memory (passes/weights.py packs it as vnni_matmul_int4, half the int8 bytes) and is unpacked in
registers, so a memory-bound batch-1 linear layer streams half the bytes. Same bias and fused requant as
the int8 VNNI matmul (tvm_fused/integer.py), bit-exact with the op's reference."""
from __future__ import annotations

import numpy as np
from tvm import relax

from compiler.backends.tvm_fused.body import KernelBody
from compiler.backends.tvm_kernels import qmatmul as kqm
from compiler.backends.tvm_kernels import qmatmul_int4 as kqm4
from compiler.backends.tvm_lower.registry import LowerCtx
from compiler.types import DType


def takes(kb: KernelBody, w: np.ndarray, zp: int, terms) -> bool:
    """Whether the int4 kernel runs this matmul: an int4 weight that fits after its zero point, no shift/add
    realization, and a reduction short enough for the kernel's 16x accumulator."""
    return kb.anchor.inputs[1].type.dtype is DType.I4 and not terms and kqm4.weight_fits_int4(w, zp) and \
        kb.anchor.inputs[1].type.shape[0] <= kqm4.MAX_KP


def emit(ctx: LowerCtx, kb: KernelBody, args: list[relax.Expr], spec: kqm.QMatmulSpec, bias, rq_n, ai: int,
         w: np.ndarray, packed: np.ndarray | None, zp: int) -> relax.Expr:
    s4 = kqm4.QMatmulInt4Spec(spec.m, spec.k, spec.n, spec.a_dtype, spec.a_zp, spec.rq)
    if packed is None or packed.dtype != np.uint8 or zp != 0:
        packed = kqm4.pack_weight_int4(s4, w, zp)
    call_args = [ctx.reshape(args[ai], (s4.m, s4.k)), relax.const(packed, "uint8"),
                 relax.const(kqm4.pack_bias(s4, w, zp, bias), "int32")]
    if s4.rq is not None:
        call_args.append(relax.const(kqm4.pack_requant(rq_n.attrs["multiplier"], rq_n.attrs["shift"], s4), "int64"))
    gv = ctx.kernel(("qmatmul_int4", s4), lambda: kqm4.make_qmatmul_int4(s4), "qmatmul_int4")
    y = ctx.call_kernel(gv, call_args, kqm4.out_shape(s4), s4.out_dtype)
    if s4.np_ != s4.n:
        y = ctx.bb.emit(relax.op.strided_slice(y, axes=[1], begin=[0], end=[s4.n]))
    return ctx.reshape(y, kb.result.type.shape)
