"""Integer kernels of fused nodes, bit-exact with the interpreter: the VNNI conv, Shiftmax, the integer global
sum and the quantize kernel (the matmuls: int_matmul.py).

The fusion pass gives these kernels only the epilogue chains their write-back has slots for
(`passes.fusion.CHAINS`); here each chain fills its slots. Every requant is evaluated in the cheapest
form that is exact for the range its input can take (`qconv2d.requant_form`).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from tvm import relax

from compiler.backends.tvm_fused import emit
from compiler.backends.tvm_fused.body import KernelBody, NotFusable
from compiler.backends.tvm_kernels import layout as klayout
from compiler.backends.tvm_kernels import pool as kpool
from compiler.backends.tvm_kernels import qconv2d as kq
from compiler.backends.tvm_kernels import qdepthwise as kdw
from compiler.backends.tvm_kernels import shiftadd as ksa
from compiler.backends.tvm_kernels import shiftmax as ksm
from compiler.backends.tvm_kernels import table as ktable
from compiler.backends.tvm_lower.registry import LowerCtx, tvm_dtype
from compiler.host import cpu_features
from compiler.ir import Node, Value
from compiler.layouts import pack_conv_weight
from compiler.ops import elementwise as ew
from compiler.ops import ivit, layout as lay, quant as q
from compiler.target import Target
from compiler.types import DType

INT_ACT = (DType.I8, DType.U8)
INT_DATA = q.INT_DATA                  # what the VNNI kernels read (int16: QuantConfig.keep_16bit's layers)
I32_RANGE = (-2**31, 2**31 - 1)


def requant_of(n: Node | None, x_range: tuple[int, int]) -> kq.Requant | None:
    """The kernel's Requant of q.requant node n (None: no requant) in the cheapest form exact for inputs in
    x_range."""
    if n is None or n.op is not q.requant:
        return None
    a = n.attrs
    form = kq.requant_form(a["multiplier"], a["shift"], a["in_zero_point"], a["zero_point"], x_range,
                           (a["qmin"], a["qmax"]))
    return kq.Requant(a["in_zero_point"], a["zero_point"], a["qmin"], a["qmax"], tvm_dtype(a["dtype"]), form)


def _rq_const(n: Node, rq: kq.Requant, co: int, cop: int) -> relax.Expr:
    a = n.attrs
    return relax.const(kq.pack_requant(a["multiplier"], a["shift"], co, cop, form=rq.form), kq.requant_dtype(rq))


def shift_terms(anchor: Node) -> int:
    """1 or 2 where passes/shiftadd.py chose the shift-and-add kernel for the layer's power-of-two weights, else
    0 (the VNNI kernel)."""
    return ksa.TERMS.get(anchor.attrs["weight_code"], 0) if anchor.attrs["realization"] == "shift" else 0


def realization(pick, *args):
    try:
        return pick(*args)
    except ValueError as e:
        raise NotFusable(str(e)) from None


def channel_axis_ok(n: Node, rank: int, axis: int) -> bool:
    a = n.attrs
    return len(a["multiplier"]) == 1 or a["axis"] % rank == axis % rank


def weight_of(w: Value) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(plain weight, the IR's packed constant or None) of a conv or matmul: a constant, or
    layout.unpack_weight of a packed constant; None when the weight is computed."""
    if w.is_const:
        return np.asarray(w.const), None
    p = w.producer
    if p is not None and p.op is lay.unpack_weight and p.inputs[0].is_const:
        packed = np.asarray(p.inputs[0].const)
        return lay.unpack_weight.reference([packed], p.attrs)[0], packed
    return None


def has_amx(target: Target | None) -> bool:
    """The target CPU has AMX-INT8 (LLVM's feature list for its -mcpu)."""
    return target is not None and target.kind == "llvm" and "amx-int8" in cpu_features(target.cpu)


