"""Convs and matmuls by a constant weight on an NVIDIA GPU as the implicit GEMM of
tvm_kernels/cuda_gemm.py:

* q.conv (2-D, ungrouped) and q.matmul by an int8 weight: on int8 tensor cores (target option -int8=mma,
  the default; through mma.sync, or WMMA with -mma=wmma) or with dp4a (-int8=dp4a), int8 / uint8 operands
  read as they are (no int32 copies of the activations), the weight packed and the zero point folded into the
  bias at compile time;
* a float16 conv (2-D, ungrouped; --precision fp16): on float16 tensor cores, float32 sums rounded once,
  the bias added in float16 after it (as the reference does);
* a q.matmul of two int8 / uint8 activations (`batch_matmul`: an attention's Q K^T and P V): a GEMM per batch
  entry on the int8 inner product.

With `LowerCtx.unscheduled` the same computations are built unscheduled (they run on the CPU: how the tests
check their arithmetic, as the GPU schedules' primitives keep a PrimFunc's meaning). `epilogue`: the fused
integer ops the kernel writes instead of its int32 sum (tvm_fused/cuda.py), `epi_values` the tensors it reads.
`conv` / `matmul` / `float_conv` return None where the kernel does not apply (`takes`: int16 operands, groups,
a computed weight or bias, a weight zero point): the op is then lowered generically. `gemm_of` is the GEMM a
node is built as, what the tile pass ranks tiles of.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tvm import relax

from compiler.backends.tvm_kernels import cuda_gemm as kd
from compiler.backends.tvm_lower.registry import LowerCtx, const, shape_of, tvm_dtype
from compiler.gpu_tile import GpuGemm
from compiler.ir import Node, Value
from compiler.ops import linalg
from compiler.ops import quant as q
from compiler.target import Target

R = relax.op
OPERAND_DTYPES = ("int8", "uint8")
DEFAULT = object()          # the target's choice


def _const(v: Value) -> np.ndarray | None:
    return np.asarray(v.const) if v.is_const else None


def tensor_cores(target: Target) -> str:
    """The tensor cores' instructions on a cuda `target`: "mma" (mma.sync m16n8k16 / m16n8k32 and ldmatrix, sm_80
    on) unless it asks for "wmma" (-mma=wmma) or is older."""
    arch = target.arch.removeprefix("sm_")
    return "mma" if target.mma == "sync" and arch.isdigit() and int(arch) >= 80 else "wmma"


def _inner_and_shift(ctx: LowerCtx, inner, xdt: str) -> tuple[str | None, int]:
    """The inner product asked for ("mma" / "wmma": tensor cores, or "dp4a"), and the shift that makes a uint8
    operand int8 for tensor cores."""
    inner = ctx.target.int8 if inner is DEFAULT else inner
    inner = tensor_cores(ctx.target) if inner == "mma" else inner
    return inner, 128 if inner in kd.TENSOR_CORES and xdt == "uint8" else 0


def _tvm_target(ctx: LowerCtx):
    if ctx.target.kind != "cuda":
        return None
    from compiler.backends.tvm_cuda import cuda_target
    return cuda_target(ctx.target)


def conv_index(oh: int, ow: int, out_block: int) -> Callable:
    """(b, r, c) of a conv's GEMM -> the output's logical (n, channel, y, x): rows are the output channels, or,
    when the output is written blocked, every image's pixels (b then 0; ConvGemm)."""
    def index(b, r, c):
        if out_block:
            return b + r // (oh * ow), c, r % (oh * ow) // ow, r % ow
        return b, r, c // ow, c % ow
    return index


