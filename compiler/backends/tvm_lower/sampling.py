"""Lowerings of grid_sample and roi_align as our own kernels (TE, scheduled here): they evaluate the
ops' coordinate formulas (compiler/ops/sampling.py, given TVM's primitives as its `Math`) in float32
as the references, accumulating in float32 (float64 for float64 inputs).

grid_sample materializes, per spatial axis, each output point's taps (pixel index, weight, inside
the image) before the weighted gather: inlined, the nested reflections grow expressions that the
generic scheduler takes minutes over. Both kernels run parallel over their leading output axes.
"""
from __future__ import annotations

import itertools
from typing import Any

from tvm import relax, s_tir, te, tirx

from compiler.backends.tvm_kernels.common import finalize
from compiler.backends.tvm_lower.registry import LowerCtx, dtype_of, lowers, shape_of
from compiler.diagnostics import SourceLoc, Unsupported
from compiler.ir import Node
from compiler.ops import sampling


def _lift(v: Any, like: Any) -> Any:
    """A Python number as a constant of `like`'s type (`like` a TVM expression)."""
    return tirx.const(v, str(like.ty)) if isinstance(v, (int, float)) else v


class _Lets(sampling.Lets):
    """Named values as TIR let bindings."""

    def __init__(self) -> None:
        self.binds: list[tuple[tirx.Var, Any]] = []

    def let(self, v: Any) -> Any:
        var = tirx.Var(f"t{len(self.binds)}", str(v.ty))
        self.binds.append((var, v))
        return var

    def wrap(self, e: Any) -> Any:
        for var, v in reversed(self.binds):
            e = tirx.Let(var, v, e)
        return e


TIR = sampling.Math(where=lambda c, a, b: tirx.Select(c, _lift(a, b), _lift(b, a)), floor=tirx.floor,
                    rint=tirx.nearbyint, to_int=lambda v: tirx.Cast("int32", v), both=tirx.And, scope=_Lets)


def _acc_dtype(dt: str) -> str:
    return "float64" if dt == "float64" else "float32"


def _cast(v: Any, dt: str) -> Any:
    return v if str(v.ty) == dt else tirx.Cast(dt, v)


def _pick(k: Any, exprs: list[Any]) -> Any:
    """exprs[k] for a loop variable k (a chain of selects)."""
    out = exprs[-1]
    for j in range(len(exprs) - 2, -1, -1):
        out = tirx.Select(k == j, exprs[j], out)
    return out


def _all(conds: list[Any]) -> Any:
    """The conjunction of boolean expressions."""
    out = conds[0]
    for c in conds[1:]:
        out = tirx.And(out, c)
    return out


def _parallel_kernel(tensors: list[te.Tensor], block: str, outer: int) -> tirx.PrimFunc:
    """PrimFunc over `tensors` (inputs then the output), its `block` parallel over the fused first
    `outer` loops; marked scheduled, so the generic scheduler leaves it alone."""
    sch = s_tir.Schedule(te.create_prim_func(tensors))
    loops = sch.get_loops(sch.get_sblock(block))
    sch.parallel(sch.fuse(*loops[:outer]))
    return finalize(sch.mod["main"])


# -- grid_sample -----------------------------------------------------------------------------
def _grid_taps_te(grid: te.Tensor, d: int, size: int, a: dict[str, Any]) -> list[te.Tensor | None]:
    """Axis d's taps for every output point, each field a tensor (N, out..., K): index, weight
    (None for nearest) and inside (None unless zeros padding)."""
    rank = int(grid.shape[-1])
    coord = te.compute(grid.shape[:-1], lambda *i: sampling.grid_coord(
        _cast(grid(*i, rank - 1 - d), "float32"), size, a, TIR), name=f"coord{d}")    # grid[..., 0]: innermost

    def field(name: str, get: Any) -> te.Tensor:
        def body(*i):
            return _pick(i[-1], [get(t) for t in sampling.grid_taps(coord(*i[:-1]), size, a, TIR)])
        k = {"nearest": 1, "linear": 2, "cubic": 4}[a["mode"]]
        return te.compute((*grid.shape[:-1], k), body, name=f"{name}{d}")
    return [field("index", lambda t: t.index),
            None if a["mode"] == "nearest" else field("weight", lambda t: t.weight),
            field("inside", lambda t: t.inside) if a["padding_mode"] == "zeros" else None]


def _grid_sample_te(data: te.Tensor, grid: te.Tensor, a: dict[str, Any]) -> te.Tensor:
    """out[n, c, o...] = sum over the window's corners of the weight product times the pixel
    (0 where zeros padding leaves the image)."""
    spatial = [int(s) for s in data.shape[2:]]
    dt = str(data.dtype)
    acc = _acc_dtype(dt)
    taps = [_grid_taps_te(grid, d, size, a) for d, size in enumerate(spatial)]
    k = int(taps[0][0].shape[-1])

    def body(n, c, *o):
        total = None
        for corner in itertools.product(range(k), repeat=len(spatial)):
            at = [(n, *o, j) for j in corner]
            v = _cast(data(n, c, *[t[0](*p) for t, p in zip(taps, at)]), acc)
            for t, p in zip(taps, at):
                if t[1] is not None:
                    v = v * _cast(t[1](*p), acc)
            inside = [t[2](*p) for t, p in zip(taps, at) if t[2] is not None]
            if inside:
                v = tirx.Select(_all(inside), v, tirx.const(0, acc))
            total = v if total is None else total + v
        return _cast(total, dt)
    return te.compute((data.shape[0], data.shape[1], *grid.shape[1:-1]), body, name="grid_sample")


