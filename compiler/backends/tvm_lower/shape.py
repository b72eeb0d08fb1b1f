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
    otherwise Relax's concat."""
    axis = node.attrs["axis"] % len(shape_of(args[0]))
    split = [kc.rows(v.type.shape, axis) for v in node.inputs]
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
    source indices computed by the reference's own functions and baked in as tables."""
    a = node.attrs
    in_shape = shape_of(x)
    tables = {}
    for ax, (n_out, sc) in enumerate(zip(a["sizes"], a["scales"])):
        if n_out != in_shape[ax] or sc != 1.0:
            c = sh.source_coords(n_out, in_shape[ax], sc, a["coordinate_transformation_mode"])
            tables[ax] = sh.nearest_index(c, a["nearest_mode"], in_shape[ax]).astype("int32")
    axes = sorted(tables)

    def gather(data, *tabs):
        by_axis = dict(zip(axes, tabs))
        return te.compute(tuple(a["sizes"]), lambda *i: data[tuple(
            by_axis[k][i[k]] if k in by_axis else i[k] for k in range(len(i)))], name="resize_nearest")
    return ctx.emit_te(gather, x, *[relax.const(tables[k]) for k in axes], name="resize_nearest")


@lowers(sh.resize)
def _resize(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    """Separable resize: per axis, take at precomputed indices (and lerp for linear)."""
    a = node.attrs
    y = args[0]
    dt = dtype_of(y)
    if a["mode"] == "nearest":
        return [_resize_nearest(ctx, node, y)]
    exact = dt.startswith("float")
    if not exact:                                  # the reference lerps in float64, then casts
        y = ctx.emit(R.astype(y, "float64"))
    for ax, (n_out, sc) in enumerate(zip(a["sizes"], a["scales"])):
        n_in = shape_of(y)[ax]
        if n_out == n_in and sc == 1.0:
            continue
        c = sh.source_coords(n_out, n_in, sc, a["coordinate_transformation_mode"])
        c = np.clip(c, 0, n_in - 1)
        lo = np.floor(c).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        w = (c - lo).reshape([-1 if i == ax else 1 for i in range(len(shape_of(y)))])
        y_lo = ctx.emit(R.take(y, relax.const(lo), ax, mode="clip"))
        y_hi = ctx.emit(R.take(y, relax.const(hi), ax, mode="clip"))
        wdt = dtype_of(y)
        y = ctx.emit(R.add(R.multiply(y_lo, const(1 - w, wdt)), R.multiply(y_hi, const(w, wdt))))
    return [y if exact else R.astype(y, dt)]
