"""Contractions: matmul (linalg.matmul / batch_matmul), einsum (linalg.generic), convolution
(linalg.conv_2d_nchw_fchw, depthwise_conv_2d_nchw_chw, else a grouped N-d linalg.generic).

The builders here are shared with the integer ops in `quant.py`: they take operands already in
the element types to multiply and an accumulator element type; linalg named ops sign-extend
their operands into the accumulator (the default cast), the generic forms do the same.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from iree.compiler import ir
from iree.compiler.dialects import arith, linalg, tensor, util

from compiler.backends.mlir_lower.registry import (
    PAR,
    RED,
    LowerCtx,
    amap,
    elem_of,
    elem_type,
    generic,
    is_float_type,
    lowers,
    scalar,
    shape_of,
    tensor_type,
)
from compiler.ir import Graph, Node
from compiler.ops import linalg as la
from compiler.types import DType


def _mac(acc_et: ir.Type):
    """acc + a * b in the accumulator type (integers sign-extended first, float16 extended to float32)."""
    if is_float_type(acc_et):
        def fbody(a, b, acc):
            a = a if a.type == acc_et else arith.extf(acc_et, a)
            b = b if b.type == acc_et else arith.extf(acc_et, b)
            return arith.addf(acc, arith.mulf(a, b))
        return fbody

    def body(a, b, acc):
        w = ir.IntegerType(acc_et).width
        a = a if ir.IntegerType(a.type).width == w else arith.extsi(acc_et, a)
        b = b if ir.IntegerType(b.type).width == w else arith.extsi(acc_et, b)
        return arith.addi(acc, arith.muli(a, b))
    return body


def _fenced_lhs(ctx: LowerCtx, a: ir.Value) -> ir.Value:
    """A batch matmul's computed LHS, on the CPU, behind util.optimization_barrier: IREE 3.13's data tiling fuses
    its producer into the LHS packing and, when that producer reduces along a row (a / sum(a), a float16
    softmax) and M is not what the tile divides (3, 7, 12, 15 rows; not 5, 8, 9, 17), rows past the first batch
    came out wrong (`test_mlir_batch_matmul_of_a_row_normalized_lhs_is_right_in_every_batch`)."""
    owner = a.owner
    if ctx.target.kind != "llvm" or not isinstance(owner, (ir.Operation, ir.OpView)) or owner.name == "arith.constant":
        return a
    return util.optimization_barrier([a.type], [a])


def matmul(ctx: LowerCtx, a: ir.Value, b: ir.Value, out_shape: Sequence[int], acc_et: ir.Type) -> ir.Value:
    """numpy.matmul: 1-D operands promoted, batch dims broadcast."""
    sa, sb = shape_of(a), shape_of(b)
    if len(sa) == 1:
        a, sa = ctx.reshape(a, (1,) + sa), (1,) + sa
    if len(sb) == 1:
        b, sb = ctx.reshape(b, sb + (1,)), sb + (1,)
    m, k, n = sa[-2], sa[-1], sb[-1]
    batch = tuple(np.broadcast_shapes(sa[:-2], sb[:-2]))
    nb = int(np.prod(batch, dtype=np.int64))
    if len(sb) == 2:             # weights without batch: fold A's batch into M, one 2-D matmul
        a2 = ctx.reshape(a, (int(np.prod(sa[:-1], dtype=np.int64)), k))
        rows = shape_of(a2)[0]
        maps = [amap(3, e) for e in ([0, 2], [2, 1], [0, 1])]
        y = linalg.matmul(a2, b, outs=[ctx.full((rows, n), acc_et, 0)], indexing_maps=maps)
        if shape_of(a)[:-2] != batch:
            y = ctx.broadcast_to(ctx.reshape(y, sa[:-2] + (m, n)), batch + (m, n))
    else:
        a3 = ctx.reshape(ctx.broadcast_to(_fenced_lhs(ctx, a), batch + (m, k)), (nb, m, k))
        b3 = ctx.reshape(ctx.broadcast_to(b, batch + (k, n)), (nb, k, n))
        # explicit indexing_maps: without them IREE 3.13's PropagateLinalgTranspose pass segfaults
        # (BatchMatmulTransposeAOp::isDefaultIndexingMaps on a null attribute) when a transpose feeds it
        maps = [amap(4, e) for e in ([0, 1, 3], [0, 3, 2], [0, 1, 2])]
        y = linalg.batch_matmul(a3, b3, outs=[ctx.full((nb, m, n), acc_et, 0)], indexing_maps=maps)
    return ctx.reshape(y, out_shape)


def _round_to_half(ctx: LowerCtx, y: ir.Value) -> ir.Value:
    """float32 sums of half products, rounded once to float16: numpy's (the reference's) float16 matmul
    and conv, TVM's lowering too; a float16 accumulator would round after every product."""
    f16 = elem_type(DType.F16)
    return ctx.ewise([y], shape_of(y), f16, lambda a: arith.truncf(f16, a))