@lowers(sampling.grid_sample)
def _grid_sample(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    a = node.attrs
    xs, gs = shape_of(args[0]), shape_of(args[1])
    dts = (dtype_of(args[0]), dtype_of(args[1]))

    def make() -> tirx.PrimFunc:
        x, g = te.placeholder(xs, dts[0], name="x"), te.placeholder(gs, dts[1], name="grid")
        return _parallel_kernel([x, g, _grid_sample_te(x, g, a)], "grid_sample", min(3, len(xs)))
    gv = ctx.kernel(("grid_sample", xs, gs, dts, tuple(sorted(a.items()))), make, "grid_sample")
    return [ctx.call_kernel(gv, args, node.outputs[0].type.shape, dts[0])]


# -- roi_align -------------------------------------------------------------------------------
def _roi_align_te(data: te.Tensor, rois: te.Tensor, batch: te.Tensor, a: dict[str, Any]) -> te.Tensor:
    """Per (RoI, channel, bin): a reduction over the bin's sampling_ratio^2 samples of the bilinear
    taps (their sum, then / count, for avg; the max of the weighted taps for max)."""
    n_img, _, height, width = (int(s) for s in data.shape)
    ph, pw, grid = a["output_height"], a["output_width"], a["sampling_ratio"]
    out_shape = (int(rois.shape[0]), int(data.shape[1]), ph, pw)
    dt = str(data.dtype)
    acc = _acc_dtype(dt)
    ry, rx = te.reduce_axis((0, grid), "sy"), te.reduce_axis((0, grid), "sx")

    def coord(axis: int, bins: int) -> te.Tensor:
        """Each RoI's sample positions along an axis (y: 1, x: 0), (R, bins, samples)."""
        def body(r, b, i):
            roi = [_cast(rois(r, k), "float32") for k in (axis, axis + 2)]
            box = sampling.roi_box(roi[0], roi[1], bins, a, TIR)
            return sampling.roi_sample_coord(box, _cast(b, "float32"), _cast(i, "float32"), float(grid))
        return te.compute((int(rois.shape[0]), bins, grid), body, name=f"coord{axis}")
    ys, xs = coord(1, ph), coord(0, pw)

    def sample(r, c, by, bx) -> list[Any]:
        b = tirx.max(tirx.min(tirx.Cast("int32", batch(r)), n_img - 1), 0)
        ty = sampling.roi_sample_taps(ys(r, by, ry.var), height, TIR)
        tx = sampling.roi_sample_taps(xs(r, bx, rx.var), width, TIR)
        return [_cast(data(b, c, ya.index, xa.index), acc) * _cast(ya.weight * xa.weight, acc)
                for ya, xa in itertools.product(ty, tx)]

    if a["mode"] == "max":
        def max_body(r, c, by, bx):
            t = sample(r, c, by, bx)
            return te.max(tirx.max(tirx.max(t[0], t[1]), tirx.max(t[2], t[3])), axis=[ry, rx])
        pooled = te.compute(out_shape, max_body, name="pooled")
        return te.compute(out_shape, lambda *i: _cast(pooled(*i), dt), name="roi_align")

    def sum_body(r, c, by, bx):
        t = sample(r, c, by, bx)
        return te.sum(t[0] + t[1] + t[2] + t[3], axis=[ry, rx])
    pooled = te.compute(out_shape, sum_body, name="pooled")
    return te.compute(out_shape, lambda *i: _cast(pooled(*i) / tirx.const(grid * grid, acc), dt), name="roi_align")


@lowers(sampling.roi_align)
def _roi_align(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    a = node.attrs
    if a["sampling_ratio"] == 0:
        raise Unsupported("roi_align with sampling_ratio 0 on the tvm backend: the samples per bin "
                          "(ceil of the bin size) depend on the RoI values; a model with a fixed "
                          "sampling_ratio compiles", node.loc or SourceLoc(ctx.graph.source, node.name, node.op.name))
    shapes = tuple(shape_of(v) for v in args)
    dts = tuple(dtype_of(v) for v in args)

    def make() -> tirx.PrimFunc:
        x, rois, batch = (te.placeholder(s, d, name=n) for s, d, n in zip(shapes, dts, ("x", "rois", "batch")))
        return _parallel_kernel([x, rois, batch, _roi_align_te(x, rois, batch, a)], "pooled", 2)
    gv = ctx.kernel(("roi_align", shapes, dts, tuple(sorted(a.items()))), make, "roi_align")
    return [ctx.call_kernel(gv, args, node.outputs[0].type.shape, dts[0])]