@dataclass(frozen=True)
class ConvGemm:
    """A 2-D conv as the GEMM. Written plain (NCHW): rows = output channels, columns = one image's output pixels.
    Written blocked (`out_block` b, NCHW{b}c): rows = the batch's pixels (padded to the tile once, not per image:
    a 7 x 7 image's 49 rows would be padded to 128), columns = output channels, so the write-back's vectors run
    along a block's contiguous channels. `in_block` b: the input arrives NCHW{b}c (the gather reads
    a pixel's 4 channels as one word); `ci` is then its channels padded to the block (a 3-channel image read
    NCHW{4}c: 4), the weight's padding channels 0 (`weight_2d`)."""
    n: int
    ci: int
    h: int
    w: int
    co: int
    kh: int
    kw: int
    oh: int
    ow: int
    co_p: int                   # output channels padded to the tile
    kp: int
    in_block: int = 0
    out_block: int = 0

    @classmethod
    def of(cls, node: Node, weight: np.ndarray, in_block: int = 0, out_block: int = 0) -> ConvGemm:
        n, ci, h, w = node.inputs[0].type.shape
        co, _, kh, kw = weight.shape
        ci = -(-ci // in_block) * in_block if in_block else ci
        oh, ow = node.outputs[0].type.shape[2:]
        m = oh * ow
        if out_block:
            co_p = kd.padded(n * m, co, kd.pick_tile(n * m, co))[1]
        else:
            co_p = kd.padded(co, m, kd.pick_tile(co, m))[0]
        return cls(n, ci, h, w, co, kh, kw, oh, ow, co_p, -(-ci * kh * kw // kd.BK) * kd.BK, in_block, out_block)

    def weight_2d(self, weight: np.ndarray, order: str = "hwc") -> np.ndarray:
        """The (co, K) weight in the gather's reduction `order`, zero over the input's padding channels."""
        pad = self.ci - weight.shape[1]
        if pad:
            weight = np.concatenate([weight, np.zeros((weight.shape[0], pad) + weight.shape[2:], weight.dtype)], 1)
        return kd.conv_weight_2d(weight, order)

    def key(self, node: Node) -> tuple:
        a = node.attrs
        return (self, tuple(a["strides"]), tuple(a["dilations"]), tuple(a["pads"]))

    def gemm(self, half: bool, order: str = "hwc") -> GpuGemm:
        """The GEMM this conv is (what the tile pass ranks tiles of): blocked, one GEMM of the batch's pixels x
        channels; plain, one per image of channels x pixels. Its period: with the gather in (kh, kw, ci) order
        the tap changes every ci reduction elements."""
        m, k = self.oh * self.ow, self.ci * self.kh * self.kw
        period = self.ci if order == "hwc" else 0
        if self.out_block:
            return GpuGemm(1, self.n * m, self.co, k, half, period)
        return GpuGemm(self.n, self.co, m, k, half, period)

    def make(self, node: Node, w_dtype: str, x_dtype: str, c_fn_args: dict, bias_len: int | None, inner: str,
             ctx: LowerCtx, epilogue: kd.Epilogue | None = None, tile: tuple[int, int] | None = None):
        a = node.attrs
        ib = self.in_block
        x_shape = (self.n, self.ci // ib, self.h, self.w, ib) if ib else (self.n, self.ci, self.h, self.w)
        gather = kd.im2col_fn((self.n, self.ci, self.h, self.w), (self.kh, self.kw), a["strides"], a["dilations"],
                              (a["pads"][0], a["pads"][1]), (self.oh, self.ow), in_block=ib,
                              fold_batch=bool(self.out_block), **c_fn_args)
        g = self.gemm(w_dtype == "float16", c_fn_args.get("order", "hwc"))
        x_in, w_in = (x_shape, x_dtype), ((self.co_p, self.kp), w_dtype)
        target, scheduled = _tvm_target(ctx), not ctx.unscheduled
        x_run = ib if ib and c_fn_args.get("order", "hwc") == "hwc" else 4     # a pixel's channel block
        if self.out_block:
            return kd.make_gemm(1, g.rows, g.cols, g.k, x_in, w_in, gather, kd.weight_fn(), bias_len, False,
                                kd.pick_tile(g.rows, g.cols), (False, True), inner, target, scheduled, epilogue,
                                self.out_block, g.period, self.n, tile, (x_run, self.kp))
        return kd.make_gemm(g.batch, g.rows, g.cols, g.k, w_in, x_in, kd.weight_fn(), gather, bias_len, True,
                            kd.pick_tile(g.rows, g.cols), (True, False), inner, target, scheduled, epilogue,
                            k_period=g.period, mma_tile=tile, runs=(self.kp, x_run))

    def output(self, ctx: LowerCtx, gv: relax.GlobalVar, args: list[relax.Expr], dtype: str) -> relax.Expr:
        """The GEMM's result as the conv's NCHW (or NCHW{b}c) output; args: the packed weight, the input, ..."""
        m = self.oh * self.ow
        if self.out_block:
            b = self.out_block
            y = ctx.call_kernel(gv, [args[1], args[0], *args[2:]], (self.n, self.co // b, m, b), dtype)
            return ctx.emit(R.reshape(y, (self.n, self.co // b, self.oh, self.ow, b)))
        y = ctx.call_kernel(gv, args, (self.n, self.co, m), dtype)
        return ctx.emit(R.reshape(y, (self.n, self.co, self.oh, self.ow)))


def takes(node: Node) -> bool:
    """Whether this module's GEMM takes `node`: a q.conv (2-D, ungrouped, constant int8 weight and bias) or a
    q.matmul (a constant 2-D int8 weight without zero point) on int8 / uint8 data, or a float16 conv (2-D,
    ungrouped, constant float16 weight). `conv` / `matmul` / `float_conv` return None for any other."""
    x, w = node.inputs[0], node.inputs[1]
    a, wc, xdt = node.attrs, _const(w), tvm_dtype(x.type.dtype)
    if wc is None:
        return False
    if node.op is q.matmul:
        return (wc.ndim == 2 and str(wc.dtype) == "int8" and int(a["b_zero_point"]) == 0 and xdt in OPERAND_DTYPES
                and x.type.rank >= 2)
    if x.type.rank != 4 or a["groups"] != 1:
        return False
    if node.op is q.conv:
        return (str(wc.dtype) == "int8" and xdt in OPERAND_DTYPES
                and (len(node.inputs) < 3 or node.inputs[2].is_const))
    return node.op is linalg.conv and xdt == "float16" and str(wc.dtype) == "float16"


def gemm_of(node: Node, in_block: int = 0, out_block: int = 0) -> GpuGemm | None:
    """The GEMM `node` is built as (`takes`; blocks as for `conv`), or None where none takes it."""
    if not takes(node):
        return None
    w = node.inputs[1].type.shape
    if node.op is q.matmul:
        return GpuGemm(1, int(np.prod(node.inputs[0].type.shape[:-1])), w[1], w[0], False)
    half = node.op is linalg.conv
    return ConvGemm.of(node, _const(node.inputs[1]), in_block, out_block).gemm(
        half, "hwc" if in_block or not half else "chw")


def conv(ctx: LowerCtx, node: Node, args: list[relax.Expr], inner=DEFAULT, epilogue: kd.Epilogue | None = None,
         epi_values: tuple = (), epi_key: tuple = (), in_block: int = 0, out_block: int = 0,
         tile: tuple[int, int] | None = None) -> relax.Expr | None:
    """`in_block` / `out_block`: args[0] arrives, and the result leaves, NCHW{b}c (0: NCHW); an epilogue's
    (b, r, c) is then ConvGemm.index's. `tile`: the tensor cores' block tile (None: gpu_tile.block_tile)."""
    if node.op is not q.conv or not takes(node):
        return None
    a = node.attrs
    x, w = node.inputs[0], node.inputs[1]
    wc = _const(w)
    bias = _const(node.inputs[2]) if len(node.inputs) > 2 else np.zeros(0, np.int32)
    xdt = tvm_dtype(x.type.dtype)
    inner, shift = _inner_and_shift(ctx, inner, xdt)
    geo = ConvGemm.of(node, wc, in_block, out_block)
    w2d = geo.weight_2d(wc)
    zp = int(a["x_zero_point"])
    gv = ctx.kernel(("int8_conv", inner, ctx.unscheduled, zp, xdt, geo.key(node), epi_key, tile),
                    lambda: geo.make(node, "int8", xdt, {"zp": zp, "x_dtype": xdt, "shift": shift}, geo.co, inner,
                                     ctx, epilogue, tile), "int8_conv2d")
    return geo.output(ctx, gv, [const(kd.pack_rows(w2d, geo.co_p, geo.kp), "int8"), args[0],
                                const(kd.folded_bias(w2d, bias if bias.size else None, zp - shift), "int32"),
                                *epi_values], epilogue.dtype if epilogue is not None else "int32")


def matmul(ctx: LowerCtx, node: Node, args: list[relax.Expr], inner=DEFAULT, epilogue: kd.Epilogue | None = None,
           epi_values: tuple = (), epi_key: tuple = (), tile: tuple[int, int] | None = None) -> relax.Expr | None:
    if node.op is not q.matmul or not takes(node):
        return None
    a = node.attrs
    x, w = node.inputs[0], node.inputs[1]
    wc = _const(w)
    xdt = tvm_dtype(x.type.dtype)
    inner, shift = _inner_and_shift(ctx, inner, xdt)
    shape = tuple(x.type.shape)
    k, cols = wc.shape
    rows = int(np.prod(shape[:-1]))
    simt = kd.pick_tile(rows, cols)
    rows_p, cols_p = kd.padded(rows, cols, simt)
    kp = -(-k // kd.BK) * kd.BK
    zp = int(a["a_zero_point"])
    wt = np.ascontiguousarray(wc.T)                      # (cols, K)
    key = ("int8_matmul", inner, ctx.unscheduled, rows, k, cols, zp, xdt, epi_key, tile)

    def make():
        return kd.make_gemm(
            1, rows, cols, k, ((1, rows, k), xdt), ((cols_p, kp), "int8"), kd.rows_fn(k, rows, zp, xdt, shift),
            kd.weight_fn(), cols, False, simt, (False, True), inner, _tvm_target(ctx), not ctx.unscheduled, epilogue,
            mma_tile=tile, runs=(16 if k % 16 == 0 else 4, kp))
    gv = ctx.kernel(key, make, "int8_matmul")
    x3 = ctx.emit(R.reshape(args[0], (1, rows, k)))
    y = ctx.call_kernel(gv, [x3, const(kd.pack_rows(wt, cols_p, kp), "int8"),
                             const(kd.folded_bias(wt, None, zp - shift), "int32"), *epi_values], (1, rows, cols),
                        epilogue.dtype if epilogue is not None else "int32")
    return ctx.emit(R.reshape(y, shape[:-1] + (cols,)))


def batch_matmul(ctx: LowerCtx, node: Node, args: list[relax.Expr], epilogue: kd.Epilogue | None = None,
                 epi_values: tuple = (), epi_key: tuple = (), b_rows: bool = False) -> relax.Expr | None:
    """A q.matmul of two activations (an attention's Q K^T and P V): int8 or uint8 A (..., M, K) by int8 B
    (..., K, N) with the same batch dimensions and no zero points, one GEMM per batch entry, the operands read as
    they are (the generic lowering made int32 copies of both for an int32 SIMT matmul). int8 x int8 on the
    target's int8 inner product (tensor cores by default); uint8 x int8 with dp4a, which takes the unsigned
    operand as it is (a tensor core's shift of it to int8 would need B's column sums, folded into the bias only
    for a constant weight). `b_rows`: args[1] is B transposed, (..., N, K) (a fused kernel's K of Q K^T, read in
    place of the transpose). None where it does not apply."""
    if node.op is not q.matmul or node.inputs[1].is_const:
        return None
    a, (x, w) = node.attrs, node.inputs[:2]
    xdt, lead = tvm_dtype(x.type.dtype), x.type.shape[:-2]
    if (a["a_zero_point"] or a["b_zero_point"] or a["weight_code"] or xdt not in OPERAND_DTYPES
            or tvm_dtype(w.type.dtype) != "int8" or x.type.rank < 3 or w.type.shape[:-2] != lead):
        return None
    batch, (m, k), n = int(np.prod(lead)), x.type.shape[-2:], w.type.shape[-1]
    inner = "dp4a" if xdt == "uint8" else _inner_and_shift(ctx, DEFAULT, xdt)[0]
    simt = kd.pick_tile(m, n)
    key = ("int8_batch_matmul", inner, ctx.unscheduled, batch, m, k, n, xdt, epi_key, b_rows)
    run = 16 if k % 16 == 0 else 4
    b_shape = (batch, n, k) if b_rows else (batch, k, n)

    def make():
        return kd.make_gemm(batch, m, n, k, ((batch, m, k), xdt), (b_shape, "int8"), kd.rows_fn(k, m, 0, xdt),
                            kd.rows_fn(k, n, 0, "int8") if b_rows else kd.columns_fn(k, n), None, False, simt,
                            (False, False), inner, _tvm_target(ctx), not ctx.unscheduled, epilogue,
                            runs=(run, run if b_rows else 1))
    gv = ctx.kernel(key, make, "int8_batch_matmul")
    y = ctx.call_kernel(gv, [ctx.emit(R.reshape(args[0], (batch, m, k))), ctx.emit(R.reshape(args[1], b_shape)),
                             *epi_values], (batch, m, n), epilogue.dtype if epilogue is not None else "int32")
    return ctx.emit(R.reshape(y, node.outputs[0].type.shape))


def float_conv(ctx: LowerCtx, node: Node, args: list[relax.Expr], epilogue: kd.Epilogue | None = None,
               epi_values: tuple = (), epi_key: tuple = (), in_block: int = 0, out_block: int = 0,
               tile: tuple[int, int] | None = None) -> relax.Expr | None:
    """A float16 conv; with `epilogue` the bias is the epilogue's to add. `in_block` / `out_block` as for `conv`
    (the epilogue then required); a blocked input is gathered in (kh, kw, ci) order (a thread's 4 channels
    contiguous), a plain one in (ci, kh, kw) order (neighbouring pixels of a row)."""
    if node.op is not linalg.conv or not takes(node) or (out_block and epilogue is None):
        return None
    wc = _const(node.inputs[1])
    order = "hwc" if in_block else "chw"
    geo = ConvGemm.of(node, wc, in_block, out_block)
    gv = ctx.kernel(("f16_conv", tensor_cores(ctx.target), ctx.unscheduled, geo.key(node), epi_key, tile),
                    lambda: geo.make(node, "float16", "float16", {"zp": 0, "x_dtype": "float16", "order": order},
                                     None, tensor_cores(ctx.target), ctx, epilogue, tile), "f16_conv2d")
    wp = kd.pack_rows(geo.weight_2d(wc, order), geo.co_p, geo.kp)
    y = geo.output(ctx, gv, [const(wp, "float16"), args[0], *epi_values],
                   epilogue.dtype if epilogue is not None else "float16")
    if len(args) > 2 and epilogue is None:
        y = ctx.emit(R.add(y, ctx.emit(R.reshape(args[2], (1, shape_of(args[2])[0], 1, 1)))))
    return y
