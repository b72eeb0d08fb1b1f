"""Converters for ONNX neural-network ops: convolutions, pooling, normalizations, softmax and
the contractions Gemm/MatMul/Einsum. auto_pad and output_shape are resolved to explicit pads.
LpPool, MaxPool's Indices, MaxUnpool, Col2Im and DeformConv are compositions of IR ops (avg_pool,
gathers and argmax, scatter_elements, conv_transpose, bilinear gathers and a grouped matmul)."""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx

from compiler.ops import elementwise as ew
from compiler.ops import indexing, linalg, nn, reduce, shape
from compiler.ops.registry import OpDef
from compiler.types import DType
from frontends.onnx.context import ConvertContext, Operand


def _ints(ctx: ConvertContext, name: str, n: int, fill: int) -> list[int]:
    value = ctx.attr(name)
    return [int(v) for v in value] if value else [fill] * n


def same_pads(in_sizes: list[int], kernel: list[int], strides: list[int], dilations: list[int],
              upper: bool) -> list[int]:
    """SAME_UPPER/SAME_LOWER: output = ceil(in / stride); the odd pad goes to the end (upper)
    or the beginning (lower). Returns begins then ends."""
    begins, ends = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begins.append(small if upper else big)
        ends.append(big if upper else small)
    return begins + ends


def _window_pads(ctx: ConvertContext, in_sizes: list[int], kernel: list[int], strides: list[int],
                 dilations: list[int]) -> list[int]:
    mode = ctx.attr("auto_pad", "NOTSET")
    n = len(in_sizes)
    if mode == "NOTSET":
        return _ints(ctx, "pads", 2 * n, 0)
    if mode == "VALID":
        return [0] * (2 * n)
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        return same_pads(in_sizes, kernel, strides, dilations, mode == "SAME_UPPER")
    raise ctx.invalid(f"auto_pad {mode!r}")


