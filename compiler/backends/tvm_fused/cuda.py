"""Fused kernels on an NVIDIA GPU: a `k.fused` q.conv or q.matmul and its epilogue as one implicit GEMM
(tvm_kernels/cuda_gemm.py) whose write-back computes the epilogue, so the kernel writes the int8 result and its
int32 sum never reaches memory; a float16 conv (--precision fp16) with its float epilogue (bias, activation,
residual: body.compose, the CPU kernels' scalar forms) the same way. A fused attention (passes.einsum) is one
kernel (tvm_kernels/cuda_attention.py).

The epilogue is the fused node's body after the anchor, composed into one scalar function of the output index:

    q.requant    the dyadic rule in int64 (tvm_lower/quant.requant_expr), per tensor or per output channel
    nn.add/sub   int32 operands, wrapping like the reference
    q.table      a lookup in the constant table
    operands     a residual (the fused node's input) read at the output's index; a q.requant of it (the
                 prologue fuse_kernels lets join) evaluated the same way; constants that vary along the
                 output channels only

Anything else (a float op, an operand that broadcasts otherwise) raises NotFusable and the node is lowered op by
op, as before. Nothing here decides: what is fused is passes/fusion.py's choice, the same IR the CPU runs, and
each GEMM's block tile the tile pass's (the node's `tile`; `gemm_spec` is the GEMM it ranks tiles of).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from tvm import relax, te, tirx

from compiler.backends.tvm_fused import emit
from compiler.backends.tvm_fused.attention import _mask_arg, attention_plan
from compiler.backends.tvm_fused.body import KernelBody, NotFusable, _channel_vector, compose
from compiler.backends.tvm_fused.fp32 import pool_spec
from compiler.backends.tvm_kernels import cuda_attention as katt
from compiler.backends.tvm_kernels import cuda_gemm as kd
from compiler.backends.tvm_kernels import pool as kpool
from compiler.backends.tvm_kernels.layout import nchwc_index
from compiler.backends.tvm_kernels.requant import int32_barrier
from compiler.backends.tvm_lower import cuda_gemm
from compiler.backends.tvm_lower.quant import requant_expr, requant_params
from compiler.backends.tvm_lower.registry import LowerCtx, tvm_dtype
from compiler.gpu_tile import GpuGemm
from compiler.ir import Node, Value
from compiler.ops import elementwise as ew
from compiler.ops import kernel
from compiler.ops import quant as q
from compiler.ops import shape
from compiler.types import DType

OUT_EWISE_FUSABLE = 4      # relax's kOutEWiseFusable: elementwise consumers may join, nothing else
INT32_BINARY = {ew.add: lambda x, y: x + y, ew.sub: lambda x, y: x - y}


class _Composer:
    """Builds the scalar epilogue of `kb` for an output of `out_shape` whose channels lie along `channel_axis`;
    `index(b, r, c)` maps the GEMM's output position to the output's full index."""

    def __init__(self, kb: KernelBody, args: list[relax.Expr], out_shape: tuple[int, ...], channel_axis: int,
                 index: Callable):
        self.kb, self.args, self.shape, self.axis, self.index = kb, args, out_shape, channel_axis, index
        self.inputs: list[tuple[tuple[int, ...], str]] = []     # the extra tensors' (shape, dtype)
        self.values: list[relax.Expr] = []
        self.key: list = []
        self.slots: dict[int, int] = {}                          # id(value or const) -> tensor slot

    def tensor(self, token: int, shape: tuple[int, ...], dtype: str, value: relax.Expr) -> int:
        if token not in self.slots:
            self.slots[token] = len(self.inputs)
            self.inputs.append((tuple(int(d) for d in shape), dtype))
            self.values.append(value)
        return self.slots[token]

    # -- the plan: each value as a closure over (v0, full index, channel, tensors) ---------------------------
    def plan(self, v: Value) -> Callable:
        kb = self.kb
        if v is kb.anchor.outputs[0]:
            self.key.append("acc")
            return lambda env: env["acc"]
        if v.is_const:
            return self._const(v)
        i = kb.operand_of(v)
        if i is not None:
            return self._operand(v, i)
        n = v.producer
        if n is None or n not in kb.body.nodes:
            raise NotFusable(f"{v.name} is not computed in the kernel")
        if n.op is q.requant:
            return self._requant(n, self.plan(n.inputs[0]))
        if n.op is q.table:
            return self._table(n, self.plan(n.inputs[0]))
        if n.op in INT32_BINARY and all(tvm_dtype(x.type.dtype) == "int32" for x in (*n.inputs, n.outputs[0])):
            a, b = self.plan(n.inputs[0]), self.plan(n.inputs[1])
            f = INT32_BINARY[n.op]
            self.key.append(n.op.name)
            return lambda env: int32_barrier(f(a(env).astype("int32"), b(env).astype("int32")))
        raise NotFusable(f"{n.op.name} ({v.type.dtype.value}) has no GPU epilogue form")

    def _const(self, v: Value) -> Callable:
        dt = tvm_dtype(v.type.dtype)
        c = np.asarray(v.const)
        if c.size == 1:
            s = c.reshape(-1)[0].item()
            self.key.append(("scalar", s, dt))
            return lambda env: tirx.const(s, dt)
        vec = _channel_vector(v, self.shape, self.axis)
        if vec is None:
            raise NotFusable(f"constant {v.name} of shape {v.type.shape} in the epilogue")
        slot = self.tensor(id(v), vec.shape, dt, relax.const(vec.astype(dt), dt))
        self.key.append(("channel", slot, dt))
        return lambda env: env["tensors"][slot][env["channel"]]

    def _operand(self, v: Value, i: int) -> Callable:
        shp = v.type.shape
        if len(shp) != len(self.shape) or any(d not in (1, o) for d, o in zip(shp, self.shape)):
            raise NotFusable(f"operand {v.name} of shape {shp} in the epilogue")
        dt = tvm_dtype(v.type.dtype)
        block = self.kb.blocks.get(i, 0)
        if block:               # a residual in the output's shape, arriving NCHW{b}c as the output leaves
            if shp != self.shape or self.axis != 1 or len(shp) != 4 or shp[1] % block:
                raise NotFusable(f"blocked operand {v.name} of shape {shp} in the epilogue")
            bshape = (shp[0], shp[1] // block, shp[2], shp[3], block)
            slot = self.tensor(id(v), bshape, dt, self.args[i])
            self.key.append(("blocked_operand", slot, bshape, dt))
            return lambda env: env["tensors"][slot][nchwc_index(*env["index"], block)]
        slot = self.tensor(id(v), shp, dt, self.args[i])
        self.key.append(("operand", slot, shp, dt))
        return lambda env: env["tensors"][slot][tuple(0 if d == 1 else j for d, j in zip(shp, env["index"]))]

    def _requant(self, n: Node, x: Callable) -> Callable:
        a = n.attrs
        rank = n.inputs[0].type.rank
        m, c, rnd = requant_params(a["multiplier"], a["shift"])
        out = tvm_dtype(a["dtype"])
        scalars = (a["in_zero_point"], a["zero_point"], a["qmin"], a["qmax"])
        if m.size == 1:
            mcr = tuple(tirx.const(int(t[0]), "int64") for t in (m, c, rnd))
            self.key.append(("requant", int(m[0]), int(c[0]), scalars, out))
            return lambda env: requant_expr(x(env), *mcr, *scalars).astype(out)
        if a["axis"] % rank != self.axis % len(self.shape) or rank != len(self.shape):
            raise NotFusable("a requant along another axis than the output's channels")
        # per channel (multiplier, shift) as int32 (q.requant's bounds: [0, 2^31), [0, 62]), the rounding term
        # 2^(shift-1) computed: 2 registers a channel where the int64 (m, c, rnd) took 6 (a thread writes 4
        # channels of a blocked conv, and their parameters spilled)
        slot = self.tensor(id(n), (2, m.size), "int32", relax.const(np.stack([m, c]).astype(np.int32), "int32"))
        self.key.append(("requant_channel", slot, scalars, out))

        def f(env):
            t, ch = env["tensors"][slot], env["channel"]
            shift = t[1, ch].astype("int64")
            rnd = (tirx.const(1, "int64") << shift) >> tirx.const(1, "int64")
            return requant_expr(x(env), t[0, ch].astype("int64"), shift, rnd, *scalars).astype(out)
        return f

    def _table(self, n: Node, x: Callable) -> Callable:
        t = n.inputs[1]
        if not t.is_const:
            raise NotFusable("a computed table")
        dt = tvm_dtype(t.type.dtype)
        lo = int(np.iinfo(n.inputs[0].type.dtype.numpy).min)
        slot = self.tensor(id(t), t.type.shape, dt, relax.const(np.asarray(t.const).astype(dt), dt))
        self.key.append(("table", slot, lo, dt))
        return lambda env: env["tensors"][slot][x(env).astype("int32") - tirx.const(lo, "int32")]

    def epilogue(self) -> kd.Epilogue | None:
        """The composed write-back, or None when the body ends at the anchor (a plain int32 result)."""
        res = self.kb.result
        if res is self.kb.anchor.outputs[0]:
            return None
        f = self.plan(res)
        index, axis = self.index, self.axis

        def fn(v, b, r, c, tensors):
            idx = index(b, r, c)
            return f({"acc": v, "index": idx, "channel": idx[axis], "tensors": tensors})
        return kd.Epilogue(tvm_dtype(res.type.dtype), tuple(self.inputs), fn)


def _qconv_epilogue(kb: KernelBody, args: list) -> tuple[_Composer, kd.Epilogue | None]:
    c = kb.anchor
    _data_and_weight(kb, c, blocked=True)
    n, co, oh, ow = c.outputs[0].type.shape
    comp = _Composer(kb, args, (n, co, oh, ow), 1, cuda_gemm.conv_index(oh, ow, kb.out_block))
    return comp, comp.epilogue()


def emit_qconv(ctx: LowerCtx, kb: KernelBody, args: list[relax.Expr]) -> relax.Expr:
    """An int8 conv and its epilogue; its input and result (and a residual in the result's shape) NCHW or
    NCHW{b}c, as passes/layout's GPU table assigned them."""
    c = kb.anchor
    comp, epi = _qconv_epilogue(kb, args)
    y = cuda_gemm.conv(ctx, c, [args[kb.operand_of(v)] if kb.operand_of(v) is not None else None for v in c.inputs],
                       epilogue=epi, epi_values=tuple(comp.values), epi_key=tuple(comp.key),
                       in_block=kb.blocks.get(kb.operand_of(c.inputs[0]), 0), out_block=kb.out_block, tile=_tile(kb))
    if y is None:
        raise NotFusable("the GPU's int8 GEMM does not take this conv")
    return y


def _qmatmul_epilogue(kb: KernelBody, args: list) -> tuple[_Composer, kd.Epilogue | None]:
    mm = kb.anchor
    _data_and_weight(kb, mm)
    shape = mm.outputs[0].type.shape
    comp = _Composer(kb, args, shape, len(shape) - 1, lambda b, r, c: (*_unravel(r, shape[:-1]), c))
    return comp, comp.epilogue()


def _unravel(i, dims: tuple[int, ...]) -> tuple:
    """The index in row-major `dims` of flat position i (a TIR expression)."""
    idx = []
    for d in reversed(dims):
        idx.append(i % d)
        i = i // d
    return tuple(reversed(idx))


def _batch_operands(kb: KernelBody) -> tuple[int, int, bool]:
    """A matmul of two activations (cuda_gemm.batch_matmul): the kernel inputs it reads as A and B, and whether B
    arrives transposed (a prologue that swaps the last two axes of a kernel input, as Q K^T's K^T)."""
    mm = kb.anchor
    a, b = mm.inputs[:2]
    t, b_rows = b.producer, False
    if kb.prologue == [t] and t is not None and t.op is shape.transpose and \
            list(t.attrs["perm"]) == list(range(b.type.rank - 2)) + [b.type.rank - 1, b.type.rank - 2]:
        b, b_rows = t.inputs[0], True
    if kb.operand_of(a) is None or kb.operand_of(b) is None or (kb.prologue and not b_rows) or kb.blocks \
            or kb.out_block:
        raise NotFusable("the GPU's batched int8 GEMM reads two of the kernel's inputs, plain")
    return kb.operand_of(a), kb.operand_of(b), b_rows


def _batch_epilogue(kb: KernelBody, args: list) -> tuple[_Composer, kd.Epilogue | None]:
    """The epilogue of a matmul of two activations: the GEMM's batch entry b is the output's leading index, its
    rows and columns the last two."""
    mm = kb.anchor
    _batch_operands(kb)
    shape = mm.outputs[0].type.shape
    comp = _Composer(kb, args, shape, len(shape) - 1, lambda b, r, c: (*_unravel(b, shape[:-2]), r, c))
    return comp, comp.epilogue()


def emit_qmatmul(ctx: LowerCtx, kb: KernelBody, args: list[relax.Expr]) -> relax.Expr:
    mm = kb.anchor
    if not mm.inputs[1].is_const:
        ai, bi, b_rows = _batch_operands(kb)
        comp, epi = _batch_epilogue(kb, args)
        y = cuda_gemm.batch_matmul(ctx, mm, [args[ai], args[bi]], epilogue=epi, epi_values=tuple(comp.values),
                                   epi_key=tuple(comp.key), b_rows=b_rows)
        if y is None:
            raise NotFusable("the GPU's batched int8 GEMM does not take this matmul")
        return y
    comp, epi = _qmatmul_epilogue(kb, args)
    y = cuda_gemm.matmul(ctx, mm, [args[kb.operand_of(v)] if kb.operand_of(v) is not None else None
                                   for v in mm.inputs], epilogue=epi, epi_values=tuple(comp.values),
                         epi_key=tuple(comp.key), tile=_tile(kb))
    if y is None:
        raise NotFusable("the GPU's int8 GEMM does not take this matmul")
    return y


def _float_conv_epilogue(kb: KernelBody):
    """(the composed float16 epilogue, the dtype written: float16, or float32 where the body ends in a cast to it)."""
    c = kb.anchor
    _data_and_weight(kb, c, blocked=True)
    if tvm_dtype(c.outputs[0].type.dtype) != "float16":
        raise NotFusable("the GPU's float GEMM is float16")
    nodes, out = kb.epilogue, "float16"
    chain_end = nodes[-2].outputs[0] if len(nodes) > 1 else c.outputs[0]
    if nodes and kernel.widened_result(kb.body) and nodes[-1].inputs[0] is chain_end:
        nodes, out = nodes[:-1], "float32"
    return compose(kb, nodes, c.outputs[0], 1, "float16", plain_full=not kb.out_block, compute="float32"), out


def emit_conv(ctx: LowerCtx, kb: KernelBody, args: list[relax.Expr]) -> relax.Expr:
    """A float16 conv: float32 sums rounded once, + its bias in float16, then the composed epilogue, each op in
    float32 and rounded to float16 (as the reference's float16 ops are), written widened to float32 where the body
    ends in that cast."""
    c = kb.anchor
    comp, out = _float_conv_epilogue(kb)
    n, co, oh, ow = c.outputs[0].type.shape
    ob = kb.out_block
    shape = (n, co // ob, oh, ow, ob) if ob else (n, co, oh, ow)
    holders, values = emit.epilogue_params(ctx, kb, comp, args, shape, "float16")
    inputs = [((co,), "float16")] if len(c.inputs) > 2 else []
    if len(c.inputs) > 2:
        values = [relax.const(np.asarray(c.inputs[2].const).astype("float16"), "float16"), *values]
    has_bias = bool(inputs)
    inputs += [(tuple(int(d) for d in h.shape), str(h.dtype)) for h in holders]
    index = cuda_gemm.conv_index(oh, ow, ob)

    def fn(v, b, r, m, tensors):
        b, ch, y, x = index(b, r, m)
        if has_bias:
            v = v + tensors[0][ch]
        full = nchwc_index(b, ch, y, x, ob) if ob else (b, ch, y, x)
        return comp.build(tensors[int(has_bias):])(v, ch, full, b).astype(out)
    epi = kd.Epilogue(out, tuple(inputs), fn)
    y = cuda_gemm.float_conv(ctx, c, [args[kb.operand_of(c.inputs[0])], None], epilogue=epi,
                             epi_values=tuple(values), epi_key=(has_bias, comp.key, out),
                             in_block=kb.blocks.get(kb.operand_of(c.inputs[0]), 0), out_block=ob, tile=_tile(kb))
    if y is None:
        raise NotFusable("the GPU's float16 GEMM does not take this conv")
    return y


def emit_attention(ctx: LowerCtx, kb: KernelBody, args: list[relax.Expr]) -> relax.Expr:
    """The attention body (float32, or float16 with its softmax in float32) as one kernel: (query block, key
    block) from katt.gpu_tile, K read as (heads, keys, d) (a K given transposed is transposed back first)."""
    spec, a = attention_plan(kb, (DType.F32, DType.F16))
    tq, tk = katt.gpu_tile(spec.lq, spec.lk)
    spec = dataclasses.replace(spec, tq=tq, tk=tk)
    bh, lq, lk, d, dv = spec.bh, spec.lq, spec.lk, spec.d, spec.dv
    dtype = tvm_dtype(a.q.type.dtype)
    q, k, v = (args[kb.operand_of(x)] for x in (a.q, a.k, a.v))
    if a.k_transposed:          # K given as (..., d, lk), as torch's sdpa export scales it: one transpose kernel
        k = ctx.emit(relax.op.permute_dims(ctx.reshape(k, (bh // a.k_group, d, lk)), [0, 2, 1]))
    ins = [ctx.reshape(q, (bh, lq, d)), ctx.reshape(k, (bh // a.k_group, lk, d)),
           ctx.reshape(v, (bh // a.v_group, lk, dv)),
           _mask_arg(ctx, kb, a.mask, args, tuple(a.q.type.shape[:-2]) + (lq, lk), bh, lk)]
    if str(ins[3].ty.dtype) != "float32":                      # a float16 mask, added to float32 scores
        ins[3] = ctx.emit(relax.op.astype(ins[3], "float32"))
    gpu = not ctx.unscheduled
    gv = ctx.kernel(("cuda_attention", spec, dtype, gpu), lambda: katt.make_cuda_attention(spec, dtype, gpu),
                    "attention")
    return ctx.reshape(ctx.call_kernel(gv, ins, (bh, lq, dv), dtype), kb.result.type.shape)


def emit_pool(ctx: LowerCtx, kb: KernelBody, args: list[relax.Expr]) -> relax.Expr:
    """A pool on NCHW{b}c data (an int8 max pool between the blocked convs, a float32 global average pool after
    them) as one kernel on the blocked layout (tvm_kernels/pool.pool2d_te, scheduled by dlight; a max pool's
    window unrolled, a thread per output); plain pools are lowered op by op."""
    spec, xi = pool_spec(kb)
    if not spec.block:
        raise NotFusable("a plain pool")
    window = spec.kh * spec.kw if spec.kind == "max" else 0
    if not 0 < window <= kpool.UNROLLED_WINDOW:
        return ctx.emit_te(lambda x: kpool.pool2d_te(spec, x), args[xi], name=f"{spec.kind}_pool2d")

    def make() -> tirx.PrimFunc:        # the window unrolled: a thread per output (pool2d_te)
        x = te.placeholder([tirx.IntImm("int64", d) for d in kpool.pool_in_shape(spec)], spec.dtype, "x")
        # "fusable at its output" (kOutEWiseFusable): injective, FuseOps would inline it into a following pool,
        # which then loads its window's windows (YOLOv8n's SPPF: three 5 x 5 pools in a row, 25^3 loads an output)
        return te.create_prim_func([x, kpool.pool2d_te(spec, x, True)]).with_attr("op_pattern", OUT_EWISE_FUSABLE)
    gv = ctx.kernel(("cuda_max_pool", spec), make, "max_pool2d")
    return ctx.call_kernel(gv, [args[xi]], kpool.pool_out_shape(spec), spec.dtype)


def gemm_spec(kb: KernelBody, target) -> GpuGemm:
    """The tensor-core GEMM the kernel's conv or matmul is (what the tile pass ranks tiles of: costmodel.gpu_tiles),
    as cuda_gemm builds it (cuda_gemm.gemm_of), where the emitter takes the kernel."""
    kind = kb.node.attrs["kernel"]
    if kind not in ("qconv", "conv", "qmatmul") or (kind != "conv" and target.int8 != "mma"):
        raise NotFusable("no tensor-core GEMM")
    unbound = [None] * len(kb.node.inputs)        # the emitter's own checks and plan, without its arguments
    if kind == "qconv":
        _qconv_epilogue(kb, unbound)
    elif kind == "qmatmul":
        _qmatmul_epilogue(kb, unbound)
    else:
        _float_conv_epilogue(kb)
    a = kb.anchor
    spec = cuda_gemm.gemm_of(a, kb.blocks.get(kb.operand_of(a.inputs[0]), 0), kb.out_block)
    if spec is None:
        raise NotFusable(f"the GPU's GEMM does not take this {a.op.name}")
    return dataclasses.replace(spec, mma=cuda_gemm.tensor_cores(target) == "mma")


def _tile(kb: KernelBody) -> tuple[int, int] | None:
    """The block tile the tile pass chose (None: gpu_tile.block_tile's rule)."""
    return tuple(kb.node.attrs["tile"]) or None


def _data_and_weight(kb: KernelBody, anchor: Node, blocked: bool = False) -> None:
    """The kernel reads its input and constant weights (and, unless `blocked`, plain layouts only)."""
    if kb.operand_of(anchor.inputs[0]) is None or not all(v.is_const for v in anchor.inputs[1:]):
        raise NotFusable("the GPU's int8 GEMM reads the kernel's input and constant weights")
    if kb.prologue and any(n.op is not q.requant for n in kb.prologue):
        raise NotFusable("a prologue other than a residual's requant")
    if not blocked and (kb.blocks or kb.out_block):
        raise NotFusable("blocked layouts")
    if blocked and kb.out_block and (kb.out_fill or anchor.outputs[0].type.shape[1] % kb.out_block):
        raise NotFusable("a blocked result with padding channels")