def qconv_plan(kb: KernelBody, target: Target | None = None):
    """(spec, (rq1, rq1b, rq2, rq3) nodes, residual operand, data operand) of q.conv [rq1 [rq1b -> int32]
    [add(residual [rq2]) rq3]]. On an AMX `target` the spec says amx where the AMX conv takes the layer
    (qconv2d.amx_module: 3x3 convs on 8-bit or int16 data, 1x1 convs on int16; not the shift-and-add kernel's
    weights)."""
    c = kb.anchor
    x, w = c.inputs[0], c.inputs[1]
    xi = kb.operand_of(x)
    a = c.attrs
    if a["groups"] != 1:
        raise NotFusable("the VNNI conv is not grouped")
    if xi not in kb.blocks or weight_of(w) is None or (len(c.inputs) > 2 and not c.inputs[2].is_const):
        raise NotFusable("the VNNI conv reads blocked data and constant weights")
    n, ci, h, wd = x.type.shape
    co, _, kh, kw = w.type.shape
    epi = list(kb.epilogue)
    if any(not channel_axis_ok(m, 4, 1) for m in epi if m.op is q.requant):
        raise NotFusable("a requant along another axis")
    r1n = epi.pop(0) if epi and epi[0].op is q.requant else None
    rq1 = requant_of(r1n, I32_RANGE)
    r1bn = rq1b = r2n = rq2 = r3n = rq3 = res_dt = res_i = None
    if epi and epi[0].op is q.requant:
        r1bn = epi.pop(0)
        rq1b = requant_of(r1bn, (rq1.qmin, rq1.qmax))
    if epi and epi[0].op is ew.add:
        add = epi.pop(0)
        last = (r1bn or r1n).outputs[0]
        other = add.inputs[1] if add.inputs[0] is last else add.inputs[0]
        r3n = epi.pop(0) if epi else None
        rq3 = requant_of(r3n, I32_RANGE)
        res_i = kb.operand_of(other)
        if res_i is None and other.producer is not None and other.producer.op is q.requant:
            r2n = other.producer
            res_i = kb.operand_of(r2n.inputs[0])
            rt = r2n.inputs[0].type.dtype
            rq2 = requant_of(r2n, I32_RANGE if rt is DType.I32 else q.INT_RANGE[rt])
        if res_i is None or kb.blocks.get(res_i) != kb.out_block:
            raise NotFusable("the residual must arrive in the output's channel blocks")
        res_dt = tvm_dtype(kb.body.inputs[res_i].type.dtype)
    tn = epi.pop(0) if epi and epi[0].op is q.table else None
    if epi:
        raise NotFusable("an epilogue the VNNI conv has no slot for")
    p = a["pads"]
    try:
        spec = kq.QConvSpec(n, ci, h, wd, co, kh, kw, tuple(a["strides"]), (p[0], p[1], p[2], p[3]),
                            tuple(a["dilations"]), tvm_dtype(x.type.dtype), a["x_zero_point"], kb.blocks[xi],
                            rq1, res_dt, rq2, rq3, rq1b, _table_dtype(tn))
    except ValueError as e:
        raise NotFusable(str(e)) from None
    if kb.out_block != spec.out_block:
        raise NotFusable("the VNNI conv writes the blocks of compiler.layouts.int_out_block")
    if has_amx(target) and not shift_terms(c) and kq.amx_module(spec) is not None:
        spec = dataclasses.replace(spec, amx=True)
    return spec, (r1n, r1bn, r2n, r3n, tn), res_i, xi


def _table_dtype(tn: Node | None) -> str | None:
    return None if tn is None else tvm_dtype(tn.outputs[0].type.dtype)


def _table_arg(tn: Node | None) -> list[relax.Expr]:
    """The table constant as the kernel holds it (tvm_kernels/table.py: a 65536-entry one widened to int32)."""
    if tn is None:
        return []
    t = tn.inputs[1]
    dtype = ktable.table_storage(tvm_dtype(tn.inputs[0].type.dtype), tvm_dtype(t.type.dtype))
    return [relax.const(np.asarray(t.const).astype(dtype), dtype)]


