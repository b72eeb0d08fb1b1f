"""Data movement: reshape (tensor.collapse_shape/expand_shape), transpose (linalg.transpose),
concat (tensor.concat), slice (tensor.extract_slice; negative steps by an index-mapping generic),
gather (linalg.generic + tensor.extract), nearest resize (tensor.extract at each axis's source index,
read from a constant index table), expand (broadcasting generic), tile (expand +
broadcast + collapse), pad (tensor.pad for constants; index arithmetic for edge/reflect/wrap)."""
from __future__ import annotations

import numpy as np
from iree.compiler import ir
from iree.compiler.dialects import arith, linalg, tensor

from compiler.backends.mlir_lower.linalg import pad_constant
from compiler.backends.mlir_lower.registry import (
    PAR,
    RED,
    LowerCtx,
    amap,
    as_value,
    elem_of,
    generic,
    index,
    lowers,
    scalar,
    shape_of,
    tensor_type,
)
from compiler.diagnostics import Unsupported
from compiler.ir import Node
from compiler.types import DType
from compiler.ops import shape as sh
from compiler.ops._util import norm_axis


@lowers(sh.reshape)
def _reshape(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    return [ctx.reshape(args[0], node.attrs["shape"])]


@lowers(sh.transpose)
def _transpose(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    perm = list(node.attrs["perm"])
    if perm == sorted(perm):
        return [args[0]]
    t = node.outputs[0].type
    op = linalg.transpose(args[0], outs=[ctx.empty(t.shape, elem_of(args[0]))], permutation=perm)
    return [as_value(op)]


@lowers(sh.concat)
def _concat(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    t = node.outputs[0].type
    if len(args) == 1:
        return [args[0]]
    axis = norm_axis(node.attrs["axis"], t.rank)
    return [tensor.concat(tensor_type(t.shape, elem_of(args[0])), axis, args)]


def _index_generic(ctx: LowerCtx, x: ir.Value, out_shape, et, index_fn) -> ir.Value:
    """out[i...] = x[index_fn(i...)] with tensor.extract (index_fn works on `index` values)."""
    rank = len(out_shape)

    def body(_out):
        idx = [linalg.IndexOp(i).result for i in range(rank)]
        return tensor.ExtractOp(x, index_fn(idx)).result
    return generic([], [ctx.empty(out_shape, et)], [amap(rank, range(rank))], [PAR] * rank, body)[0]


@lowers(sh.slice_)
def _slice(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    x = args[0]
    bounds = sh.slice_bounds(shape_of(x), node.attrs)
    out = node.outputs[0].type.shape
    et = elem_of(x)
    if 0 in out:                    # an empty slice (its offset may be the axis' size, which MLIR refuses)
        return [ctx.empty(out, et)]
    if all(st > 0 for _, _, st in bounds):
        return [tensor.extract_slice(tensor_type(out, et), x, [], [], [],
                                     [b[0] for b in bounds], list(out), [b[2] for b in bounds])]

    def source(idx):
        return [arith.addi(index(b[0]), arith.muli(i, index(b[2]))) for i, b in zip(idx, bounds)]
    return [_index_generic(ctx, x, out, et, source)]


@lowers(sh.gather)
def _gather(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    x, ind = args
    xs, ishape = shape_of(x), shape_of(ind)
    axis = norm_axis(node.attrs["axis"], len(xs))
    out = node.outputs[0].type.shape
    rank, ni = len(out), len(ishape)
    ind_map = amap(rank, [axis + j for j in range(ni)])
    idx_t = ir.IndexType.get()

    def body(i, _out):
        i = arith.index_cast(idx_t, i)
        neg = arith.cmpi(arith.CmpIPredicate.slt, i, index(0))
        i = arith.select(neg, arith.addi(i, index(xs[axis])), i)
        loops = [linalg.IndexOp(d).result for d in range(rank)]
        coords = loops[:axis] + [i] + loops[axis + ni:]
        return tensor.ExtractOp(x, coords).result
    return [generic([ind], [ctx.empty(out, elem_of(x))], [ind_map, amap(rank, range(rank))], [PAR] * rank,
                    body)[0]]


def _resize_axis(ctx: LowerCtx, y: ir.Value, ax: int, taps: sh.ResizeTaps, extrapolation: float) -> ir.Value:
    """One axis of a linear, cubic or antialiased resize: y'[..., o, ...] = sum_k w[o, k] * y[..., idx[o, k], ...]
    (idx, w constant tables; the sum a reduction over the taps), then the extrapolation value where `outside`."""
    shape, et = list(shape_of(y)), elem_of(y)
    n_out, k = taps.idx.shape
    shape[ax] = n_out
    rank, idx_t = len(shape), ir.IndexType.get()
    wdt = DType.F64 if isinstance(et, ir.F64Type) else DType.F32
    tables = [ctx.const(taps.idx.astype(np.int32), DType.I32), ctx.const(taps.w.astype(wdt.numpy), wdt)]

    def body(i, w, acc):
        coords = [linalg.IndexOp(d).result for d in range(rank)]
        coords[ax] = arith.index_cast(idx_t, i)
        return arith.addf(acc, arith.mulf(tensor.ExtractOp(y, coords).result, w))
    maps = [amap(rank + 1, [ax, rank])] * 2 + [amap(rank + 1, range(rank))]
    y = generic(tables, [ctx.full(shape, et, 0.0)], maps, [PAR] * rank + [RED], body)[0]
    if taps.outside is None:
        return y
    out = ctx.const(taps.outside.reshape([-1 if d == ax else 1 for d in range(rank)]), DType.BOOL)
    return ctx.ewise([out, y], shape, et, lambda o, v: arith.select(o, scalar(extrapolation, et), v))


def _resize_taps(ctx: LowerCtx, node: Node, x: ir.Value) -> ir.Value:
    """A linear, cubic or antialiased resize, axis by axis as the reference (sh.resize_taps), in float32 (float64
    for float64; the reference sums in float64) and converted back to x's type."""
    a, dt = node.attrs, node.inputs[0].type.dtype
    if not dt.is_float:
        raise Unsupported(f"{a['mode']} resize of {dt.value} on the mlir backend (float only)", node.loc)
    f32 = ir.F32Type.get()
    y = ctx.ewise([x], shape_of(x), f32, lambda v: arith.extf(f32, v)) if dt is DType.F16 else x
    for ax in range(len(shape_of(x))):
        if sh.resize_moves(a, ax, shape_of(x)[ax]):
            y = _resize_axis(ctx, y, ax, sh.resize_taps(a, ax, shape_of(x)[ax]), a["extrapolation_value"])
    if dt is DType.F16:
        y = ctx.ewise([y], shape_of(y), elem_of(x), lambda v: arith.truncf(elem_of(x), v))
    return y


@lowers(sh.resize)
def _resize(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    """Nearest resize: out[i...] = x[src_0[i_0], src_1[i_1], ...], each src_k an i32 constant table
    (sh.resize_taps, as the reference computes them); linear, cubic and antialiased: `_resize_taps`."""
    a = node.attrs
    if a["mode"] != "nearest":
        return [_resize_taps(ctx, node, args[0])]
    x = args[0]
    xs, out = shape_of(x), node.outputs[0].type.shape
    rank = len(out)
    moved = [ax for ax in range(rank) if sh.resize_moves(a, ax, xs[ax])]
    taps = [sh.resize_taps(a, ax, xs[ax]) for ax in moved]
    if any(t.outside is not None for t in taps):
        raise Unsupported("resize with a tf_crop_and_resize extrapolation on the mlir backend")
    tables = [ctx.const(t.idx[:, 0].astype(np.int32), DType.I32) for t in taps]
    idx_t = ir.IndexType.get()

    def body(*srcs):
        coords = [linalg.IndexOp(d).result for d in range(rank)]
        for ax, v in zip(moved, srcs[:-1]):
            coords[ax] = arith.index_cast(idx_t, v)
        return tensor.ExtractOp(x, coords).result
    maps = [amap(rank, [ax]) for ax in moved] + [amap(rank, range(rank))]
    return [generic(tables, [ctx.empty(out, elem_of(x))], maps, [PAR] * rank, body)[0]]


@lowers(sh.expand)
def _expand(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    return [ctx.broadcast_to(args[0], node.attrs["shape"])]


@lowers(sh.tile)
def _tile(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    x, reps = args[0], node.attrs["repeats"]
    shape = shape_of(x)
    inter = [1 for _ in shape for _ in (0, 1)]
    inter[1::2] = shape
    big = [v for r, d in zip(reps, shape) for v in (r, d)]
    y = ctx.broadcast_to(ctx.reshape(x, inter), big)
    return [ctx.reshape(y, node.outputs[0].type.shape)]


@lowers(sh.pad)
def _pad(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    x, p, mode = args[0], node.attrs["pads"], node.attrs["mode"]
    shape = shape_of(x)
    r = len(shape)
    if any(v < 0 for v in p):                  # negative pads crop first
        lo_c = [max(-p[i], 0) for i in range(r)]
        size = [shape[i] - lo_c[i] - max(-p[i + r], 0) for i in range(r)]
        x = tensor.extract_slice(tensor_type(size, elem_of(x)), x, [], [], [], lo_c, size, [1] * r)
        shape = tuple(size)
    lo = [max(p[i], 0) for i in range(r)]
    hi = [max(p[i + r], 0) for i in range(r)]
    dt = node.inputs[0].type.dtype
    if mode == "constant":
        value = node.attrs["value"]
        import numpy as np
        value = np.array(value).astype(dt.numpy).item() if not dt.is_float else value
        return [pad_constant(ctx, x, lo, hi, value)]
    out = node.outputs[0].type.shape

    def source(idx):
        res = []
        for i, d in zip(range(r), shape):
            j = arith.subi(idx[i], index(lo[i]))
            if mode == "edge":
                j = arith.maxsi(arith.minsi(j, index(d - 1)), index(0))
            elif mode == "wrap":
                j = arith.remsi(arith.addi(arith.remsi(j, index(d)), index(d)), index(d))
            elif d > 1:                                         # reflect, period 2(d-1)
                per = 2 * (d - 1)
                j = arith.remsi(arith.addi(arith.remsi(j, index(per)), index(per)), index(per))
                j = arith.select(arith.cmpi(arith.CmpIPredicate.sge, j, index(d)),
                                 arith.subi(index(per), j), j)
            else:
                j = index(0)
            res.append(j)
        return res
    return [_index_generic(ctx, x, out, elem_of(x), source)]


