"""Lowerings of contractions: matmul, einsum, N-d convolution, transposed convolution.

Each of conv / conv_transpose / matmul is one small function so that the scheduled kernels
of `compiler.backends.tvm_kernels` can replace it without touching the rest.
"""
from __future__ import annotations

from tvm import relax, te, tirx

from compiler.backends.tvm_lower import cuda_gemm
from compiler.backends.tvm_lower.registry import LowerCtx, dtype_of, lowers, shape_of
from compiler.ir import Node
from compiler.ops import linalg

R = relax.op
_CONV = {1: R.nn.conv1d, 2: R.nn.conv2d, 3: R.nn.conv3d}
_LAYOUTS = {1: ("NCW", "OIW"), 2: ("NCHW", "OIHW"), 3: ("NCDHW", "OIDHW")}


@lowers(linalg.matmul)
def lower_matmul(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    if dtype_of(args[0]) == "float16":    # numpy (the reference) sums half products in float32
        return [R.astype(ctx.emit(R.matmul(args[0], args[1], out_dtype="float32")), "float16")]
    return [R.matmul(args[0], args[1])]


@lowers(linalg.einsum)
def lower_einsum(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    return [R.einsum(args, node.attrs["equation"])]


def _add_channel_bias(ctx: LowerCtx, y: relax.Expr, bias: relax.Expr) -> relax.Expr:
    nsp = len(shape_of(y)) - 2
    b = ctx.emit(R.reshape(bias, (1, shape_of(bias)[0]) + (1,) * nsp))
    return R.add(y, b)


def conv_nd(ctx: LowerCtx, x: relax.Expr, w: relax.Expr, bias: relax.Expr | None,
            strides, pads, dilations, groups: int) -> relax.Expr:
    """relax.nn.conv{1,2,3}d; its padding order (begins, then ends) is ours."""
    nsp = len(shape_of(x)) - 2
    data_layout, kernel_layout = _LAYOUTS[nsp]
    half = dtype_of(x) == "float16"          # numpy (the reference) sums half products in float32
    y = _CONV[nsp](x, w, strides=tuple(strides), padding=tuple(pads), dilation=tuple(dilations),
                   groups=groups, data_layout=data_layout, kernel_layout=kernel_layout,
                   out_dtype="float32" if half else dtype_of(x))
    if half:
        y = R.astype(ctx.emit(y), "float16")
    if bias is None:
        return y
    return _add_channel_bias(ctx, ctx.emit(y), bias)


@lowers(linalg.conv)
def lower_conv(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    if ctx.target.kind == "cuda" and (y := cuda_gemm.float_conv(ctx, node, args)) is not None:
        return [y]
    a = node.attrs
    bias = args[2] if len(args) > 2 else None
    return [conv_nd(ctx, args[0], args[1], bias, a["strides"], a["pads"], a["dilations"],
                    a["groups"])]


def _stuff_and_pad_te(x: te.Tensor, strides, lo, hi) -> te.Tensor:
    """Zero-stuff the spatial axes by `strides`, then pad by lo/hi (negative values crop)."""
    shape = [int(d) for d in x.shape]
    nsp = len(shape) - 2
    stuffed = [(shape[2 + i] - 1) * strides[i] + 1 for i in range(nsp)]
    out = shape[:2] + [stuffed[i] + lo[i] + hi[i] for i in range(nsp)]

    def body(n, c, *sp):
        conds, src = [], []
        for i, o in enumerate(sp):
            j = o - lo[i]
            conds += [j >= 0, j < stuffed[i], tirx.floormod(j, strides[i]) == 0]
            src.append(tirx.floordiv(j, strides[i]))
        safe = [tirx.max(tirx.min(s, shape[2 + i] - 1), 0) for i, s in enumerate(src)]
        return tirx.Select(tirx.all(*conds), x[(n, c, *safe)], tirx.const(0, x.dtype))
    return te.compute(out, body, name="stuffed")


@lowers(linalg.conv_transpose)
def lower_conv_transpose(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    """Transposed conv = direct conv over the zero-stuffed input with the flipped, regrouped
    kernel (exactly the reference's construction); one path for 1-D/2-D/3-D, any groups,
    dilation and output_padding."""
    a = node.attrs
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    s, p, d, g, op = a["strides"], a["pads"], a["dilations"], a["groups"], a["output_padding"]
    xs, ws = shape_of(x), shape_of(w)
    nsp = len(xs) - 2
    ks = ws[2:]
    lo = [(ks[i] - 1) * d[i] - p[i] for i in range(nsp)]
    hi = [(ks[i] - 1) * d[i] - p[i + nsp] + op[i] for i in range(nsp)]
    xp = ctx.emit_te(_stuff_and_pad_te, x, list(s), lo, hi, name="conv_transpose_stuff")
    c, mg = xs[1], ws[1]
    cg = c // g
    wf = ctx.emit(R.flip(w, 2)) if nsp >= 1 else w
    for ax in range(3, 2 + nsp):
        wf = ctx.emit(R.flip(wf, ax))
    wr = ctx.emit(R.reshape(wf, (g, cg, mg) + tuple(ks)))
    wr = ctx.emit(R.permute_dims(wr, [0, 2, 1] + list(range(3, 3 + nsp))))
    wc = ctx.emit(R.reshape(wr, (g * mg, cg) + tuple(ks)))
    return [conv_nd(ctx, xp, wc, bias, (1,) * nsp, (0,) * (2 * nsp), d, g)]
