"""Convs and matmuls by a constant weight on an NVIDIA GPU as the implicit GEMM of
tvm_kernels/cuda_gemm.py:

* q.conv (2-D, ungrouped) and q.matmul by an int8 weight: on int8 tensor cores (target option -int8=mma,
  the default) or with dp4a (-int8=dp4a), int8 / uint8 operands read as they are (no int32 copies of the
  activations), the weight packed and the zero point folded into the bias at compile time;
* a float16 conv (2-D, ungrouped; --precision fp16): on float16 tensor cores, float32 sums rounded once,
  the bias added in float16 after it (as the reference does).

`schedule=False` gives the same computation unscheduled (it runs on the CPU: how the tests check its
arithmetic, as the GPU schedules' primitives keep a PrimFunc's meaning). `conv` / `matmul` /
`float_conv` return None where the kernel does not apply (int16 operands, groups, a computed weight or
bias, a weight zero point): the op is then lowered generically.
"""
from __future__ import annotations

import numpy as np
from tvm import relax

from compiler.backends.tvm_kernels import cuda_gemm as kd
from compiler.backends.tvm_lower.registry import LowerCtx, const, shape_of, tvm_dtype
from compiler.ir import Node, Value

R = relax.op
OPERAND_DTYPES = ("int8", "uint8")
DEFAULT = object()          # the target's choice


def _const(v: Value) -> np.ndarray | None:
    return np.asarray(v.const) if v.is_const else None


def _slice_to(ctx: LowerCtx, y: relax.Expr, padded: tuple[int, ...], real: tuple[int, ...]) -> relax.Expr:
    if padded == real:
        return y
    axes = [i for i, (p, r) in enumerate(zip(padded, real)) if p != r]
    return ctx.emit(R.strided_slice(y, axes=axes, begin=[0] * len(axes), end=[real[i] for i in axes]))


def _inner_and_shift(ctx: LowerCtx, inner, xdt: str) -> tuple[str | None, int]:
    """The inner product asked for, and the shift that makes a uint8 operand int8 for tensor cores."""
    inner = ctx.target.int8 if inner is DEFAULT else inner
    return inner, 128 if inner == "mma" and xdt == "uint8" else 0


def _tvm_target(ctx: LowerCtx):
    if ctx.target.kind != "cuda":
        return None
    from compiler.backends.tvm_cuda import cuda_target
    return cuda_target(ctx.target)


