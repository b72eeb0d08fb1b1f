"""Float kernels of fused nodes: conv2d (NCHW{b}c), matmul (packed panels, or batched), pools.

The anchor's attributes and the body's layouts give the kernel's spec. The start of a conv's
epilogue that the kernel has slots for (a per-channel bias, a residual add, relu/clip) fills them,
as in the cost model's training kernels; every other elementwise op is composed from its scalar
lowering into the same write-back.
"""
from __future__ import annotations

import numpy as np
from tvm import relax

from compiler.backends.tvm_fused import emit
from compiler.backends.tvm_fused.body import KernelBody, NotFusable, compose, _channel_vector
from compiler.backends.tvm_kernels import conv2d as kconv
from compiler.backends.tvm_kernels import matmul as kmm
from compiler.backends.tvm_kernels import pool as kpool
from compiler.backends.tvm_lower.registry import LowerCtx
from compiler.ir import Node, Value
from compiler.ops import elementwise as ew
from compiler.ops import layout as lay, nn, reduce as rd
from compiler.types import DType

F32 = DType.F32


def _other(n: Node, cur: Value) -> Value:
    return n.inputs[1] if n.inputs[0] is cur else n.inputs[0]


def _reads_only(nodes: list[Node], cur: Value, kb: KernelBody) -> bool:
    """The nodes read no kernel value computed before `cur` (only cur, their own results, operands, consts)."""
    own = {id(cur)} | {id(n.outputs[0]) for n in nodes}
    return all(id(v) in own or v.is_const or kb.operand_of(v) is not None for n in nodes for v in n.inputs)


def _conv_slots(kb: KernelBody, has_bias: bool, out_block: int):
    """(bias vector or None, residual operand or None, act, lo, hi, rest, cur): the longest start of the
    epilogue the conv kernel's own slots take, leaving the rest to read only its end."""
    steps: list[tuple] = []
    cur, i, nodes = kb.anchor.outputs[0], 0, kb.epilogue
    bias = res = None
    act, lo, hi = "none", 0.0, 0.0
    if i < len(nodes) and nodes[i].op is ew.add and cur in nodes[i].inputs and not has_bias:
        o = _other(nodes[i], cur)
        vec = _channel_vector(o, cur.type.shape, 1) if o.is_const and o.type.dtype is F32 else None
        if vec is not None:
            bias, cur, i = vec, nodes[i].outputs[0], i + 1
            steps.append((bias, res, act, lo, hi, i, cur))
    if i < len(nodes) and nodes[i].op is ew.add and cur in nodes[i].inputs:
        o = _other(nodes[i], cur)
        j = kb.operand_of(o)
        if j is not None and o is not cur and o.type == cur.type and (kb.blocks.get(j, 0) == out_block):
            res, cur, i = j, nodes[i].outputs[0], i + 1
            steps.append((bias, res, act, lo, hi, i, cur))
    if i < len(nodes) and cur in nodes[i].inputs and len(nodes[i].inputs) == 1:
        n = nodes[i]
        if n.op is ew.relu:
            act = "relu"
        elif n.op is ew.clip and np.isfinite(n.attrs["min"]) and np.isfinite(n.attrs["max"]):
            act, lo, hi = "clip", n.attrs["min"], n.attrs["max"]
        if act != "none":
            cur, i = n.outputs[0], i + 1
            steps.append((bias, res, act, lo, hi, i, cur))
    for bias, res, act, lo, hi, i, cur in reversed(steps):
        if _reads_only(nodes[i:], cur, kb):
            return bias, res, act, lo, hi, nodes[i:], cur
    return None, None, "none", 0.0, 0.0, nodes, kb.anchor.outputs[0]


def _weight_const(w) -> tuple[np.ndarray, str | None] | None:
    """(array, packed form or None for the plain weight) of a conv or matmul weight: a constant, or the unpack
    of a packed constant (passes/weights.py); None when the weight is computed."""
    if w.is_const:
        return np.asarray(w.const), None
    p = w.producer
    if p is not None and p.op is lay.unpack_weight and p.inputs[0].is_const:
        return np.asarray(p.inputs[0].const), p.attrs["form"]
    return None


def packed_weight(spec, w) -> np.ndarray:
    """The weight in the kernel's packed layout: the IR's packed constant as is when its form and shape are
    the kernel's, else packed here from OIHW."""
    arr, form = _weight_const(w)
    if form == kconv.conv_kind(spec) and arr.shape == kconv.weight_shape(spec) and arr.dtype == np.float32:
        return arr
    if form is not None:
        (arr,) = lay.unpack_weight.reference([arr], {"form": form})
    return kconv.pack_weight(spec, np.asarray(arr, np.float32))


