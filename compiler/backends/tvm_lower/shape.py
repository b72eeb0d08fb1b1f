"""Lowerings of data movement: reshape, transpose, concat, slice, gather, expand, tile, pad,
resize. Resize precomputes its per-axis source indices and weights with the reference's own
formulas, so every coordinate and nearest mode matches exactly."""
from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx

from compiler.backends.tvm_kernels import concat as kc
from compiler.backends.tvm_lower.registry import LowerCtx, const, dtype_of, lowers, shape_of, tvm_dtype
from compiler.ir import Node
from compiler.ops import shape as sh

R = relax.op


@lowers(sh.reshape)
def _reshape(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    return [R.reshape(args[0], node.attrs["shape"])]


@lowers(sh.transpose)
def _transpose(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    return [R.permute_dims(args[0], list(node.attrs["perm"]))]


@lowers(sh.concat)
def _concat(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    """On the CPU, with 8 rows or more before the axis, one row copy per input (tvm_kernels/concat.py);
    otherwise Relax's concat. Empty operands (size 0 along the axis) add nothing and are dropped."""
    axis = node.attrs["axis"] % len(shape_of(args[0]))
    kept = [(a, v) for a, v in zip(args, node.inputs) if v.type.shape[axis] > 0] or [(args[0], node.inputs[0])]
    if len(kept) == 1:
        return [kept[0][0]]
    args, inputs = [a for a, _ in kept], [v for _, v in kept]
    split = [kc.rows(v.type.shape, axis) for v in inputs]
    outer = split[0][0]
    if ctx.target.kind != "llvm" or len(args) < 2 or outer < 8:     # few rows: Relax's (parallel) concat
        return [R.concat(args, axis)]
    dt = tvm_dtype(node.outputs[0].type.dtype)
    inners = tuple(s[1] for s in split)
    gv = ctx.kernel(("concat_rows", outer, inners, dt), lambda: kc.make_concat_rows(outer, inners, dt), "concat")
    flat = [ctx.reshape(a, (outer, inner)) for a, inner in zip(args, inners)]
    y = ctx.call_kernel(gv, flat, (outer, sum(inners)), dt)
    return [ctx.reshape(y, node.outputs[0].type.shape)]


def _neg_slice_te(x: te.Tensor, bounds: list[tuple[int, int, int]], out_shape) -> te.Tensor:
    return te.compute(tuple(out_shape),
                      lambda *i: x[tuple(b[0] + i[k] * b[2] for k, b in enumerate(bounds))],
                      name="slice")


@lowers(sh.slice_)
def _slice(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    x = args[0]
    bounds = sh.slice_bounds(shape_of(x), node.attrs)
    out = node.outputs[0].type.shape
    if any(b[2] < 0 for b in bounds):
        # relax.strided_slice reads a negative end as "from the back"; index directly instead
        return [ctx.emit_te(_neg_slice_te, x, bounds, out, name="slice_neg")]
    axes = [i for i, (b, d) in enumerate(zip(bounds, shape_of(x))) if b != (0, d, 1)]
    if not axes:
        return [x]
    begin = [bounds[i][0] for i in axes]
    end = [bounds[i][0] + (out[i] - 1) * bounds[i][2] + 1 for i in axes]
    return [R.strided_slice(x, axes, begin, end, [bounds[i][2] for i in axes])]


@lowers(sh.gather)
def _gather(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    x, idx = args
    axis = node.attrs["axis"] % len(shape_of(x))
    return [R.take(x, idx, axis, mode="wrap")]   # wrap: index -1 is the last, as the reference


@lowers(sh.expand)
def _expand(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    return [R.broadcast_to(args[0], node.attrs["shape"])]


@lowers(sh.tile)
def _tile(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    return [R.tile(args[0], list(node.attrs["repeats"]))]


def _source_index(o: tirx.PrimExpr, lo: int, n: int, mode: str) -> tirx.PrimExpr:
    """The input index that output index `o` (o - lo in the input's frame) reads."""
    if n == 1:
        return o * 0                                   # same index dtype as the loop var
    if mode == "edge":
        return tirx.max(tirx.min(o - lo, n - 1), 0)
    # NOTE: o + shift is never negative, so truncmod == floormod; floormod of a shifted fused
    # loop index is mis-simplified by TVM 0.27 (wrong wrap-pad results after fuse).
    period = n if mode == "wrap" else 2 * (n - 1)     # reflect: a triangle wave
    shift = -lo % period
    m = tirx.truncmod(o + shift, period)
    return m if mode == "wrap" else tirx.Select(m < n, m, period - m)


def _pad_te(x: te.Tensor, lo: list[int], out_shape, mode: str) -> te.Tensor:
    sizes = [int(d) for d in x.shape]
    def body(*i):
        return x[tuple(_source_index(o, lo[k], sizes[k], mode) for k, o in enumerate(i))]
    return te.compute(tuple(out_shape), body, name=f"pad_{mode}")


@lowers(sh.pad)
def _pad(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    x, p, mode = args[0], node.attrs["pads"], node.attrs["mode"]
    xs, dt = shape_of(x), dtype_of(x)
    r = len(xs)
    if any(v < 0 for v in p):                     # negative pads crop first
        axes = [i for i in range(r) if p[i] < 0 or p[i + r] < 0]
        x = ctx.emit(R.strided_slice(x, axes, [max(-p[i], 0) for i in axes],
                                     [xs[i] - max(-p[i + r], 0) for i in axes]))
        xs = shape_of(x)
    lo, hi = [max(v, 0) for v in p[:r]], [max(v, 0) for v in p[r:]]
    if not any(lo + hi):
        return [x]
    if mode == "constant":
        value = np.array(node.attrs["value"]).astype(dt).item()
        width = [w for pair in zip(lo, hi) for w in pair]
        return [R.nn.pad(x, width, "constant", float(value))]
    out = [d + lo[i] + hi[i] for i, d in enumerate(xs)]
    return [ctx.emit_te(_pad_te, x, lo, out, mode, name=f"pad_{mode}")]


def _resize_nearest(ctx: LowerCtx, node: Node, x: relax.Expr) -> relax.Expr:
    """Nearest resize as one gather: out[i] = x[idx_0[i_0], idx_1[i_1], ...] with each resized axis'
    source indices computed by the reference's own functions and baked in as tables (and, past a
    tf_crop_and_resize crop, the extrapolation value)."""
    a = node.attrs
    in_shape = shape_of(x)
    taps = {ax: sh.resize_taps(a, ax, n) for ax, n in enumerate(in_shape) if sh.resize_moves(a, ax, n)}
    axes = sorted(taps)
    outside = [ax for ax in axes if taps[ax].outside is not None]
    fill = tirx.const(np.array(a["extrapolation_value"]).astype(dtype_of(x)).item(), dtype_of(x))

    def gather(data, *tabs):
        by_axis = dict(zip(axes, tabs))
        masks = dict(zip(outside, tabs[len(axes):]))

        def body(*i):
            v = data[tuple(by_axis[k][i[k]] if k in by_axis else i[k] for k in range(len(i)))]
            for k, m in masks.items():
                v = tirx.Select(m[i[k]] != 0, fill, v)
            return v
        return te.compute(tuple(a["sizes"]), body, name="resize_nearest")
    tables = [taps[k].idx[:, 0].astype("int32") for k in axes] + [taps[k].outside.astype("int8") for k in outside]
    return ctx.emit_te(gather, x, *[relax.const(t) for t in tables], name="resize_nearest")


def _resize_axis(data: te.Tensor, idx: te.Tensor, w: te.Tensor, outside: te.Tensor | None = None, *,
                 ax: int, n_out: int, fill: float) -> te.Tensor:
    """One axis of a linear/cubic resize: out[.., i, ..] = sum_k w[i, k] * data[.., idx[i, k], ..]
    (the taps unrolled, in the reference's order), or `fill` where outside[i]."""
    shape = tuple(n_out if d == ax else data.shape[d] for d in range(len(data.shape)))

    def body(*i):
        def tap(k: int) -> tirx.PrimExpr:
            return data[i[:ax] + (idx[i[ax], k],) + i[ax + 1:]] * w[i[ax], k]
        v = tap(0)
        for k in range(1, int(idx.shape[1])):
            v = v + tap(k)
        return v if outside is None else tirx.Select(outside[i[ax]] != 0, tirx.const(fill, data.dtype), v)
    return te.compute(shape, body, name="resize_axis")


@lowers(sh.resize)
def _resize(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    """Separable resize: per moved axis, a weighted gather over the reference's own taps
    (sh.resize_taps), in the input's float type (float64 for integer inputs, as the reference)."""
    a = node.attrs
    y = args[0]
    dt = dtype_of(y)
    if a["mode"] == "nearest":
        return [_resize_nearest(ctx, node, y)]
    exact = dt.startswith("float")
    if not exact:                                  # the reference interpolates in float64, then casts
        y = ctx.emit(R.astype(y, "float64"))
    wdt = dtype_of(y)
    for ax, n_in in enumerate(shape_of(args[0])):
        if not sh.resize_moves(a, ax, n_in):
            continue
        t = sh.resize_taps(a, ax, n_in)
        tabs = [relax.const(t.idx.astype("int32")), const(t.w, wdt)]
        if t.outside is not None:
            tabs.append(relax.const(t.outside.astype("int8")))
        y = ctx.emit_te(_resize_axis, y, *tabs, ax=ax, n_out=a["sizes"][ax], fill=a["extrapolation_value"],
                        name="resize_axis")
    return [y if exact else R.astype(y, dt)]