@lowers(la.matmul)
def _matmul(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    t = node.outputs[0].type
    if t.dtype is DType.F16:
        return [_round_to_half(ctx, matmul(ctx, args[0], args[1], t.shape, elem_type(DType.F32)))]
    return [matmul(ctx, args[0], args[1], t.shape, elem_type(t.dtype))]


def expand_ellipsis(eq: str, ranks: Sequence[int]) -> str:
    """`eq` with each '...' spelled out in letters it does not use, right-aligned across the operands as numpy
    broadcasts them; an implicit output (no '->') puts them first, as numpy does."""
    if "..." not in eq:
        return eq
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    free = [c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in eq]
    counts = [r - len(t.replace("...", "")) if "..." in t else 0 for t, r in zip(terms, ranks)]
    ell = free[:max(counts)]
    terms = [t.replace("...", "".join(ell[len(ell) - n:])) for t, n in zip(terms, counts)]
    if not arrow:
        letters = "".join(terms)
        out = "".join(ell) + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in ell))
    return ",".join(terms) + "->" + out.replace("...", "".join(ell))


@lowers(la.einsum)
def _einsum(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    eq = expand_ellipsis(node.attrs["equation"].replace(" ", ""), [len(shape_of(v)) for v in args])
    lhs, _, out = eq.partition("->")
    terms = lhs.split(",")
    if "->" not in eq:
        letters = "".join(terms)
        out = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    order = list(out) + sorted({c for c in "".join(terms) if c not in out})
    size = {}
    for term, v in zip(terms, args):
        for c, d in zip(term, shape_of(v)):
            size[c] = max(size.get(c, 1), d)
    t = node.outputs[0].type
    et = elem_type(t.dtype)
    nd = len(order)
    maps = [amap(nd, [order.index(c) if shape_of(v)[j] == size[c] else "zero" for j, c in enumerate(term)])
            for term, v in zip(terms, args)]
    maps.append(amap(nd, [order.index(c) for c in out]))
    iters = [PAR if c in out else RED for c in order]
    f = is_float_type(et)

    def body(*xs):
        *ins, acc = xs
        p = ins[0]
        for q in ins[1:]:
            p = arith.mulf(p, q) if f else arith.muli(p, q)
        return arith.addf(acc, p) if f else arith.addi(acc, p)
    y = generic(args, [ctx.full(t.shape, et, 0)], maps, iters, body)[0]
    return [y]


# -- convolution ------------------------------------------------------------------
def pad_constant(ctx: LowerCtx, x: ir.Value, lo: Sequence[int], hi: Sequence[int], value) -> ir.Value:
    """tensor.pad with a constant (non-negative pads)."""
    if not any(lo) and not any(hi):
        return x
    shape, et = shape_of(x), elem_of(x)
    out = [d + a + b for d, a, b in zip(shape, lo, hi)]
    op = tensor.PadOp(tensor_type(out, et), x, [], [], list(lo), list(hi))
    block = op.regions[0].blocks.append(*[ir.IndexType.get()] * len(shape))
    with ir.InsertionPoint(block):
        tensor.YieldOp(scalar(value, et))
    return op.result


SUBSAMPLE_TARGETS = ("cuda",)     # where a strided 1x1 convolution runs as subsample() + a stride-1 one


def subsample(x: ir.Value, osp: Sequence[int], strides: Sequence[int]) -> ir.Value:
    """x[:, :, ::s0, ::s1, ...] cut to the output's spatial sizes: what a 1x1 convolution of stride s
    reads. On cuda a strided 1x1 convolution in f16 or an integer type runs as this slice and a stride-1
    convolution: IREE 3.13's GPU code for the strided one in f16 and i8 is wrong (ResNet-18's stride-2 shortcuts on an H200,
    docs/gpu_check.md; f32 was right). With the slice the i8 ResNet-18 became bit-exact there; the f16
    one stayed wrong, also with the slice behind a barrier, out of the conv's dispatch (kept: fenced_convs)."""
    shape = shape_of(x)
    out = [*shape[:2], *osp]
    return tensor.extract_slice(tensor_type(out, elem_of(x)), x, [], [], [], [0] * len(shape), out,
                                [1, 1, *strides])


FENCE_TARGETS = ("cuda",)     # where fenced_convs() separates a 1x1 float16 conv from its residual's epilogue


def _1x1_f16_conv(n: Node) -> bool:
    return n.op is la.conv and n.outputs[0].type.dtype is DType.F16 and n.attrs["groups"] == 1 and \
        all(k == 1 for k in n.inputs[1].type.shape[2:])


def fenced_convs(ctx: LowerCtx, nodes: Sequence[Node]) -> set[int]:
    """id() of each node among `nodes` that is, or is a fused kernel holding, a float16 1x1 conv, and whose result
    a later node combines with another computed tensor (directly or after ops that read nothing else): a residual
    add, in the next fused kernel or in the same body. On cuda its result goes behind util.optimization_barrier,
    so that IREE does not fuse that combining epilogue into the conv's dispatch: IREE 3.13 makes such a conv one
    mma.sync matmul_like dispatch, and on an H200 the one into which it had fused ResNet-18's residual add (reading
    the 3x3 conv's result as a fourth binding) was wrong, relative error 0.98, the first kernel to depart in the
    kernel-by-kernel check (docs/gpu_check.md), where YOLOv8n's 1x1 convs (the same dispatch, three bindings) and
    ResNet-18's 3x3 convs with their residual (IGEMM) were right. Not yet run on a GPU with the barrier."""
    if ctx.target.kind not in FENCE_TARGETS:
        return set()
    found = set()
    for i, n in enumerate(nodes):
        body = n.attrs.get("body")
        if not (_1x1_f16_conv(n) or (isinstance(body, Graph) and any(map(_1x1_f16_conv, body.nodes)))):
            continue
        after = {id(v) for v in n.outputs}
        for m in nodes[i + 1:]:
            if not any(id(v) in after for v in m.inputs):
                continue
            if any(not v.is_const and id(v) not in after for v in m.inputs):
                found.add(id(n))
                break
            after.update(id(v) for v in m.outputs)
    return found


def conv(ctx: LowerCtx, x: ir.Value, w: ir.Value, bias: ir.Value | int | float | None, out_shape: Sequence[int],
         acc_et: ir.Type, strides, pads, dilations, groups: int) -> ir.Value:
    """N-d grouped cross-correlation; x and w already in their multiply types, padding is 0. A 1-D conv is the 2-D
    one over a unit height: IREE 3.13 failed to distribute the generic form of a 1-D conv whose window covers its
    whole padded input ("write affecting operations on global resources are restricted to workgroup distributed
    contexts"), and the named 2-D ops get IREE's conv configurations."""
    nsp = len(shape_of(x)) - 2
    if nsp == 1:
        lift = lambda v: ctx.reshape(v, shape_of(v)[:2] + (1,) + shape_of(v)[2:])      # noqa: E731
        y = conv(ctx, lift(x), lift(w), bias, tuple(out_shape[:2]) + (1,) + tuple(out_shape[2:]), acc_et,
                 (1, strides[0]), (0, pads[0], 0, pads[1]), (1, dilations[0]), groups)
        return ctx.reshape(y, out_shape)
    x = pad_constant(ctx, x, [0, 0, *pads[:nsp]], [0, 0, *pads[nsp:]], 0)
    n, c = shape_of(x)[:2]
    mch = shape_of(w)[0]
    osp = tuple(out_shape[2:])
    if ctx.target.kind in SUBSAMPLE_TARGETS and not isinstance(elem_of(x), ir.F32Type) and \
            all(k == 1 for k in shape_of(w)[2:]) and any(s > 1 for s in strides):
        x, strides = subsample(x, osp, strides), [1] * nsp
        if is_float_type(elem_of(x)):     # the i8 form was right on the GPU with the slice fused
            x = util.optimization_barrier([x.type], [x])    # f16: keep the slice out of the conv's dispatch
    if isinstance(bias, (int, float)):              # a constant bias of one value: the accumulator is a fill
        init = ctx.full(out_shape, acc_et, bias)
    elif bias is not None:
        init = ctx.broadcast_to(ctx.reshape(bias, (1, mch) + (1,) * nsp), out_shape)
    else:
        init = ctx.full(out_shape, acc_et, 0)
    if nsp == 2 and groups == 1:
        return linalg.conv_2d_nchw_fchw(x, w, outs=[init], strides=list(strides), dilations=list(dilations))
    if nsp == 2 and groups == c == mch and shape_of(w)[1] == 1:
        w3 = ctx.reshape(w, (c,) + shape_of(w)[2:])
        return linalg.depthwise_conv_2d_nchw_chw(x, w3, outs=[init], strides=list(strides),
                                                 dilations=list(dilations))
    # generic grouped form: dims (n, g, m, o..., c, k...)
    g, cg, mg = groups, c // groups, mch // groups
    ks = shape_of(w)[2:]
    xg = ctx.reshape(x, (n, g, cg) + shape_of(x)[2:])
    wg = ctx.reshape(w, (g, mg, cg) + tuple(ks))
    init_g = ctx.reshape(init, (n, g, mg) + osp)
    nd = 4 + 2 * nsp
    o0, c0, k0 = 3, 3 + nsp, 4 + nsp
    xmap = [0, 1, c0] + [ir.AffineDimExpr.get(o0 + i) * strides[i] + ir.AffineDimExpr.get(k0 + i) * dilations[i]
                         for i in range(nsp)]
    maps = [amap(nd, xmap), amap(nd, [1, 2, c0] + [k0 + i for i in range(nsp)]),
            amap(nd, [0, 1, 2] + [o0 + i for i in range(nsp)])]
    iters = [PAR] * (3 + nsp) + [RED] * (1 + nsp)
    y = generic([xg, wg], [init_g], maps, iters, _mac(acc_et))[0]
    return ctx.reshape(y, out_shape)


def conv_bias(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> ir.Value | int | float | None:
    """A conv node's bias as `conv` takes it: a splat constant as its one value (the accumulator starts as a
    fill: on cuda such a constant sits behind an optimization barrier, and a 1x1 output written in place into
    it fails IREE's bufferization, "failed to bufferize op"), else the lowered tensor (None without a bias)."""
    if len(args) < 3:
        return None
    value = ctx.splat(node.inputs[2])
    return args[2] if value is None else value


@lowers(la.conv)
def _conv(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    t, a = node.outputs[0].type, node.attrs
    if t.dtype is DType.F16:        # the sums in float32, rounded, then the bias added in float16
        y = _round_to_half(ctx, conv(ctx, args[0], args[1], None, t.shape, elem_type(DType.F32), a["strides"],
                                     a["pads"], a["dilations"], a["groups"]))
        if len(args) < 3:
            return [y]
        b = ctx.reshape(args[2], (1, t.shape[1]) + (1,) * (len(t.shape) - 2))
        return [ctx.ewise([y, b], t.shape, elem_type(DType.F16), arith.addf)]
    return [conv(ctx, args[0], args[1], conv_bias(ctx, node, args), t.shape, elem_type(t.dtype), a["strides"],
                 a["pads"], a["dilations"], a["groups"])]


def _flipped_weight(ctx: LowerCtx, w: ir.Value, groups: int) -> ir.Value:
    """A transposed conv's weight (C, M/g, k...) as the direct conv's (M, C/g, k...), each kernel flipped in
    space: out (g, m, c, k...) = w (g, c, m, K-1-k...), one generic reading w with tensor.extract (IREE 3.13
    miscompiles a 3-D kernel's flip written as an indexing map with negative coefficients)."""
    c, mg, *ks = shape_of(w)
    cg, nsp = c // groups, len(ks)
    src = ctx.reshape(w, (groups, cg, mg, *ks))
    nd, idx = 3 + nsp, ir.IndexType.get()

    def body(_out):
        i = [linalg.IndexOp(d).result for d in range(nd)]
        flip = [arith.subi(arith.ConstantOp(idx, k - 1).result, i[3 + j]) for j, k in enumerate(ks)]
        return tensor.ExtractOp(src, [i[0], i[2], i[1], *flip]).result
    out = generic([], [ctx.empty((groups, mg, cg, *ks), elem_of(w))], [amap(nd, range(nd))], [PAR] * nd, body)[0]
    return ctx.reshape(out, (groups * mg, cg, *ks))


def _stuffed(ctx: LowerCtx, x: ir.Value, strides: Sequence[int]) -> ir.Value:
    """x with strides[i] - 1 zeros between neighbours along spatial axis i: one generic over the result, each
    element x[..., o / s] where every o % s is 0, else 0 (IREE 3.13 miscompiled the strided tensor.insert_slice
    of a batch of several channels into zeros)."""
    shape, et = shape_of(x), elem_of(x)
    if all(v == 1 for v in strides):
        return x
    nsp, idx = len(shape) - 2, ir.IndexType.get()
    out = [*shape[:2], *((shape[2 + i] - 1) * strides[i] + 1 for i in range(nsp))]

    def body(_out):
        i = [linalg.IndexOp(d).result for d in range(len(out))]
        at, on = i[:2], None
        for k, v in enumerate(strides):
            sv = arith.ConstantOp(idx, v).result
            hit = arith.cmpi(arith.CmpIPredicate.eq, arith.remui(i[2 + k], sv), arith.ConstantOp(idx, 0).result)
            on = hit if on is None else arith.andi(on, hit)
            at.append(arith.divui(i[2 + k], sv))
        return arith.select(on, tensor.ExtractOp(x, at).result, scalar(0, et))
    return generic([], [ctx.empty(out, et)], [amap(len(out), range(len(out)))], [PAR] * len(out), body)[0]


def conv_transpose(ctx: LowerCtx, node: Node, args: list[ir.Value], acc_et: ir.Type) -> ir.Value:
    """The transposed conv as the reference computes it: the input stuffed with stride - 1 zeros between its
    elements (`_stuffed`), padded by (k - 1) * dilation - pad (a negative
    amount crops, output_padding adds to the end), then a stride-1 direct conv with the flipped weight."""
    x, w = args[0], args[1]
    a = node.attrs
    s, d, g = a["strides"], a["dilations"], a["groups"]
    nsp = len(shape_of(x)) - 2
    ks = shape_of(w)[2:]
    xs = _stuffed(ctx, x, s)
    lo = [(ks[i] - 1) * d[i] - a["pads"][i] for i in range(nsp)]
    hi = [(ks[i] - 1) * d[i] - a["pads"][nsp + i] + a["output_padding"][i] for i in range(nsp)]
    xs = pad_constant(ctx, xs, [0, 0, *(max(v, 0) for v in lo)], [0, 0, *(max(v, 0) for v in hi)], 0)
    if min(lo + hi) < 0:                           # negative padding crops
        full = shape_of(xs)
        start = [0, 0, *(max(-v, 0) for v in lo)]
        size = [*full[:2], *(full[2 + i] - start[2 + i] - max(-hi[i], 0) for i in range(nsp))]
        xs = tensor.extract_slice(tensor_type(size, elem_of(xs)), xs, [], [], [], start, size, [1] * len(full))
    bias = conv_bias(ctx, node, args) if acc_et == elem_of(x) else None
    return conv(ctx, xs, _flipped_weight(ctx, w, g), bias, node.outputs[0].type.shape, acc_et, [1] * nsp,
                [0] * (2 * nsp), d, g)


@lowers(la.conv_transpose)
def _conv_transpose(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    t = node.outputs[0].type
    if t.dtype is not DType.F16:
        return [conv_transpose(ctx, node, args, elem_type(t.dtype))]
    y = _round_to_half(ctx, conv_transpose(ctx, node, args, elem_type(DType.F32)))   # as the float16 conv
    if len(args) < 3:
        return [y]
    b = ctx.reshape(args[2], (1, t.shape[1]) + (1,) * (len(t.shape) - 2))
    return [ctx.ewise([y, b], t.shape, elem_type(DType.F16), arith.addf)]


__all__ = ["conv", "conv_bias", "conv_transpose", "fenced_convs", "matmul", "pad_constant"]
