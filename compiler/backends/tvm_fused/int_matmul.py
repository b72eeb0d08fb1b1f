"""The integer matmul kernels of fused nodes: by a constant weight (the VNNI or AMX matmul, or the int4 one), and
of two activations (the batched VNNI or AMX matmul, attention's Q K^T and P V). AMX where the target CPU has
AMX-INT8 and the shape fits (compiler/backends/tvm_kernels/amx.py), decided by the plans; the IR's
tile (the tile pass's, through kernel_spec) is then a block of (16-row tiles, 16-column blocks)."""
from __future__ import annotations

import dataclasses

import numpy as np
from tvm import relax

from compiler.backends.tvm_fused import emit, int4
from compiler.backends.tvm_fused.body import KernelBody, NotFusable
from compiler.backends.tvm_fused.integer import (I32_RANGE, INT_ACT, INT_DATA, channel_axis_ok, has_amx,
                                                 per_tensor_requant, realization, requant_of, shift_terms, weight_of)
from compiler.backends.tvm_kernels import qbmm as kqb
from compiler.backends.tvm_kernels import qmatmul as kqm
from compiler.backends.tvm_kernels import shiftadd as ksa
from compiler.backends.tvm_lower.registry import LowerCtx, tvm_dtype
from compiler.target import Target
from compiler.ops import elementwise as ew
from compiler.ops import layout as lay, quant as q, shape
from compiler.types import DType


def qmatmul_plan(kb: KernelBody, target: Target | None = None):
    """(spec, bias vector, requant node, A operand) of q.matmul(x, W constant) [+ int32 bias constant]
    [q.requant along the last axis]. On an AMX `target` the spec says amx where the AMX kernel takes the layer
    (int8 weights on the VNNI-form kernel, not the int4 or shift-and-add ones; a shape amx_fits)."""
    mm = kb.anchor
    a_v, b_v = mm.inputs
    at = mm.attrs
    ai = kb.operand_of(a_v)
    wide = a_v.type.dtype is DType.I16          # int16 activations (QuantConfig.keep_16bit): vpdpwssd
    if ai is None or a_v.type.dtype not in INT_DATA or a_v.type.rank < 2 or b_v.type.rank != 2 or \
            not (abs(at["a_zero_point"]) < 2**15 if wide else
                 0 <= at["a_zero_point"] + (128 if a_v.type.dtype is DType.I8 else 0) <= 255) or \
            not lay.is_const_weight(b_v) or not kqm.weight_fits(weight_of(b_v)[0], at["b_zero_point"]):
        raise NotFusable("not a VNNI matmul")
    k, n_ = b_v.type.shape
    rows = int(np.prod(a_v.type.shape[:-1]))
    epi = list(kb.epilogue)
    bias = None
    if epi and epi[0].op is ew.add:
        add = epi.pop(0)
        other = next(v for v in add.inputs if v.is_const)
        if other.type.dtype is not DType.I32 or other.type.size != n_ or other.type.shape[-1] != n_:
            raise NotFusable("a bias that is not int32 along the last axis")
        bias = np.asarray(other.const).reshape(n_)
    rq_n = epi.pop(0) if epi and epi[0].op is q.requant else None
    if epi or (rq_n is not None and not channel_axis_ok(rq_n, mm.outputs[0].type.rank, -1)):
        raise NotFusable("an epilogue the VNNI matmul has no slot for")
    terms, zp = shift_terms(mm), at["b_zero_point"]
    plain = not terms and not int4.takes(kb, weight_of(b_v)[0], zp, terms)     # the VNNI / AMX kernel
    if wide and not plain:
        raise NotFusable("the int4 and shift-and-add matmuls read 8-bit activations")
    rq = requant_of(rq_n, I32_RANGE)
    if rq is not None and not plain:        # the int4 and shift-and-add kernels evaluate the int64 form
        rq = dataclasses.replace(rq, form="i64")
    spec = kqm.QMatmulSpec(rows, k, n_, tvm_dtype(a_v.type.dtype), at["a_zero_point"], rq)
    if plain and not wide and has_amx(target) and kqm.amx_fits(rows, spec.kp, n_):
        spec = dataclasses.replace(spec, amx=True)
    return spec, bias, rq_n, ai


