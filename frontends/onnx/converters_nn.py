"""Converters for ONNX neural-network ops: convolutions, pooling, normalizations, softmax and
the contractions Gemm/MatMul/Einsum. auto_pad and output_shape are resolved to explicit pads."""
from __future__ import annotations

import math
from collections.abc import Callable

import onnx

from compiler.ops import elementwise as ew
from compiler.ops import linalg, nn, reduce, shape
from compiler.ops.registry import OpDef
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


def _pool(op: OpDef) -> Callable:
    def convert(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
        if op is nn.max_pool and ctx.output_used(1):
            raise ctx.unsupported("the Indices output is not supported")
        x = ctx.input(0)
        kernel = [int(k) for k in ctx.attr("kernel_shape")]
        n = len(kernel)
        strides, dilations = _ints(ctx, "strides", n, 1), _ints(ctx, "dilations", n, 1)
        pads = _window_pads(ctx, list(ctx.shape(x)[2:]), kernel, strides, dilations)
        extra = {"count_include_pad": bool(ctx.attr("count_include_pad", 0))} \
            if op is nn.avg_pool else {}
        return ctx.emit(op, [x], kernel=kernel, strides=strides, pads=pads, dilations=dilations,
                        ceil_mode=bool(ctx.attr("ceil_mode", 0)), **extra)
    return convert


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


CONVERTERS: dict[str, Callable] = {
    "Conv": _convert_conv, "ConvTranspose": _convert_conv_transpose,
    "MaxPool": _pool(nn.max_pool), "AveragePool": _pool(nn.avg_pool),
    "GlobalAveragePool": _global_pool(reduce.reduce_mean),
    "GlobalMaxPool": _global_pool(reduce.reduce_max),
    "BatchNormalization": _convert_batch_norm, "InstanceNormalization": _convert_instance_norm,
    "LRN": _convert_lrn,
    "Softmax": _softmax(nn.softmax), "LogSoftmax": _softmax(nn.log_softmax),
    "Gemm": _convert_gemm, "MatMul": _convert_matmul, "Einsum": _convert_einsum,
}