def depthwise_vnni(target: Target | None, x_dtype: str, zp: int, block: int, dilation: tuple) -> bool:
    """Whether the depthwise kernel takes its VNNI form (tvm_kernels/qdepthwise.py) on `target`: a CPU with
    AVX-512 VNNI (and VL for 8-channel blocks) whose shuffles are one instruction (VBMI's vpermb for 8-bit data,
    vpermw for int16), dilation 1, and a zero point the shifted data's dtype holds."""
    if target is None or target.kind != "llvm" or tuple(dilation) != (1, 1):
        return False
    feats = cpu_features(target.cpu)
    need = {"avx512vnni", "avx512bw"} | ({"avx512vl"} if block == 8 else set()) | \
        (set() if x_dtype == "int16" else {"avx512vbmi"})
    lo, hi = (-2**15, 2**15 - 1) if x_dtype == "int16" else (0, 255)
    return need <= feats and lo <= zp + (128 if x_dtype == "int8" else 0) <= hi


def qdepthwise_plan(kb: KernelBody, target: Target | None = None):
    """(spec, requant node, data operand) of a depthwise q.conv [q.requant along the channels] on blocked data;
    the VNNI form where `target` takes it (depthwise_vnni)."""
    c = kb.anchor
    x, w = c.inputs[0], c.inputs[1]
    a = c.attrs
    n, ch, h, wd = x.type.shape
    xi = kb.operand_of(x)
    b = kb.blocks.get(xi)
    if a["groups"] != ch or w.type.shape[:2] != (ch, 1) or weight_of(w) is None or b is None or kb.out_block != b \
            or (len(c.inputs) > 2 and not c.inputs[2].is_const):
        raise NotFusable("the depthwise int8 conv reads blocked data and constant weights, writes the same blocks")
    epi = list(kb.epilogue)
    rn = epi.pop(0) if epi and epi[0].op is q.requant else None
    tn = epi.pop(0) if epi and epi[0].op is q.table else None
    if epi or (rn is not None and not channel_axis_ok(rn, 4, 1)):
        raise NotFusable("an epilogue the depthwise int8 conv has no slot for")
    p = a["pads"]
    try:
        xdt = tvm_dtype(x.type.dtype)
        spec = kdw.QDepthwiseSpec(n, ch, h, wd, *w.type.shape[2:], tuple(a["strides"]), (p[0], p[1], p[2], p[3]),
                                  tuple(a["dilations"]), b, xdt, a["x_zero_point"],
                                  requant_of(rn, I32_RANGE), _table_dtype(tn),
                                  depthwise_vnni(target, xdt, a["x_zero_point"], b, a["dilations"]))
    except ValueError as e:
        raise NotFusable(str(e)) from None
    return spec, (rn, tn), xi