def emit_qmatmul(ctx: LowerCtx, kb: KernelBody, args: list[relax.Expr]) -> relax.Expr:
    """The VNNI matmul for a constant weight; activations x activations go to the batched kernel."""
    if not lay.is_const_weight(kb.anchor.inputs[1]):
        return _emit_qbmm(ctx, kb, args)
    spec, bias, rq_n, ai = qmatmul_plan(kb, ctx.target)
    rq, rows, k = spec.rq, spec.m, spec.k
    (w, packed), terms = weight_of(kb.anchor.inputs[1]), shift_terms(kb.anchor)
    zp = kb.anchor.attrs["b_zero_point"]
    if int4.takes(kb, w, zp, terms):
        return int4.emit(ctx, kb, args, spec, bias, rq_n, ai, w, packed, zp)
    wp, bp, make, name = realization(ksa.matmul_realization, spec, w, zp, bias, terms)
    if packed is not None and not terms and packed.shape == wp.shape:
        wp = packed                        # the IR's packed constant (passes/weights.py), as is
    call_args = [ctx.reshape(args[ai], (rows, k)), relax.const(wp, str(wp.dtype)), relax.const(bp, "int32")]
    if rq is not None:
        table = kqm.pack_requant(rq_n.attrs["multiplier"], rq_n.attrs["shift"], spec)
        call_args.append(relax.const(table, str(table.dtype)))
    tile = tuple(kb.node.attrs["tile"]) or None      # on AMX: (16-row tiles, 16-column blocks) per block
    gv = ctx.kernel(("qmatmul", spec, tile, terms), lambda: emit.tiled(make, tile),
                    name.replace("vnni", "amx") if spec.amx else name)
    y = ctx.call_kernel(gv, call_args, kqm.out_shape(spec), spec.out_dtype)
    if spec.np_ != spec.n:
        y = ctx.bb.emit(relax.op.strided_slice(y, axes=[1], begin=[0], end=[spec.n]))
    return ctx.reshape(y, kb.result.type.shape)


def qbmm_plan(kb: KernelBody, target: Target | None = None):
    """(spec, A operand, B operand) of an activation x activation q.matmul [per-tensor requant]; amx on an AMX
    `target` where the shape fits."""
    mm = kb.anchor
    a_v, b_v = mm.inputs
    at = mm.attrs
    src, transpose_b = b_v, False
    t = b_v.producer
    if t is not None and t.op is shape.transpose and any(t is p for p in kb.prologue):
        src, transpose_b = t.inputs[0], True
    ai, bi = kb.operand_of(a_v), kb.operand_of(src)
    if ai is None or bi is None or a_v.type.dtype not in INT_ACT or b_v.type.dtype not in INT_ACT or \
            a_v.type.rank < 2 or a_v.type.rank != b_v.type.rank or a_v.type.shape[:-2] != b_v.type.shape[:-2] or \
            not kqb.b_fits(tvm_dtype(b_v.type.dtype), at["b_zero_point"]):
        raise NotFusable("not a VNNI batched matmul")
    rq, m_, c_ = per_tensor_requant(kb)
    m, k = a_v.type.shape[-2:]
    try:
        spec = kqb.QBmmSpec(int(np.prod(a_v.type.shape[:-2], dtype=np.int64)), m, k, b_v.type.shape[-1],
                            tvm_dtype(a_v.type.dtype), at["a_zero_point"], tvm_dtype(b_v.type.dtype),
                            at["b_zero_point"], transpose_b, rq, m_, c_)
    except ValueError as e:
        raise NotFusable(str(e)) from None
    if has_amx(target) and kqb.amx_fits(spec.m, spec.k, spec.n):
        spec = dataclasses.replace(spec, amx=True)
    return spec, ai, bi


def _emit_qbmm(ctx: LowerCtx, kb: KernelBody, args: list[relax.Expr]) -> relax.Expr:
    spec, ai, bi = qbmm_plan(kb, ctx.target)
    a = ctx.reshape(args[ai], (spec.bsz, spec.m, spec.k))
    b = ctx.reshape(args[bi], spec.b_shape)
    pack = ctx.kernel(("qbmm_pack", spec), lambda: kqb.make_pack(spec), "qbmm_pack")
    pb = ctx.bb.emit(relax.call_tir(pack, [b], [relax.TensorType(kqb.panel_shape(spec), "int8"),
                                                 relax.TensorType((spec.bsz, spec.n), "int32")]))
    panel, bias = (ctx.bb.emit(relax.TupleGetItem(pb, i)) for i in range(2))
    tile = tuple(kb.node.attrs["tile"]) or None
    gv = ctx.kernel(("qbmm", spec, tile), lambda: emit.tiled(lambda t: kqb.make_qbmm(spec, t), tile),
                     "qbmm_amx" if spec.amx else "qbmm_vnni")
    y = ctx.call_kernel(gv, [a, panel, bias], kqb.out_shape(spec), spec.out_dtype)
    return ctx.reshape(y, kb.result.type.shape)