def conv(ctx: LowerCtx, node: Node, args: list[relax.Expr], inner=DEFAULT,
         schedule: bool = True) -> relax.Expr | None:
    a = node.attrs
    x, w = node.inputs[0], node.inputs[1]
    wc = _const(w)
    bias = _const(node.inputs[2]) if len(node.inputs) > 2 else np.zeros(0, np.int32)
    xdt = tvm_dtype(x.type.dtype)
    if (x.type.rank != 4 or a["groups"] != 1 or wc is None or bias is None or xdt not in OPERAND_DTYPES
            or str(wc.dtype) != "int8"):
        return None
    inner, shift = _inner_and_shift(ctx, inner, xdt)
    n, ci, h, wd = x.type.shape
    co, _, kh, kw = wc.shape
    oh, ow = node.outputs[0].type.shape[2:]
    k, m = ci * kh * kw, oh * ow
    tile = kd.pick_tile(co, m)
    rows_p, cols_p = kd.padded(co, m, tile)
    kp = -(-k // kd.BK) * kd.BK
    w2d = kd.conv_weight_2d(wc)
    zp = int(a["x_zero_point"])
    pads, strides, dil = a["pads"], a["strides"], a["dilations"]
    key = ("int8_conv", inner, schedule, n, ci, h, wd, co, kh, kw, tuple(strides), tuple(dil), tuple(pads), zp, xdt)

    def make():
        return kd.make_gemm(
            n, co, m, k, ((rows_p, kp), "int8"), ((n, ci, h, wd), xdt), kd.weight_fn(),
            kd.im2col_fn((n, ci, h, wd), (kh, kw), strides, dil, (pads[0], pads[1]), (oh, ow), zp, xdt, shift),
            co, True, tile, (True, False), inner, _tvm_target(ctx), schedule)[0]
    gv = ctx.kernel(key, make, "int8_conv2d")
    y = ctx.call_kernel(gv, [const(kd.pack_rows(w2d, rows_p, kp), "int8"), args[0],
                             const(kd.folded_bias(w2d, bias if bias.size else None, zp - shift), "int32")],
                        (n, rows_p, cols_p), "int32")
    y = _slice_to(ctx, y, (n, rows_p, cols_p), (n, co, m))
    return ctx.emit(R.reshape(y, (n, co, oh, ow)))


def matmul(ctx: LowerCtx, node: Node, args: list[relax.Expr], inner=DEFAULT,
           schedule: bool = True) -> relax.Expr | None:
    a = node.attrs
    x, w = node.inputs[0], node.inputs[1]
    wc = _const(w)
    xdt = tvm_dtype(x.type.dtype)
    if (wc is None or wc.ndim != 2 or str(wc.dtype) != "int8" or int(a["b_zero_point"]) != 0
            or xdt not in OPERAND_DTYPES or x.type.rank < 2):
        return None
    inner, shift = _inner_and_shift(ctx, inner, xdt)
    shape = tuple(x.type.shape)
    k, cols = wc.shape
    rows = int(np.prod(shape[:-1]))
    tile = kd.pick_tile(rows, cols)
    rows_p, cols_p = kd.padded(rows, cols, tile)
    kp = -(-k // kd.BK) * kd.BK
    zp = int(a["a_zero_point"])
    wt = np.ascontiguousarray(wc.T)                      # (cols, K)
    key = ("int8_matmul", inner, schedule, rows, k, cols, zp, xdt)

    def make():
        return kd.make_gemm(
            1, rows, cols, k, ((1, rows, k), xdt), ((cols_p, kp), "int8"), kd.rows_fn(k, rows, zp, xdt, shift),
            kd.weight_fn(), cols, False, tile, (False, True), inner, _tvm_target(ctx), schedule)[0]
    gv = ctx.kernel(key, make, "int8_matmul")
    x3 = ctx.emit(R.reshape(args[0], (1, rows, k)))
    y = ctx.call_kernel(gv, [x3, const(kd.pack_rows(wt, cols_p, kp), "int8"),
                             const(kd.folded_bias(wt, None, zp - shift), "int32")], (1, rows_p, cols_p), "int32")
    y = _slice_to(ctx, y, (1, rows_p, cols_p), (1, rows, cols))
    return ctx.emit(R.reshape(y, shape[:-1] + (cols,)))


def float_conv(ctx: LowerCtx, node: Node, args: list[relax.Expr], schedule: bool = True) -> relax.Expr | None:
    a = node.attrs
    x, w = node.inputs[0], node.inputs[1]
    wc = _const(w)
    if (x.type.rank != 4 or a["groups"] != 1 or wc is None or tvm_dtype(x.type.dtype) != "float16"
            or str(wc.dtype) != "float16"):
        return None
    n, ci, h, wd = x.type.shape
    co, _, kh, kw = wc.shape
    oh, ow = node.outputs[0].type.shape[2:]
    k, m = ci * kh * kw, oh * ow
    tile = kd.pick_tile(co, m)
    rows_p, cols_p = kd.padded(co, m, tile)
    kp = -(-k // kd.BK) * kd.BK
    pads, strides, dil = a["pads"], a["strides"], a["dilations"]
    key = ("f16_conv", schedule, n, ci, h, wd, co, kh, kw, tuple(strides), tuple(dil), tuple(pads))

    def make():
        return kd.make_gemm(
            n, co, m, k, ((rows_p, kp), "float16"), ((n, ci, h, wd), "float16"), kd.weight_fn(),
            kd.im2col_fn((n, ci, h, wd), (kh, kw), strides, dil, (pads[0], pads[1]), (oh, ow), 0, "float16",
                         order="chw"),
            None, True, tile, (True, False), "mma", _tvm_target(ctx), schedule)[0]
    gv = ctx.kernel(key, make, "f16_conv2d")
    wp = kd.pack_rows(kd.conv_weight_2d(wc, "chw"), rows_p, kp)
    y = ctx.call_kernel(gv, [const(wp, "float16"), args[0]], (n, rows_p, cols_p), "float16")
    y = _slice_to(ctx, y, (n, rows_p, cols_p), (n, co, m))
    y = ctx.emit(R.reshape(y, (n, co, oh, ow)))
    if len(args) > 2:
        y = ctx.emit(R.add(y, ctx.emit(R.reshape(args[2], (1, shape_of(args[2])[0], 1, 1)))))
    return y