def emit_qdepthwise(ctx: LowerCtx, kb: KernelBody, args: list[relax.Expr]) -> relax.Expr:
    spec, (rn, tn), xi = qdepthwise_plan(kb, ctx.target)
    c, b = kb.anchor, spec.block
    w = weight_of(c.inputs[1])[0].astype(np.int8)
    bias = np.asarray(c.inputs[2].const, np.int32) if len(c.inputs) > 2 else np.zeros(spec.c, np.int32)
    if spec.vnni:
        wp, bias = kdw.pack_vnni(spec, w, bias)
    else:
        wp, bias = pack_conv_weight(w, "depthwise", 1, b), bias.reshape(spec.c // b, b)
    call_args = [args[xi], relax.const(wp, str(wp.dtype)), relax.const(bias, "int32")]
    if spec.rq is not None:
        ra = rn.attrs
        call_args.append(relax.const(kq.pack_requant(ra["multiplier"], ra["shift"], spec.c, spec.c, (3, spec.c // b, b),
                                                     spec.rq.form), kq.requant_dtype(spec.rq)))
    call_args += _table_arg(tn)
    tile = tuple(kb.node.attrs["tile"]) or None
    gv = ctx.kernel(("qdepthwise", spec, tile), lambda: kdw.make_qdepthwise(spec, tile), "qdepthwise")
    return ctx.call_kernel(gv, call_args, spec.out_shape(), spec.out_dtype)


def emit_qconv(ctx: LowerCtx, kb: KernelBody, args: list[relax.Expr]) -> relax.Expr:
    if kb.anchor.attrs["groups"] != 1:
        return emit_qdepthwise(ctx, kb, args)
    spec, (r1n, r1bn, r2n, r3n, tn), res_i, xi = qconv_plan(kb, ctx.target)
    c = kb.anchor
    w = c.inputs[1]
    rq1, rq1b, rq2, rq3 = spec.rq1, spec.rq1b, spec.rq2, spec.rq3
    res_dt = spec.residual_dtype
    (wv, packed), terms = weight_of(w), shift_terms(c)
    wp, bp, make, name = realization(ksa.conv_realization, spec, wv,
                                      None if len(c.inputs) < 3 else np.asarray(c.inputs[2].const), terms)
    if packed is not None and not terms and packed.shape == wp.shape:
        wp = packed                        # the IR's packed constant (passes/weights.py), as is
    call_args = [args[xi], relax.const(wp, str(wp.dtype)), relax.const(bp, "int32")]
    for node_, rq in ((r1n, rq1), (r1bn, rq1b)):
        if rq is not None:
            call_args.append(_rq_const(node_, rq, spec.co, spec.cop))
    over = -1      # the residual's buffer takes the result where the IR allows it (passes/inplace.py)
    if res_dt is not None:
        if res_i == kb.node.attrs["inplace"] and res_dt == spec.out_dtype:
            over = len(call_args)
        call_args.append(args[res_i])
        if rq2 is not None:
            call_args.append(_rq_const(r2n, rq2, spec.co, spec.cop))
        call_args.append(_rq_const(r3n, rq3, spec.co, spec.cop))
    call_args += _table_arg(tn)
    tile = tuple(kb.node.attrs["tile"]) or None

    def build():
        func = emit.tiled(make, tile)
        return emit.write_over(func, "residual") if over >= 0 else func

    gv = ctx.kernel(("qconv", spec, tile, terms, over >= 0), build, name)
    return ctx.call_kernel(gv, call_args, kq.out_shape(spec), spec.out_dtype, inplace=over)


def per_tensor_requant(kb: KernelBody) -> tuple[kq.Requant | None, int, int]:
    if not kb.epilogue:
        return None, 0, 0
    (n,) = kb.epilogue
    a = n.attrs
    if n.op is not q.requant or len(a["multiplier"]) != 1:
        raise NotFusable("only a per-tensor requant fuses here")
    rq = kq.Requant(a["in_zero_point"], a["zero_point"], a["qmin"], a["qmax"], tvm_dtype(a["dtype"]))
    return rq, a["multiplier"][0], a["shift"][0]


def emit_shiftmax(ctx: LowerCtx, kb: KernelBody, args: list[relax.Expr]) -> relax.Expr:
    sm = kb.anchor
    x = sm.inputs[0]
    a = sm.attrs
    xi = kb.operand_of(x)
    if xi is None or x.type.rank < 1:
        raise NotFusable("Shiftmax of a scalar")
    rq, m_, c_ = per_tensor_requant(kb)
    axis, out = a["axis"] % x.type.rank, a["dtype"]
    length, inner = x.type.shape[axis], math.prod(x.type.shape[axis + 1:])
    try:
        spec = ksm.ShiftmaxSpec(x.type.size // (length * inner), length, tvm_dtype(x.type.dtype),
                                ivit.exp_unit(a["scale"]), a["n"], ivit._OUT_BITS[out], q.INT_RANGE[out][1],
                                a["dividend_bits"], tvm_dtype(out), rq, m_, c_, inner)
    except ValueError as e:
        raise NotFusable(str(e)) from None
    gv = ctx.kernel(("shiftmax", spec), lambda: ksm.make_shiftmax(spec), "shiftmax")
    shape = (spec.rows, spec.length, spec.inner)
    y = ctx.call_kernel(gv, [ctx.reshape(args[xi], shape)], shape, spec.out_dtype)
    return ctx.reshape(y, kb.result.type.shape)


def emit_int_global_sum(ctx: LowerCtx, kb: KernelBody, args: list[relax.Expr]) -> relax.Expr:
    """cast 8-bit (or int16) -> int32, reduce_sum over (2, 3) keepdims [q.requant]: the dyadic global average pool."""
    sm = kb.anchor
    cast = sm.inputs[0].producer
    if cast is None or cast.op is not ew.cast or not any(cast is p for p in kb.prologue):
        raise NotFusable("not the integer global average pool")
    x = cast.inputs[0]
    xi = kb.operand_of(x)
    if xi is None or x.type.rank != 4 or x.type.dtype not in INT_DATA or cast.attrs["to"] is not DType.I32 or \
            sorted(ax % 4 for ax in sm.attrs["axes"]) != [2, 3] or not sm.attrs["keepdims"]:
        raise NotFusable("not the integer global average pool")
    n, c, h, w = x.type.shape
    lo, hi = q.INT_RANGE[x.type.dtype]
    rq_n = kb.epilogue[0] if kb.epilogue else None
    if len(kb.epilogue) > 1 or (rq_n is not None and (rq_n.op is not q.requant or not channel_axis_ok(rq_n, 4, 1))):
        raise NotFusable("only a requant fuses after the integer global sum")
    rq = requant_of(rq_n, (h * w * lo, h * w * hi))
    block = kb.blocks.get(xi, 0)
    try:
        spec = kpool.IntGlobalSumSpec(n, c, h, w, block, tvm_dtype(x.type.dtype), rq)
    except ValueError as e:
        raise NotFusable(str(e)) from None
    if block != kb.out_block:
        raise NotFusable("the integer global sum reads and writes one layout")
    call_args = [args[xi]]
    if rq is not None:
        call_args.append(_rq_const(rq_n, rq, c, -(-c // 16) * 16))
    gv = ctx.kernel(("int_global_sum", spec), lambda: kpool.make_int_global_sum(spec), "int_global_sum")
    return ctx.call_kernel(gv, call_args, spec.out_shape(), spec.out_dtype)


def emit_quantize(ctx: LowerCtx, kb: KernelBody, args: list[relax.Expr]) -> relax.Expr:
    """q.quantize of a float32 NCHW tensor, writing the (channel-padded) blocked layout when the body ends in
    a pack: the input of the integer convs."""
    node = kb.anchor
    x = node.inputs[0]
    xi = kb.operand_of(x)
    if kb.epilogue or xi is None or x.type.rank != 4 or x.type.dtype is not DType.F32 or xi in kb.blocks:
        raise NotFusable("the quantize kernel reads plain float32 NCHW")
    n, c, h, w = x.type.shape
    a = node.attrs
    dt = tvm_dtype(a["dtype"])
    ib = kb.out_block
    cp = -(-c // ib) * ib if ib else c
    key = ("quantize", n, c, h, w, ib, cp, a["scale"], a["zero_point"], a["qmin"], a["qmax"], dt, kb.out_fill)
    gv = ctx.kernel(key, lambda: klayout.make_quantize_pack(n, c, h, w, ib, cp, a["scale"], a["zero_point"],
                                                                 a["qmin"], a["qmax"], dt, kb.out_fill), "quantize")
    shape_ = (n, cp // ib, h, w, ib) if ib else (n, c, h, w)
    return ctx.call_kernel(gv, [args[xi]], shape_, dt)
