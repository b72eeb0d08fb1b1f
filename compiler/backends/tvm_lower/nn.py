"""Lowerings of normalizations, softmax and pooling.

Pooling uses relax's pools when ceil_mode is off (same semantics as the reference). With
ceil_mode, the reference drops windows that start in the right padding and never counts the
ceil overhang in averages, so a TE kernel with a compile-time divisor is used instead.
"""
from __future__ import annotations

import functools

import numpy as np
from tvm import relax, te, tirx

from compiler.backends.tvm_lower.registry import LowerCtx, const, dtype_of, lowers, shape_of
from compiler.ir import Node
from compiler.ops import nn

R = relax.op


def _channel_shape(x: relax.Expr) -> tuple[int, ...]:
    xs = shape_of(x)
    return (1, xs[1]) + (1,) * (len(xs) - 2)


@lowers(nn.batch_norm)
def _batch_norm(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    x, scale, bias, mean, var = args
    dt, shp = dtype_of(x), _channel_shape(x)
    inv = ctx.emit(R.divide(scale, R.sqrt(R.add(var, const(node.attrs["epsilon"], dt)))))
    centered = ctx.emit(R.subtract(x, R.reshape(mean, shp)))
    scaled = ctx.emit(R.multiply(centered, R.reshape(inv, shp)))
    return [R.add(scaled, R.reshape(bias, shp))]


@lowers(nn.instance_norm)
def _instance_norm(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    x, scale, bias = args
    dt, shp = dtype_of(x), _channel_shape(x)
    axes = list(range(2, len(shape_of(x))))
    mean = ctx.emit(R.mean(x, axes, keepdims=True))
    centered = ctx.emit(R.subtract(x, mean))
    var = ctx.emit(R.mean(R.multiply(centered, centered), axes, keepdims=True))
    normed = ctx.emit(R.divide(centered, R.sqrt(R.add(var, const(node.attrs["epsilon"], dt)))))
    scaled = ctx.emit(R.multiply(normed, R.reshape(scale, shp)))
    return [R.add(scaled, R.reshape(bias, shp))]


@lowers(nn.layer_norm)
def _layer_norm(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    x = args[0]
    xs, dt = shape_of(x), dtype_of(x)
    axis = node.attrs["axis"] % len(xs)
    norm_shape = xs[axis:]

    def fit(p: relax.Expr) -> relax.Expr:
        return p if shape_of(p) == norm_shape else ctx.emit(R.broadcast_to(p, norm_shape))

    gamma = fit(args[1])
    beta = fit(args[2]) if len(args) > 2 else const(np.zeros(norm_shape), dt)
    length = int(np.prod(norm_shape, dtype=np.int64))
    if ctx.target.kind == "llvm" and dt == "float32" and length % 16 == 0 and length >= 32:
        from compiler.backends.tvm_kernels.layernorm import make_layernorm
        rows, eps = int(np.prod(xs[:axis], dtype=np.int64)), float(node.attrs["epsilon"])
        gv = ctx.kernel(("layernorm", rows, length, eps), lambda: make_layernorm(rows, length, eps), "layernorm")
        y = ctx.call_kernel(gv, [ctx.reshape(x, (rows, length)), ctx.reshape(gamma, (length,)),
                                 ctx.reshape(beta, (length,))], (rows, length))
        return [R.reshape(y, xs)]
    return [R.nn.layer_norm(x, gamma, beta, list(range(axis, len(xs))), node.attrs["epsilon"])]


def _lrn_te(x: te.Tensor, size: int, alpha: float, beta: float, bias: float) -> te.Tensor:
    channels = int(x.shape[1])
    lo = (size - 1) // 2
    r = te.reduce_axis((0, size), name="r")

    def window(n, c, *sp):
        src = c - lo + r
        inside = tirx.all(src >= 0, src < channels)
        v = x[(n, tirx.max(tirx.min(src, channels - 1), 0), *sp)]
        return te.sum(tirx.Select(inside, v * v, tirx.const(0, x.dtype)), axis=r)
    sq = te.compute(x.shape, window, name="lrn_sqsum")
    k = tirx.const(alpha / size, x.dtype)

    def body(*i):
        return x[i] / tirx.power(tirx.const(bias, x.dtype) + k * sq[i], tirx.const(beta, x.dtype))
    return te.compute(x.shape, body, name="lrn")


@lowers(nn.lrn)
def _lrn(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    a = node.attrs
    return [ctx.emit_te(_lrn_te, args[0], a["size"], a["alpha"], a["beta"], a["bias"], name="lrn")]


@lowers(nn.softmax)
def _softmax(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    """An fp32 softmax over an inner axis on the CPU is our kernel (tvm_kernels/softmax.py); over the
    last axis, relax's."""
    shape = node.inputs[0].type.shape
    axis = node.attrs["axis"] % len(shape)
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    if ctx.target.kind == "cuda" and shape[axis] <= SHORT_ROW and dtype_of(args[0]) in ("float16", "float32"):
        return [ctx.emit_te(_short_softmax_te, args[0], axis, name="softmax")]
    if dtype_of(args[0]) == "float16":
        return [_half_softmax(args[0], axis)]
    if ctx.target.kind != "llvm" or dtype_of(args[0]) != "float32" or inner == 1:
        return [R.nn.softmax(args[0], node.attrs["axis"])]
    from compiler.backends.tvm_kernels.softmax import make_softmax
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    view = (outer, shape[axis], inner)
    gv = ctx.kernel(("softmax", view), lambda: make_softmax(*view), "softmax")
    y = ctx.call_kernel(gv, [ctx.reshape(args[0], view)], view)
    return [R.reshape(y, shape)]


SHORT_ROW = 32      # on cuda a softmax (or Shiftmax, tvm_lower/ivit.py) row of at most this many values is read
#                    whole by each output


def _short_softmax_te(x: te.Tensor, axis: int) -> te.Tensor:
    """A softmax whose rows are short: each output reads its row whole and computes the row's maximum and sum
    itself, one injective expression (on cuda a thread per output), where dlight's reduction schedule gives
    every row a block of 256 threads (YOLOv8n's DFL: rows of 16, 268,800 blocks at batch 32). float16 rounds as
    _half_softmax does (x - max in float16, exp in float32 rounded to half, the sum in float32 rounded once, the
    quotient in float32 rounded to half)."""
    half = x.dtype == "float16"

    def body(*i):
        row = [x[i[:axis] + (j,) + i[axis + 1:]] for j in range(int(x.shape[axis]))]
        mx, total = tirx.Var("row_max", x.dtype), tirx.Var("row_sum", x.dtype)

        def e(v):
            return tirx.exp((v - mx).astype("float32")).astype("float16") if half else tirx.exp(v - mx)
        if half:
            ssum = functools.reduce(lambda a, b: a + b, [e(v).astype("float32") for v in row]).astype("float16")
            y = (e(x[i]).astype("float32") / total.astype("float32")).astype("float16")
        else:
            ssum = functools.reduce(lambda a, b: a + b, [e(v) for v in row])
            y = e(x[i]) / total
        return tirx.Let(mx, functools.reduce(tirx.max, row), tirx.Let(total, ssum, y))
    return te.compute(x.shape, body, name="softmax")


def _half_softmax(x: relax.Expr, axis: int) -> relax.Expr:
    """float16 softmax step by step as the reference computes it: each op in float32, rounded to half
    (x - max, exp, the quotient), the row sum accumulated in float32 and rounded once."""
    def f32(v):
        return R.astype(v, "float32")

    e = R.astype(R.exp(f32(R.subtract(x, R.max(x, axis=[axis], keepdims=True)))), "float16")
    s = R.astype(R.sum(f32(e), axis=[axis], keepdims=True), "float16")
    return R.astype(R.divide(f32(e), f32(s)), "float16")


@lowers(nn.log_softmax)
def _log_softmax(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    return [R.nn.log_softmax(args[0], node.attrs["axis"])]


# -- pooling ------------------------------------------------------------------
_MAX_POOL = {1: R.nn.max_pool1d, 2: R.nn.max_pool2d, 3: R.nn.max_pool3d}
_AVG_POOL = {1: R.nn.avg_pool1d, 2: R.nn.avg_pool2d, 3: R.nn.avg_pool3d}
_LAYOUT = {1: "NCW", 2: "NCHW", 3: "NCDHW"}


def _window_te(x: te.Tensor, out_shape, kernel, strides, pads, dilations,
               is_max: bool) -> te.Tensor:
    """Max or sum over each pooling window; positions outside the input never contribute."""
    nsp = len(kernel)
    sizes = [int(d) for d in x.shape[2:]]
    rs = [te.reduce_axis((0, k), name=f"r{i}") for i, k in enumerate(kernel)]

    def body(n, c, *o):
        pos = [o[i] * strides[i] + rs[i] * dilations[i] - pads[i] for i in range(nsp)]
        inside = tirx.all(*[tirx.all(p >= 0, p < sizes[i]) for i, p in enumerate(pos)])
        safe = [tirx.max(tirx.min(p, sizes[i] - 1), 0) for i, p in enumerate(pos)]
        fill = tirx.min_value(x.dtype) if is_max else tirx.const(0, x.dtype)
        v = tirx.Select(inside, x[(n, c, *safe)], fill)
        return te.max(v, axis=rs) if is_max else te.sum(v, axis=rs)
    return te.compute(tuple(out_shape), body, name="pool_max" if is_max else "pool_sum")


def _avg_divisor(in_sizes, out_sizes, kernel, strides, pads, dilations, include_pad) -> np.ndarray:
    """How many window positions the reference averages over, per output position."""
    nsp = len(kernel)
    counts = np.ones((1, 1) + tuple(out_sizes))
    for i in range(nsp):
        lo_valid = -pads[i] if include_pad else 0
        hi_valid = in_sizes[i] + pads[i + nsp] if include_pad else in_sizes[i]
        o = np.arange(out_sizes[i])[:, None]
        pos = o * strides[i] + np.arange(kernel[i])[None, :] * dilations[i] - pads[i]
        c = ((pos >= lo_valid) & (pos < hi_valid)).sum(axis=1)
        counts = counts * c.reshape([-1 if j == i else 1 for j in range(nsp)])
    return counts


def max_pool_nd(ctx: LowerCtx, x: relax.Expr, out_shape, a: dict) -> relax.Expr:
    nsp = len(shape_of(x)) - 2
    if not a["ceil_mode"]:
        return _MAX_POOL[nsp](x, a["kernel"], a["strides"], a["pads"], a["dilations"],
                              ceil_mode=False, layout=_LAYOUT[nsp])
    return ctx.emit_te(_window_te, x, out_shape, a["kernel"], a["strides"], a["pads"],
                       a["dilations"], True, name="max_pool")


def avg_pool_nd(ctx: LowerCtx, x: relax.Expr, out_shape, a: dict) -> relax.Expr:
    nsp = len(shape_of(x)) - 2
    if not a["ceil_mode"]:
        return _AVG_POOL[nsp](x, a["kernel"], a["strides"], a["pads"], a["dilations"],
                              ceil_mode=False, count_include_pad=a["count_include_pad"],
                              layout=_LAYOUT[nsp])
    total = ctx.emit_te(_window_te, x, out_shape, a["kernel"], a["strides"], a["pads"],
                        a["dilations"], False, name="avg_pool_sum")
    div = _avg_divisor(shape_of(x)[2:], out_shape[2:], a["kernel"], a["strides"], a["pads"],
                       a["dilations"], a["count_include_pad"])
    return R.divide(total, const(div, dtype_of(x)))


@lowers(nn.max_pool)
def lower_max_pool(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    return [max_pool_nd(ctx, args[0], node.outputs[0].type.shape, node.attrs)]


@lowers(nn.avg_pool)
def lower_avg_pool(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    return [avg_pool_nd(ctx, args[0], node.outputs[0].type.shape, node.attrs)]