def conv_attrs(ctx: ConvertContext, x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> dict:
    """The conv attributes (strides, pads, dilations, groups) of the current Conv-like node (Conv,
    ConvInteger, QLinearConv), auto_pad resolved to explicit pads."""
    n = len(x_shape) - 2
    strides, dilations = _ints(ctx, "strides", n, 1), _ints(ctx, "dilations", n, 1)
    pads = _window_pads(ctx, list(x_shape[2:]), list(w_shape[2:]), strides, dilations)
    return dict(strides=strides, pads=pads, dilations=dilations, groups=int(ctx.attr("group", 1)))


def _convert_conv(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    x, w = ctx.input(0), ctx.input(1)
    inputs = [x, w] + ([ctx.input(2)] if ctx.has_input(2) else [])
    return ctx.emit(linalg.conv, inputs, **conv_attrs(ctx, ctx.shape(x), ctx.shape(w)))


def _convert_conv_transpose(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    x, w = ctx.input(0), ctx.input(1)
    n = ctx.rank(x) - 2
    in_sizes, kernel = ctx.shape(x)[2:], ctx.shape(w)[2:]
    strides, dilations = _ints(ctx, "strides", n, 1), _ints(ctx, "dilations", n, 1)
    out_pad = _ints(ctx, "output_padding", n, 0)
    mode = ctx.attr("auto_pad", "NOTSET")
    target = [int(v) for v in ctx.attr("output_shape")][-n:] if ctx.has_attr("output_shape") \
        else None
    if target is None and mode in ("SAME_UPPER", "SAME_LOWER"):
        target = [size * s for size, s in zip(in_sizes, strides)]
    if target is not None:
        # The odd pad goes to the end for SAME_UPPER, else to the start (ONNX spec, as
        # onnxruntime does); a larger requested output is zero-filled at the end.
        begins, ends = [], []
        for i in range(n):
            total = (strides[i] * (in_sizes[i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i]
                     + 1 - target[i])
            half = total // 2
            if total < 0:
                head, tail = 0, total
            else:
                head, tail = (half, total - half) if mode == "SAME_UPPER" else (total - half, half)
            begins.append(head)
            ends.append(tail)
        pads = begins + ends
    elif mode == "VALID":
        pads = [0] * (2 * n)
    else:
        pads = _ints(ctx, "pads", 2 * n, 0)
    inputs = [x, w] + ([ctx.input(2)] if ctx.has_input(2) else [])
    return ctx.emit(linalg.conv_transpose, inputs, strides=strides, pads=pads, dilations=dilations,
                    groups=int(ctx.attr("group", 1)), output_padding=out_pad)


def _pool_attrs(ctx: ConvertContext, x: Operand) -> dict:
    """kernel, strides, pads (auto_pad resolved), dilations and ceil_mode of the current pooling node."""
    kernel = [int(k) for k in ctx.attr("kernel_shape")]
    n = len(kernel)
    strides, dilations = _ints(ctx, "strides", n, 1), _ints(ctx, "dilations", n, 1)
    pads = _window_pads(ctx, list(ctx.shape(x)[2:]), kernel, strides, dilations)
    return {"kernel": kernel, "strides": strides, "pads": pads, "dilations": dilations,
            "ceil_mode": bool(ctx.attr("ceil_mode", 0))}


def _pool(op: OpDef) -> Callable:
    def convert(ctx: ConvertContext, node: onnx.NodeProto) -> Operand | list[Operand]:
        x = ctx.input(0)
        a = _pool_attrs(ctx, x)
        extra = {"count_include_pad": bool(ctx.attr("count_include_pad", 0))} \
            if op is nn.avg_pool else {}
        y = ctx.emit(op, [x], **a, **extra)
        if op is nn.max_pool and ctx.output_used(1):
            return [y, _max_pool_indices(ctx, x, a, int(ctx.attr("storage_order", 0)))]
        return y
    return convert


def _window_taps(sizes: tuple[int, ...], a: dict) -> tuple[list[np.ndarray], np.ndarray]:
    """Where each pooling window reads: per spatial axis i, the input position o * stride + k * dilation
    - pad_begin of output position o and tap k, shaped to broadcast over (*out, *kernel); and whether
    the tap lies inside the input (else it reads padding), of shape (*out, *kernel)."""
    nsp = len(sizes)
    taps, inside = [], np.ones((), bool)
    for i, size in enumerate(sizes):
        k, s, d, lo = a["kernel"][i], a["strides"][i], a["dilations"][i], a["pads"][i]
        out = nn.pool_out_size(size, k, s, lo, a["pads"][i + nsp], d, a["ceil_mode"])
        t = np.arange(out)[:, None] * s + np.arange(k)[None, :] * d - lo
        at = [1] * (2 * nsp)
        at[i], at[nsp + i] = out, k
        taps.append(t.reshape(at))
        inside = inside & (taps[-1] >= 0) & (taps[-1] < size)
    return taps, inside


def _max_pool_indices(ctx: ConvertContext, x: Operand, a: dict, storage_order: int) -> Operand:
    """MaxPool's Indices: where in x each maximum is (the window's first), as an index into x flattened
    over all axes, the spatial ones row-major (storage_order 0) or column-major (1). The windows are
    gathered from x flattened, with one lowest-value slot appended that padding taps read; argmax
    picks the tap. A tap's index is linear in (o, k): a per-window base plus a per-tap offset."""
    dims = ctx.shape(x)
    n, c, sizes = dims[0], dims[1], dims[2:]
    taps, inside = _window_taps(sizes, a)
    out, nsp = inside.shape[:len(sizes)], len(sizes)
    n_out, n_taps, plane = math.prod(out), math.prod(inside.shape[nsp:]), math.prod(sizes)

    def index(strides: list[int]) -> np.ndarray:
        return sum(t * st for t, st in zip(taps, strides)).reshape(n_out, n_taps)
    row_major = [math.prod(sizes[i + 1:]) for i in range(nsp)]
    read = np.where(inside.reshape(n_out, n_taps), index(row_major), plane)
    stored = index(row_major if storage_order == 0 else [math.prod(sizes[:i]) for i in range(nsp)])
    dt = ctx.np_dtype(x)
    lowest = -np.inf if dt.kind == "f" else np.iinfo(dt).min
    flat = ctx.emit(shape.reshape, [x], shape=(n, c, plane))
    flat = ctx.emit(shape.concat, [flat, np.full((n, c, 1), lowest, dt)], axis=2)
    tap = ctx.emit(reduce.argmax, [ctx.emit(shape.gather, [flat, read], axis=2)], axis=3, keepdims=False)
    offset = stored[0] - stored[0, 0]
    base = stored[:, 0] + (np.arange(n * c, dtype=np.int64) * plane).reshape(n, c, 1)
    idx = ctx.emit(ew.add, [ctx.emit(shape.gather, [offset, tap], axis=0), base])
    return ctx.emit(shape.reshape, [idx], shape=(n, c) + out)


def _convert_lp_pool(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """(sum over the window of |x|^p) ^ (1/p), padding adding nothing: the window sum is the average
    over the taps inside the input (avg_pool without padding) times their number, a constant."""
    x = ctx.input(0)
    a = _pool_attrs(ctx, x)
    p = float(ctx.attr("p", 2))
    powered = ctx.emit(ew.pow_, [ctx.emit(ew.abs_, [x]), ctx.const(p, like=x)])
    mean = ctx.emit(nn.avg_pool, [powered], count_include_pad=False, **a)
    _, inside = _window_taps(ctx.shape(x)[2:], a)
    nsp = len(a["kernel"])
    count = inside.sum(axis=tuple(range(nsp, 2 * nsp)))
    total = ctx.emit(ew.mul, [mean, ctx.const(count.reshape((1, 1) + count.shape), like=x)])
    return ctx.emit(ew.pow_, [total, ctx.const(1.0 / p, like=x)])


def _convert_max_unpool(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """Scatter each value of X to its index (as MaxPool's Indices: over the whole tensor, row-major)
    in zeros of the unpooled shape (in - 1) * stride + kernel - pads; a larger output_shape pads the
    end of each axis with zeros (as onnx's reference does)."""
    x, idx = ctx.input(0), ctx.input(1)
    dims = ctx.shape(x)
    nsp = len(dims) - 2
    kernel = [int(k) for k in ctx.attr("kernel_shape")]
    strides, pads = _ints(ctx, "strides", nsp, 1), _ints(ctx, "pads", 2 * nsp, 0)
    unpooled = tuple(dims[:2]) + tuple((dims[2 + i] - 1) * strides[i] + kernel[i] - pads[i] - pads[nsp + i]
                                       for i in range(nsp))
    zeros = np.zeros(math.prod(unpooled), ctx.np_dtype(x))
    flat = [ctx.emit(shape.reshape, [v], shape=(math.prod(dims),)) for v in (idx, x)]
    y = ctx.emit(shape.reshape, [ctx.emit(indexing.scatter_elements, [zeros, *flat], axis=0)], shape=unpooled)
    target = ctx.const_input(2, "MaxUnpool output_shape")
    if target is None:
        return y
    target = tuple(int(d) for d in target.reshape(-1))
    if len(target) != len(unpooled) or any(t < u for t, u in zip(target, unpooled)):
        raise ctx.unsupported(f"output_shape {list(target)} smaller than the unpooled shape {list(unpooled)}")
    grow = [t - u for t, u in zip(target, unpooled)]
    return ctx.emit(shape.pad, [y], pads=[0] * len(grow) + grow)


def _convert_col2im(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """Sum the blocks of (N, C * prod(block), L) into (N, C, *image): a transposed convolution of the
    block columns, laid out on their (n_blocks_0, n_blocks_1, ...) grid, with a one-hot kernel that
    puts block row k of each channel at tap k (C groups, one output channel each)."""
    x = ctx.input(0)
    image = [int(v) for v in ctx.const_input(1, "Col2Im image_shape").reshape(-1)]
    block = [int(v) for v in ctx.const_input(2, "Col2Im block_shape").reshape(-1)]
    nsp, (n, ck, length) = len(image), ctx.shape(x)
    strides, dilations = _ints(ctx, "strides", nsp, 1), _ints(ctx, "dilations", nsp, 1)
    pads = _ints(ctx, "pads", 2 * nsp, 0)
    taps = math.prod(block)
    span = [image[i] + pads[i] + pads[nsp + i] for i in range(nsp)]            # the padded image
    reach = [(block[i] - 1) * dilations[i] + 1 for i in range(nsp)]              # one block's extent
    grid = [(span[i] - reach[i]) // strides[i] + 1 for i in range(nsp)]
    if ck % taps or math.prod(grid) != length:
        raise ctx.invalid(f"input of shape {[n, ck, length]} does not hold {grid} blocks of {block}")
    c = ck // taps
    cols = ctx.emit(shape.reshape, [x], shape=(n, ck, *grid))
    kernel = np.tile(np.eye(taps, dtype=ctx.np_dtype(x)), (c, 1)).reshape(ck, 1, *block)
    rest = [span[i] - (grid[i] - 1) * strides[i] - reach[i] for i in range(nsp)]   # not reached by a block
    return ctx.emit(linalg.conv_transpose, [cols, kernel], strides=strides, pads=pads,
                    dilations=dilations, groups=c, output_padding=rest)


def _global_pool(op: OpDef) -> Callable:
    def convert(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
        x = ctx.input(0)
        return ctx.emit(op, [x], axes=tuple(range(2, ctx.rank(x))), keepdims=True)
    return convert


def _convert_batch_norm(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    if ctx.attr("training_mode", 0) or any(ctx.output_used(i) for i in range(1, 5)):
        raise ctx.unsupported("training mode (running mean/var outputs) is not supported")
    return ctx.emit(nn.batch_norm, [ctx.input(i) for i in range(5)],
                    epsilon=float(ctx.attr("epsilon", 1e-5)))


def _convert_instance_norm(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    return ctx.emit(nn.instance_norm, [ctx.input(i) for i in range(3)],
                    epsilon=float(ctx.attr("epsilon", 1e-5)))


def _convert_lrn(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    return ctx.emit(nn.lrn, [ctx.input(0)], size=int(ctx.attr("size")),
                    alpha=float(ctx.attr("alpha", 1e-4)), beta=float(ctx.attr("beta", 0.75)),
                    bias=float(ctx.attr("bias", 1.0)))


def _softmax(op: OpDef) -> Callable:
    """Opset < 13 normalizes the input flattened to 2-D at `axis` (default 1); 13+ one axis."""
    def convert(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
        x = ctx.input(0)
        dims = ctx.shape(x)
        rank = len(dims)
        if ctx.opset >= 13:
            return ctx.emit(op, [x], axis=int(ctx.attr("axis", -1)) % max(rank, 1))
        axis = int(ctx.attr("axis", 1)) % max(rank, 1)
        if axis == rank - 1:
            return ctx.emit(op, [x], axis=axis)
        flat = ctx.emit(shape.reshape, [x], shape=(math.prod(dims[:axis]), math.prod(dims[axis:])))
        y = ctx.emit(op, [flat], axis=1)
        return ctx.emit(shape.reshape, [y], shape=dims)
    return convert


def _transposed(ctx: ConvertContext, x: Operand, flag: str) -> Operand:
    if not ctx.attr(flag, 0):
        return x
    return ctx.emit(shape.transpose, [x], perm=tuple(reversed(range(ctx.rank(x)))))


def _convert_gemm(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """Gemm -> matmul(A', B') [* alpha] [+ beta * C], transposes folded into constants."""
    a = _transposed(ctx, ctx.input(0), "transA")
    b = _transposed(ctx, ctx.input(1), "transB")
    y = ctx.emit(linalg.matmul, [a, b])
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    if alpha != 1.0:
        y = ctx.emit(ew.mul, [y, ctx.const(alpha, like=y)])
    if ctx.has_input(2) and beta != 0.0:
        c = ctx.input(2)
        if beta != 1.0:
            c = ctx.emit(ew.mul, [c, ctx.const(beta, like=c)])
        y = ctx.emit(ew.add, [y, c])
    return y


def _convert_matmul(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    return ctx.emit(linalg.matmul, [ctx.input(0), ctx.input(1)])


def _convert_einsum(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    equation = "".join(str(ctx.attr("equation")).split())
    return ctx.emit(linalg.einsum, [ctx.input(i) for i in range(ctx.num_inputs())],
                    equation=equation)


def _convert_deform_conv(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """2-D deformable convolution: tap k of window p reads X at its position plus a learned offset (per
    offset group), bilinearly, times the optional mask; the sampled columns (N, C * K, P) then meet W
    as a grouped matmul, plus the optional bias."""
    x, w, offset = ctx.input(0), ctx.input(1), ctx.input(2)
    if ctx.rank(x) != 4:
        raise ctx.unsupported(f"only 2-D deformable convolution (4-D X) is supported, got rank {ctx.rank(x)}")
    (n, c, height, width), m = ctx.shape(x), ctx.shape(w)[0]
    kernel = [int(k) for k in ctx.attr("kernel_shape", ctx.shape(w)[2:])]
    a = {"kernel": kernel, "strides": _ints(ctx, "strides", 2, 1), "pads": _ints(ctx, "pads", 4, 0),
         "dilations": _ints(ctx, "dilations", 2, 1), "ceil_mode": False}
    groups, og = int(ctx.attr("group", 1)), int(ctx.attr("offset_group", 1))
    taps, inside = _window_taps((height, width), a)
    out = inside.shape[:2]
    if tuple(ctx.shape(offset)[2:]) != out:
        raise ctx.invalid(f"offset of shape {list(ctx.shape(offset))} for an output of {list(out)}")
    k, p = math.prod(kernel), math.prod(out)
    offset = ctx.emit(shape.reshape, [offset], shape=(n, og, k, 2, p))
    pos = []
    for i, t in enumerate(taps):      # (K, P): taps before the offset, kernel axes first as offset has them
        start = np.broadcast_to(t, inside.shape).transpose(2, 3, 0, 1).reshape(k, p)
        pos.append(ctx.emit(ew.add, [ctx.emit(shape.gather, [offset, np.array(i)], axis=3),
                                     start.astype(ctx.np_dtype(x))]))
    planes = ctx.emit(shape.reshape, [x], shape=(n, og, c // og, height * width))
    cols = _bilinear(ctx, planes, pos, (height, width))
    if ctx.has_input(4):
        cols = ctx.emit(ew.mul, [cols, ctx.emit(shape.reshape, [ctx.input(4)], shape=(n, og, 1, k * p))])
    cols = ctx.emit(shape.reshape, [cols], shape=(n, groups, c // groups * k, p))
    rows = ctx.emit(shape.reshape, [w], shape=(groups, m // groups, c // groups * k))
    y = ctx.emit(shape.reshape, [ctx.emit(linalg.matmul, [rows, cols])], shape=(n, m, *out))
    if ctx.has_input(3):
        y = ctx.emit(ew.add, [y, ctx.emit(shape.reshape, [ctx.input(3)], shape=(1, m, 1, 1))])
    return y


def _bilinear(ctx: ConvertContext, planes: Operand, pos: list[Operand], sizes: tuple[int, int]) -> Operand:
    """planes (N, G, C/G, H * W) sampled at the float positions pos = [rows, cols], each (N, G, K, P):
    the weighted sum of the four surrounding pixels (a pixel outside the plane counts 0), gathered at
    flat indices computed from the positions; (N, G, C/G, K * P)."""
    n, g, per_group, _ = ctx.shape(planes)
    per_tap = math.prod(ctx.shape(pos[0])[2:])
    low = [ctx.emit(ew.floor, [p]) for p in pos]
    frac = [ctx.emit(ew.sub, [p, f]) for p, f in zip(pos, low)]
    total = None
    for corner in ((0, 0), (0, 1), (1, 0), (1, 1)):
        at, weight, inside = [], None, None
        for i, size in enumerate(sizes):
            p = ctx.emit(ew.add, [low[i], ctx.const(corner[i], like=planes)])
            share = frac[i] if corner[i] else ctx.emit(ew.sub, [ctx.const(1, like=planes), frac[i]])
            ok = ctx.emit(ew.logical_and, [ctx.emit(ew.greater, [p, ctx.const(-1, like=planes)]),
                                           ctx.emit(ew.less, [p, ctx.const(size, like=planes)])])
            weight = share if weight is None else ctx.emit(ew.mul, [weight, share])
            inside = ok if inside is None else ctx.emit(ew.logical_and, [inside, ok])
            at.append(ctx.emit(ew.clip, [p], min=0.0, max=float(size - 1)))
        flat = ctx.emit(ew.add, [ctx.emit(ew.mul, [at[0], ctx.const(sizes[1], like=planes)]), at[1]])
        idx = ctx.emit(shape.reshape, [ctx.emit(ew.cast, [flat], to=DType.I64)], shape=(n, g, 1, per_tap))
        idx = ctx.emit(shape.expand, [idx], shape=(n, g, per_group, per_tap))
        weight = ctx.emit(ew.where, [inside, weight, ctx.const(0, like=planes)])
        term = ctx.emit(ew.mul, [ctx.emit(indexing.gather_elements, [planes, idx], axis=3),
                                 ctx.emit(shape.reshape, [weight], shape=(n, g, 1, per_tap))])
        total = term if total is None else ctx.emit(ew.add, [total, term])
    return total


CONVERTERS: dict[str, Callable] = {
    "Conv": _convert_conv, "ConvTranspose": _convert_conv_transpose,
    "MaxPool": _pool(nn.max_pool), "AveragePool": _pool(nn.avg_pool),
    "LpPool": _convert_lp_pool, "MaxUnpool": _convert_max_unpool, "Col2Im": _convert_col2im,
    "DeformConv": _convert_deform_conv,
    "GlobalAveragePool": _global_pool(reduce.reduce_mean),
    "GlobalMaxPool": _global_pool(reduce.reduce_max),
    "BatchNormalization": _convert_batch_norm, "InstanceNormalization": _convert_instance_norm,
    "LRN": _convert_lrn,
    "Softmax": _softmax(nn.softmax), "LogSoftmax": _softmax(nn.log_softmax),
    "Gemm": _convert_gemm, "MatMul": _convert_matmul, "Einsum": _convert_einsum,
}
