"""Integer and float16 conv2d and matmul for NVIDIA GPUs as one implicit GEMM, with two inner products:

* "mma" (default): tensor cores through mma.sync and ldmatrix (cuda_wmma.py: dlight's schedule with a larger
  reduction step and a pipeline of our own, TVM's mma intrinsics). int8: 16x16x32 s8 x s8 -> s32 fragments (two
  m16n8k32) where the reduction pads to 32 cheaply (gpu_tile.fragment_k; else WMMA's 16x16x16); both operands
  must be int8, so a uint8 activation is read shifted by -128 (its zero point too; `folded_bias` takes the
  shift back out). float16: 16x16x16 f16 x f16 -> f32 fragments (two m16n8k16), its step gpu_tile.k_steps',
  the sum rounded to float16 once (as the reference does).
* "wmma": the same on WMMA's 16x16x16 fragments (target option -mma=wmma: the baseline).
* "dp4a" (integers): CUDA's `__dp4a` (four int8 / uint8 products summed into an int32), our own SIMT
  schedule below.

    out[b, r, c] = sum_k R[b, r, k] * Cc[b, c, k] (+ bias[...])   (int32, wrapping like the reference;
                                                                  float16: a float32 sum rounded once)

`r` indexes the output's rows and `c` its contiguous columns, so a warp's threads write consecutive
addresses: for a conv the rows are output channels and the columns output pixels (out is then NCHW:
`(n, co, oh*ow)`), for a matmul the rows are the input's rows and the columns output channels. One
operand is a constant weight packed at compile time to `(rows or cols, kp)` int8 with kp = K rounded up
to a multiple of BK (zeros beyond K); the other is gathered from the activation by a TE function that
is inlined into its shared-memory load: the im2col of a conv never exists in memory.

Zero points never reach the inner loop: a conv's input is padded with its zero point z, the products
summed as they are, and z * sum(w) taken off through the bias (`folded_bias`): sum((x - z) w) + bias =
sum(x w) + (bias - z sum(w)) modulo 2^32, and a padded position gives z w - z w = 0, as the reference's
padding with the zero point does. A shifted operand x - 128 has the zero point z - 128, the same way.

dp4a schedule (one thread block = a BR x BC output tile, BR = TR * threads_r, BC = TC * threads_c):

    blockIdx.z = b, blockIdx.y = row tile, blockIdx.x = column tile; threadIdx.y / threadIdx.x
    for ko (K / BK):                         both operand tiles staged in shared memory (rows padded by
        sync; cooperative load; sync         4 bytes: no bank conflicts between the threads of a warp)
        for ki (BK / 4), i (TR), j (TC):     acc[i, j] = __dp4a(R_sh[i * threads_r + ty, 4 ki:4 ki + 4],
                                                               C_sh[j * threads_c + tx, 4 ki:4 ki + 4], acc)
    out[...] = acc + bias                    (acc in registers: the TR x TC loops are unrolled)

A thread's outputs are strided by the thread count (i * threads_r + ty), so the write-back of each (i, j)
is one coalesced row of the warp. Tiles beyond the output (M not a multiple of the tile) are computed on
padded operands and not written: `out` has the real (batch, rows, cols) extent.

An `Epilogue` is the write-back of a fused kernel: the integer ops after the conv or matmul (the dyadic
requant, a residual add, a lookup table) as one scalar function of out = acc + bias at (b, r, c), so the
kernel writes its int8 result and the int32 sum never reaches memory; for a float16 conv its bias and float
epilogue (tvm_fused/cuda.py composes both).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import te, tirx

from compiler.gpu_tile import MMA_K, fragment_k

from . import cuda_wmma
from .common import finalize
from .layout import nchwc_index
from .requant import int32_barrier

BK = 32          # bytes of the reduction staged per step (dp4a); the weight is packed to a multiple of it
TENSOR_CORES = ("mma", "wmma")     # the inner products on tensor cores: mma.sync, WMMA (the other: "dp4a")
PAD = 4          # bytes added to each shared row (row stride BK + 4: 9 words, conflict-free)


def _up(v: int, m: int) -> int:
    return -(-v // m) * m


@dataclass(frozen=True)
class Tile:
    threads_r: int = 16
    threads_c: int = 16
    tr: int = 4                  # outputs per thread along rows
    tc: int = 4                  # ... and along columns

    @property
    def br(self) -> int:
        return self.threads_r * self.tr

    @property
    def bc(self) -> int:
        return self.threads_c * self.tc


@dataclass(frozen=True)
class Epilogue:
    """`fn(value, b, r, c, tensors) -> expr` of `dtype`: the output at (b, r, c) from the value there: int32 acc +
    bias (wrapped, as the reference's conv or matmul), or float16(acc) for float16 operands (the epilogue adds the
    bias); `tensors` are placeholders of `inputs` ((shape, dtype) each, passed after the bias)."""
    dtype: str
    inputs: tuple[tuple[tuple[int, ...], str], ...]
    fn: Callable


def pick_tile(rows: int, cols: int) -> Tile:
    """16 x 16 threads; 8 outputs per thread along an axis of 128 or more (a 128-wide tile: more
    products per shared-memory read), 4 along a shorter one, and 8 threads along one of 32 or fewer."""
    def axis(n: int) -> tuple[int, int]:
        return (8, 4) if n <= 32 else (16, 8) if n >= 128 and n % 128 == 0 or n >= 512 else (16, 4)
    (threads_r, tr), (threads_c, tc) = axis(rows), axis(cols)
    return Tile(threads_r, threads_c, tr, tc)


def dp4a_intrin(r_dtype: str, c_dtype: str) -> str:
    """The name of TVM's registered dp4a tensor intrinsic for these operand types (imported for its side
    effect of registering them)."""
    from tvm.s_tir.tensor_intrin import dot_product_common  # noqa: F401
    short = {"int8": "s8", "uint8": "u8"}
    return f"dp4a_{short[str(r_dtype)]}{short[str(c_dtype)]}s32"


def padded(rows: int, cols: int, tile: Tile) -> tuple[int, int]:
    return _up(rows, tile.br), _up(cols, tile.bc)


def make_gemm(batch: int, rows: int, cols: int, k: int,
              r_input: tuple[tuple[int, ...], str], c_input: tuple[tuple[int, ...], str],
              r_fn: Callable, c_fn: Callable, bias_len: int | None, bias_on_rows: bool,
              tile: Tile, contiguous: tuple[bool, bool], inner: str,
              target: tvm.target.Target | None = None, schedule: bool = True,
              epilogue: Epilogue | None = None, out_block: int = 0, k_period: int = 0,
              row_images: int = 1, mma_tile: tuple[int, int] | None = None,
              runs: tuple[int, int] = (4, 4)) -> tirx.PrimFunc:
    """The PrimFunc (r_src, c_src[, bias][, epilogue tensors]) -> out (batch, rows, cols): `inner` "mma" or
    "wmma" (tensor cores; integers fall back to "dp4a" where the tensor-core rule declines, float16 to dlight's
    SIMT matmul) or "dp4a"; `schedule=False` gives the computation unscheduled (what a test runs on the CPU to
    check the arithmetic). out is int32 for integer operands, float16 for float16 ones.

    `r_input` / `c_input`: (shape, dtype) of the tensors the operands are gathered from. `r_fn(src, b, r,
    kk)` / `c_fn(src, b, c, kk)` give an operand's int8 (or, for dp4a, uint8) or float16 value at (b, r or
    c, kk) for kk < kp, every index in range (rows and columns up to their padded extent, kk up to kp = K
    rounded up to BK; on tensor cores up to K rounded up to a fragment's reduction, `mma_k`): they guard their
    own loads. Rows and columns beyond (rows, cols) are computed on the padded tile and never written. bias
    (integers): (bias_len,) int32, added per row (`bias_on_rows`) or per column; None: no bias. `contiguous[i]`:
    operand i is a packed weight (dp4a: its shared-memory load is vectorized). `epilogue` (integers): what is
    written instead of the int32 sum. `out_block` b > 0: the columns are channels written blocked, out is (batch,
    cols / b, rows, b) with the value at (b, r, c) in [b, c // b, r, c % b] (a conv's NCHW{b}c output when its
    rows are pixels; b divides cols); with `row_images` i > 1 (batch 1) the rows are i images' pixels, out is
    (i, cols / b, rows / i, b) and the value at (0, r, c) in [r // (rows / i), c // b, r % (rows / i), c % b].
    `k_period`: the gathered operand's index math jumps every k_period reduction elements (a conv's ci; 0:
    never), which the tensor-core schedule's step respects (gpu_tile.k_steps). `mma_tile`: the tensor cores'
    block tile (rows, cols), each side 16, 32, 64 or 128 (None: gpu_tile.block_tile's); `tile` is dp4a's.
    `runs`: how many consecutive reduction elements (aligned) each operand's function reads contiguous in memory
    (a packed weight: all; a blocked conv input: its channel block), so the tensor cores' staging loads them
    as one vector of up to 16 bytes (cuda_wmma.load_vector)."""
    def build(kp: int) -> tuple[tirx.PrimFunc, tuple[str, str]]:
        return _gemm_func(batch, rows, cols, kp, r_input, c_input, r_fn, c_fn, bias_len, bias_on_rows, tile,
                          epilogue, out_block, row_images)
    half = r_input[1] == "float16"
    kf = mma_k(k, half, inner)
    func, operands = build(_up(k, kf or BK))
    if not schedule:
        return func
    if kf and (half or operands == ("int8", "int8")):
        sync = inner == "mma" and (half or kf == MMA_K)      # (TVM has mma.sync intrinsics for int8 k32 only)
        scheduled = _schedule_mma(func, target, half, _up(k, kf), k_period, mma_tile, runs, kf, sync)
        if scheduled is not None:
            return finalize(scheduled)
    if half:
        return finalize(_schedule_simt(func, target))
    if kf:
        func = build(_up(k, BK))[0]                     # dp4a's steps are BK bytes
    return finalize(_schedule(func, tile, dp4a_intrin(*operands), contiguous))


def mma_k(k: int, half: bool, inner: str) -> int:
    """The reduction of one tensor-core fragment for a GEMM reducing over k (`gpu_tile.fragment_k`: int8 on
    mma.sync 32 where that pads little, else 16), 0 for dp4a."""
    return fragment_k(k, half, mma=inner == "mma") if inner in TENSOR_CORES else 0


def _gemm_func(batch, rows, cols, kp, r_input, c_input, r_fn, c_fn, bias_len, bias_on_rows, tile, epilogue,
               out_block, row_images) -> tuple[tirx.PrimFunc, tuple[str, str]]:
    """make_gemm's computation, its reduction `kp` long (the operands zero beyond K), and its operands' types."""
    rows_p, cols_p = padded(rows, cols, tile)
    r_src = te.placeholder(r_input[0], r_input[1], name="r_src")
    c_src = te.placeholder(c_input[0], c_input[1], name="c_src")
    ra = te.compute((batch, rows_p, kp), lambda b, r, kk: r_fn(r_src, b, r, kk), name="r_op")
    ca = te.compute((batch, cols_p, kp), lambda b, c, kk: c_fn(c_src, b, c, kk), name="c_op")
    half = str(ra.dtype) == "float16"
    acc_dtype = "float32" if half else "int32"
    red = te.reduce_axis((0, kp), name="k")
    acc = te.compute((batch, rows_p, cols_p),
                     lambda b, r, c: te.sum(ra[b, r, red].astype(acc_dtype) * ca[b, c, red].astype(acc_dtype),
                                            axis=red), name="gemm")
    bias = te.placeholder((bias_len,), "int32", name="bias") if bias_len is not None and not half else None
    tensors = [te.placeholder(s, dt, name=f"epi{i}") for i, (s, dt) in enumerate(epilogue.inputs)] \
        if epilogue is not None else []
    params = [r_src, c_src, *([bias] if bias is not None else []), *tensors]

    def write(b, r, c):
        if half:
            v = acc[b, r, c].astype("float16")
            return v if epilogue is None else epilogue.fn(v, b, r, c, tensors)
        v = acc[b, r, c]
        if bias is not None:
            v = v + bias[r if bias_on_rows else c]
        if epilogue is None:
            return v
        # the int32 sum wraps like the reference's; the barrier keeps the simplifier from widening it
        return epilogue.fn(int32_barrier(v), b, r, c, tensors)
    if out_block:
        per = rows // row_images
        out = te.compute((batch * row_images, cols // out_block, per, out_block),
                         lambda b, cb, r, j: write(b // row_images, b % row_images * per + r, cb * out_block + j),
                         name="out")
    else:
        out = te.compute((batch, rows, cols), write, name="out")
    return te.create_prim_func([*params, out]), (str(ra.dtype), str(ca.dtype))


def _schedule_simt(func: tirx.PrimFunc, target: tvm.target.Target) -> tirx.PrimFunc:
    from tvm.s_tir import dlight as dl
    with target:
        for rule in (dl.gpu.Matmul(), dl.gpu.Fallback()):
            sch = rule.apply(func, target, False)
            if sch is not None:
                return sch.mod["main"]
    raise ValueError("no GPU schedule for the float16 GEMM")


def _schedule_mma(func: tirx.PrimFunc, target: tvm.target.Target, half: bool, kp: int,
                  k_period: int = 0, tile: tuple[int, int] | None = None,
                  runs: tuple[int, int] = (4, 4), kf: int = 16, sync: bool = True) -> tirx.PrimFunc | None:
    """The tensor-core schedule of `func` (cuda_wmma.py; fragments reducing over `kf`, on mma.sync or WMMA);
    None where the rule declines or its tensorization fails."""
    from compiler.backends.tvm_cuda_schedule import preload_cuda_intrinsics
    preload_cuda_intrinsics()
    with target:
        return cuda_wmma.schedule(func, target, kp, k_period, half, tile, runs, kf, sync)


def _schedule(func: tirx.PrimFunc, t: Tile, intrin: str, contiguous: tuple[bool, bool]) -> tirx.PrimFunc:
    sch = tvm.s_tir.Schedule(func)
    gemm, out = sch.get_sblock("gemm"), sch.get_sblock("out")
    b, r, c, k = sch.get_loops(gemm)
    by, vy, ty = sch.split(r, [None, t.tr, t.threads_r])      # a thread's rows strided by threads_r:
    bx, vx, tx = sch.split(c, [None, t.tc, t.threads_c])      # virtual threads keep its tile in registers
    ko, ki, k4 = sch.split(k, [None, BK // 4, 4])
    sch.reorder(b, by, bx, vy, vx, ty, tx, ko, ki, k4)
    sch.bind(b, "blockIdx.z")
    sch.bind(by, "blockIdx.y")
    sch.bind(bx, "blockIdx.x")
    sch.bind(vy, "vthread.y")
    sch.bind(vx, "vthread.x")
    sch.bind(ty, "threadIdx.y")
    sch.bind(tx, "threadIdx.x")
    sch.set_scope(gemm, 0, "local")
    sch.reverse_compute_at(out, tx, preserve_unit_loops=True)
    for operand in (0, 1):
        sh = sch.cache_read(gemm, operand, "shared")
        sch.compute_at(sh, ko, preserve_unit_loops=True)
        lines, kk = sch.get_loops(sh)[-2:]           # (rows or cols of the tile, BK)
        if contiguous[operand]:                      # a weight: 4 bytes of a row per thread
            _, fy, fx, v = sch.split(sch.fuse(lines, kk), [None, t.threads_r, t.threads_c, 4])
            sch.vectorize(v)
        else:                                        # gathered: the threads of a warp read neighbouring
            k_o, v = sch.split(kk, [None, 4])        # pixels / rows (coalesced), 4 reduction bytes each
            sch.reorder(k_o, lines, v)
            _, fy, fx = sch.split(sch.fuse(k_o, lines), [None, t.threads_r, t.threads_c])
            sch.unroll(v)
        sch.bind(fy, "threadIdx.y")
        sch.bind(fx, "threadIdx.x")
        sch.storage_align(sh, 0, axis=1, factor=BK, offset=PAD)
    for name in ("r_op", "c_op"):
        sch.compute_inline(sch.get_sblock(name))
    sch.decompose_reduction(gemm, ko)
    sch.unroll(ki)
    sch.tensorize(k4, intrin)
    return sch.mod["main"]


# -- operands ---------------------------------------------------------------------------------------------
def pack_rows(w2d: np.ndarray, rows_p: int, kp: int) -> np.ndarray:
    """(rows, K) -> (rows_p, kp) of the same dtype: zeros beyond."""
    out = np.zeros((rows_p, kp), w2d.dtype)
    out[:w2d.shape[0], :w2d.shape[1]] = w2d
    return out


def folded_bias(w2d: np.ndarray, bias: np.ndarray | None, zp: int) -> np.ndarray:
    """bias - zp * sum_k w[o, k], modulo 2^32 (int32)."""
    s = w2d.astype(np.int64).sum(axis=1) * int(zp)
    b = np.zeros(w2d.shape[0], np.int64) if bias is None else bias.astype(np.int64)
    return ((b - s + 2**31) % 2**32 - 2**31).astype(np.int32)


def im2col_fn(x_shape: tuple[int, int, int, int], kernel: tuple[int, int], strides, dilations, pads,
              out_hw: tuple[int, int], zp: int, x_dtype: str, shift: int = 0, order: str = "hwc",
              in_block: int = 0, fold_batch: bool = False) -> Callable:
    """c_fn of a conv: the input value (minus `shift`: 128 makes a uint8 input int8) under output pixel m
    and reduction index kk; the zero point (minus `shift`) outside the image and beyond the real m / K
    (whose weights are 0 or columns unwritten). `order` of kk: "hwc" = (kh, kw, ci), channels fastest (a
    4-byte group is one pixel's 4 channels when ci % 4 == 0: one bounds check), or "chw" = (ci, kh, kw)
    (neighbouring kk are neighbouring pixels of a row). Measured on an H200 (ResNet-18, batch 32,
    GPU-resident): int8 2.21 ms with "hwc" vs 3.70 with "chw"; float16 2.28 ms with "chw" vs 2.49.
    `in_block` b > 0: the input arrives NCHW{b}c, (n, ci / b, h, w, b) (b divides ci): with "hwc" and 4 | b a
    4-byte group is one aligned word of memory. `fold_batch`: m runs over every image's pixels (b is 0), pixel
    m of image m // (oh * ow): the GEMM's rows are the batch's pixels, padded once rather than per image."""
    n, ci, h, w = x_shape
    kh, kw = kernel
    oh, ow = out_hw
    k_real, m_real = ci * kh * kw, oh * ow

    def fn(x, b, m, kk):
        rows_inside = m < m_real
        if fold_batch:
            rows_inside = m < n * m_real
            b, m = tirx.min(m // m_real, n - 1), m % m_real
        y, xo = m // ow, m % ow
        k_inside, t_row, t_col = kk < k_real, None, None
        if order == "hwc" and ci % 4 == 0:
            # A thread's 4 elements (kk 4j .. 4j+3; a channel block's b: one vector of up to 16 bytes) lie in one
            # tap: TVM's vectorizer needs the tap, the channel block and the bounds free of the lane after
            # simplification. It splits kk // g by lanes (g = the group, dividing ci), not kk // ci where a step
            # spans taps (80 channels, 32-byte steps: (32 s + 16 j + lane) // 80), and (kk // ci) // kw would fold
            # into kk // (ci * kw) (4 channels, 7 taps a row: kk // 28); so the tap and the group are truncdiv /
            # truncmod of kk // g (kk >= 0: the same values), which do not fold, and the bound kk < K is kk // g
            # < K / g (g | ci | K: the same bound where K is padded to a fragment).
            group = in_block or 4
            groups = kk // group
            t = tirx.truncdiv(groups, ci // group)
            c = tirx.truncmod(groups, ci // group) * group + kk % group
            t_row, t_col = tirx.truncdiv(t, kw), tirx.truncmod(t, kw)
            k_inside = groups < k_real // group
        elif order == "hwc":
            t, c = kk // ci, kk % ci
        else:
            c, t = kk // (kh * kw), kk % (kh * kw)
        if t_row is None:
            t_row, t_col = t // kw, t % kw
        iy = y * strides[0] + t_row * dilations[0] - pads[0]
        ix = xo * strides[1] + t_col * dilations[1] - pads[1]
        inside = tirx.all(rows_inside, k_inside, iy >= 0, iy < h, ix >= 0, ix < w)
        c = tirx.min(c, ci - 1)
        value = x[nchwc_index(b, c, iy, ix, in_block)] if in_block else x[b, c, iy, ix]
        return _shifted(inside, value, zp, x_dtype, shift)
    return fn


def _shifted(inside, value, zp: int, dtype: str, shift: int):
    """`value` where `inside`, else the zero point; `shift` 128 reads a uint8 value as int8: x - 128 is x ^ 0x80
    (one XOR of the loaded word for a thread's 4 bytes, where the subtraction took 7 instructions a word)."""
    if not shift:
        return tirx.if_then_else(inside, value, tirx.const(zp, dtype))
    assert shift == 128 and dtype == "uint8", (shift, dtype)
    v = tirx.reinterpret("int8", tirx.bitwise_xor(value, tirx.const(128, "uint8")))
    return tirx.if_then_else(inside, v, tirx.const(zp - shift, "int8"))


def conv_weight_2d(w: np.ndarray, order: str = "hwc") -> np.ndarray:
    """(co, ci, kh, kw) -> (co, K) in im2col_fn's reduction order."""
    if order == "chw":
        return np.ascontiguousarray(w).reshape(w.shape[0], -1)
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(w.shape[0], -1)


def rows_fn(k_real: int, rows_real: int, zp: int, dtype: str, shift: int = 0) -> Callable:
    """r_fn / c_fn of a plain (batch, rows, K) activation (minus `shift`): the zero point beyond its extent."""
    def fn(x, b, r, kk):
        inside = tirx.all(r < rows_real, kk < k_real)
        return _shifted(inside, x[b, tirx.min(r, rows_real - 1), tirx.min(kk, k_real - 1)], zp, dtype, shift)
    return fn


def columns_fn(k_real: int, cols_real: int) -> Callable:
    """c_fn of a (batch, K, cols) int8 activation read by columns (a batched matmul's right operand): 0 beyond its
    extent."""
    def fn(w, b, c, kk):
        inside = tirx.all(c < cols_real, kk < k_real)
        return tirx.if_then_else(inside, w[b, tirx.min(kk, k_real - 1), tirx.min(c, cols_real - 1)],
                                 tirx.const(0, "int8"))
    return fn


def weight_fn() -> Callable:
    return lambda w, b, r, kk: w[r, kk]