def packed_matmul_weight(spec, w) -> np.ndarray:
    """A constant matmul weight in the kernel's column panels: the IR's packed constant as is when it is in
    that form, else packed here from (k, n)."""
    arr, form = _weight_const(w)
    if form == "panels" and arr.shape == (spec.n // kmm.b_block(spec), spec.k, kmm.b_block(spec)) \
            and arr.dtype == np.float32:
        return arr
    if form is not None:
        (arr,) = lay.unpack_weight.reference([arr], {"form": form})
    return kmm.pack_b(spec, np.asarray(arr, np.float32))


def conv_plan(kb: KernelBody):
    """(spec, bias vector, residual operand, epilogue rest, its start value) of an fp32 conv kernel."""
    a = kb.anchor
    x, w = a.inputs[0], a.inputs[1]
    xi = kb.operand_of(x)
    if x.type.rank != 4 or x.type.dtype is not F32 or _weight_const(w) is None or xi is None or \
            (len(a.inputs) > 2 and not a.inputs[2].is_const):
        raise NotFusable("not an fp32 conv2d with constant weights")
    n, ci, h, wd = x.type.shape
    co, _, kh, kw = w.type.shape
    in_block, out_block = kb.blocks.get(xi, 0), kb.out_block
    bias, res, act, lo, hi, rest, cur = _conv_slots(kb, len(a.inputs) > 2, out_block)
    if len(a.inputs) > 2:
        bias = np.asarray(a.inputs[2].const, np.float32)
    p = a.attrs["pads"]
    try:
        spec = kconv.Conv2dSpec(n, ci, h, wd, co, kh, kw, tuple(a.attrs["strides"]), (p[0], p[1], p[2], p[3]),
                                tuple(a.attrs["dilations"]), a.attrs["groups"], in_block, out_block,
                                bias is not None, res is not None, act, lo, hi)
    except ValueError as e:
        raise NotFusable(str(e)) from None
    return spec, bias, res, rest, cur


def emit_conv(ctx: LowerCtx, kb: KernelBody, args: list[relax.Expr]) -> relax.Expr:
    spec, bias, res, rest, cur = conv_plan(kb)
    x, w = kb.anchor.inputs[0], kb.anchor.inputs[1]
    xi = kb.operand_of(x)
    comp = compose(kb, rest, cur, 1, "float32", plain_full=spec.out_block == 0)
    out_shape = kconv.out_shape(spec)
    holders, extra = emit.epilogue_params(ctx, kb, comp, args, out_shape, "float32")
    tile = tuple(kb.node.attrs["tile"]) or None
    fn = comp.build(holders) if rest else None
    epi = (lambda v, nn_, c, y, xx, idx: fn(v, c, idx, nn_)) if fn else None
    # the residual's buffer takes the result where the IR allows it (passes/inplace.py)
    over = res is not None and res == kb.node.attrs["inplace"]

    def make():
        func = emit.tiled(lambda t: kconv.make_conv2d(spec, t, holders, epi), tile)
        return emit.write_over(func, "residual") if over else func

    gv = ctx.kernel(("conv", spec, comp.key, tile, over), make, "conv2d_nchwc")
    call_args = [args[xi], relax.const(packed_weight(spec, w))]
    if bias is not None:
        call_args.append(relax.const(kconv.pack_bias(spec, bias)))
    if res is not None:
        call_args.append(args[res])
    if over:
        return ctx.call_kernel(gv, call_args + extra, out_shape, inplace=len(call_args) - 1)
    return ctx.call_kernel(gv, call_args + extra, out_shape)


def _matmul_slots(kb: KernelBody, n_: int):
    """(bias, act, rest, cur) for a constant-weight matmul: a bias add along the last axis, relu / gelu."""
    cur, nodes, i = kb.anchor.outputs[0], kb.epilogue, 0
    bias, act, steps = None, "none", []
    if i < len(nodes) and nodes[i].op is ew.add and cur in nodes[i].inputs:
        o = _other(nodes[i], cur)
        vec = _channel_vector(o, cur.type.shape, -1) if o.is_const and o.type.dtype is F32 else None
        if vec is not None:
            bias, cur, i = vec, nodes[i].outputs[0], i + 1
            steps.append((bias, act, i, cur))
    if i < len(nodes) and cur in nodes[i].inputs and len(nodes[i].inputs) == 1:
        m = nodes[i]
        if m.op is ew.relu:
            act = "relu"
        elif m.op is ew.gelu:
            act = "gelu_tanh" if m.attrs["approximate"] == "tanh" else "gelu_erf"
        if act != "none":
            cur, i = m.outputs[0], i + 1
            steps.append((bias, act, i, cur))
    for bias, act, i, cur in reversed(steps):
        if _reads_only(nodes[i:], cur, kb):
            return bias, act, nodes[i:], cur
    return None, "none", nodes, kb.anchor.outputs[0]


def matmul_plan(kb: KernelBody):
    """(spec, bias, B operand or None for a constant B, epilogue rest, its start value) of an fp32 matmul."""
    a_v, b_v = kb.anchor.inputs
    ai = kb.operand_of(a_v)
    if a_v.type.dtype is not F32 or a_v.type.rank < 2 or b_v.type.rank < 2 or ai is None:
        raise NotFusable("not an fp32 matmul")
    m, k = a_v.type.shape[-2:]
    if lay.is_const_weight(b_v) and b_v.type.rank == 2:
        n_ = b_v.type.shape[1]
        bias, act, rest, cur = _matmul_slots(kb, n_)
        rows = int(np.prod(a_v.type.shape[:-1]))
        return kmm.MatmulSpec((), rows, n_, k, True, False, bias is not None, act), bias, None, rest, cur
    src, transpose_b = b_v, False
    t = b_v.producer
    if t is not None and any(t is p for p in kb.prologue):
        src, transpose_b = t.inputs[0], True
    bi = kb.operand_of(src)
    if bi is None or a_v.type.rank != b_v.type.rank or a_v.type.shape[:-2] != b_v.type.shape[:-2]:
        raise NotFusable("a broadcasting batched matmul")
    spec = kmm.MatmulSpec(a_v.type.shape[:-2], m, b_v.type.shape[-1], k, False, transpose_b, False, "none")
    return spec, None, bi, kb.epilogue, kb.anchor.outputs[0]


def emit_matmul(ctx: LowerCtx, kb: KernelBody, args: list[relax.Expr]) -> relax.Expr:
    spec, bias, bi, rest, cur = matmul_plan(kb)
    a_v, b_v = kb.anchor.inputs
    ai = kb.operand_of(a_v)
    out_t = kb.anchor.outputs[0].type
    tile = tuple(kb.node.attrs["tile"]) or None
    if bi is None:
        call_args = [ctx.reshape(args[ai], (spec.m, spec.k)), relax.const(packed_matmul_weight(spec, b_v))]
        if bias is not None:
            call_args.append(relax.const(bias.astype(np.float32)))
    else:
        call_args = [args[ai], args[bi]]
    comp = compose(kb, rest, cur, -1, "float32", plain_full=True)
    kshape = kmm.out_shape(spec)
    holders, extra = emit.epilogue_params(ctx, kb, comp, args, kshape, "float32")
    fn = comp.build(holders) if rest else None
    epi = (lambda v, idx: fn(v, idx[-1], idx, None)) if fn else None
    gv = ctx.kernel(("matmul", spec, comp.key, tile),
                     lambda: emit.tiled(lambda t: kmm.make_matmul(spec, t, holders, epi), tile), "matmul")
    y = ctx.call_kernel(gv, call_args + extra, kshape)
    return y if tuple(kshape) == out_t.shape else ctx.reshape(y, out_t.shape)


def pool_spec(kb: KernelBody) -> tuple[kpool.PoolSpec, int]:
    """The pool kernel's spec for the fused pool `kb` (its layout the body's) and the operand it reads."""
    p = kb.anchor
    x = p.inputs[0]
    xi = kb.operand_of(x)
    if kb.epilogue or xi is None or x.type.rank != 4:
        raise NotFusable("a pool kernel takes no epilogue")
    n, c, h, w = x.type.shape
    block = kb.blocks.get(xi, 0)
    if block != kb.out_block:
        raise NotFusable("a pool reads and writes one layout")
    dt = "float32" if x.type.dtype is F32 else x.type.dtype.value
    if x.type.dtype is not F32 and p.op not in (nn.max_pool, rd.reduce_max):
        raise NotFusable("integer pooling other than max")
    if p.op in (rd.reduce_mean, rd.reduce_max):
        if sorted(ax % 4 for ax in p.attrs["axes"]) != [2, 3] or not p.attrs["keepdims"]:
            raise NotFusable("a reduction over other axes")
        return kpool.PoolSpec("global_avg" if p.op is rd.reduce_mean else "global_max", n, c, h, w, block=block,
                              dtype=dt), xi
    if p.op in (nn.max_pool, nn.avg_pool):
        a = p.attrs
        return kpool.PoolSpec("max" if p.op is nn.max_pool else "avg", n, c, h, w, a["kernel"][0], a["kernel"][1],
                              tuple(a["strides"]), tuple(a["pads"]), tuple(a["dilations"]), block,
                              a.get("count_include_pad", False) if p.op is nn.avg_pool else False, a["ceil_mode"],
                              dt), xi
    raise NotFusable(f"{p.op.name} has no pool kernel")


def emit_pool(ctx: LowerCtx, kb: KernelBody, args: list[relax.Expr]) -> relax.Expr:
    spec, xi = pool_spec(kb)
    gv = ctx.kernel(("pool", spec), lambda: kpool.make_pool2d(spec), f"{spec.kind}_pool2d")
    return ctx.call_kernel(gv, [args[xi]], kpool.pool_out_shape(spec), spec.dtype)
