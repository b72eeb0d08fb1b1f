"""Integer ops of quantized graphs (dialect `q`). Their references ARE the integer semantics of
DESIGN.md; every backend must match them bit for bit.

    quantize    f32 -> int   q = clamp(rint(x / scale) + zero_point, qmin, qmax)   (ties to even)
    dequantize  int -> f32   x = (q - zero_point) * scale                         (graph boundary)
    conv        int8/uint8/int16 x int8 -> int32   sum((x - x_zp) * w) + bias, padding contributes 0
    matmul      int8/uint8/int16 x int8/uint8/int16 -> int32   (a - a_zp) @ (b - b_zp)
                (int16 activations: the layers QuantConfig.keep_16bit keeps wide; the int32 sum wraps like
                any other, so range analysis must prove it cannot overflow with the actual weights)
                conv and matmul may carry weight_code ("pow2x1" / "pow2x2": every weight is a sum of 1 or 2
                signed powers of two, passes/shiftadd.py) and realization ("vnni" / "shift": the kernel
                that runs it); neither changes the meaning
    requant     int -> int   y = clamp(((x - in_zp) * m + 2^(c-1)) >> c) + out_zp, qmin, qmax)
                             in int64, >> arithmetic; c = 0 means no rounding term; m, c per
                             tensor or per channel along `axis`.
    table       int8/uint8/int16 -> int   y = table[x - min(dtype)]   (passes/tabulate.py)
    resize_linear  int8/uint8 NCHW -> same grid   bilinear H, W resize in int32 with F-bit weights:
                   y = clamp(((sum_4taps (x - zp) * wy * wx + 2^(2F-1)) >> 2F) + zp)  (resize_linear_values)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from compiler.ops._util import norm_axis
from compiler.ops.linalg import _conv_infer, _matmul_infer, conv_reference
from compiler.ops.registry import Attr, TypeRuleError, define
from compiler.ops.shape import source_coords
from compiler.types import DType, TensorType

INT_RANGE = {DType.I4: (-8, 7), DType.I8: (-128, 127), DType.U8: (0, 255),
             DType.I16: (-32768, 32767), DType.I32: (-2**31, 2**31 - 1)}
ACTIVATION_TYPES = (DType.I8, DType.U8, DType.I16, DType.I4)
INT_DATA = (DType.I8, DType.U8, DType.I16)   # the activations the integer kernels read (int16: QuantConfig.keep_16bit)


def _need(t: TensorType, allowed: tuple[DType, ...], what: str) -> None:
    if t.dtype not in allowed:
        raise TypeRuleError(f"{what} must be {'/'.join(d.value for d in allowed)}, got {t.dtype.value}")


def _check_clamp(attrs: dict[str, Any], out: DType) -> None:
    lo, hi = INT_RANGE[out]
    if not lo <= attrs["qmin"] <= attrs["qmax"] <= hi:
        raise TypeRuleError(f"clamp [{attrs['qmin']}, {attrs['qmax']}] outside {out.value} [{lo}, {hi}]")


# -- quantize / dequantize ---------------------------------------------------------
def _quantize_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    _need(ins[0], (DType.F32,), "quantize input")
    _need(TensorType((), attrs["dtype"]), ACTIVATION_TYPES, "quantize output")
    _check_clamp(attrs, attrs["dtype"])
    if attrs["scale"] <= 0:
        raise TypeRuleError("quantize scale must be positive")
    return [TensorType(ins[0].shape, attrs["dtype"])]


def _quantize_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    q = np.rint(ins[0] / np.float32(a["scale"])).astype(np.float64) + a["zero_point"]
    return [np.clip(q, a["qmin"], a["qmax"]).astype(a["dtype"].numpy)]


quantize = define("q.quantize", "q = clamp(rint(x / scale) + zero_point, qmin, qmax); x / scale in "
                  "float32, rint rounds ties to even.", _quantize_infer, _quantize_ref, 1,
                  scale=Attr("float"), zero_point=Attr("int", 0), dtype=Attr("dtype"),
                  qmin=Attr("int"), qmax=Attr("int"))


def _dequantize_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    _need(ins[0], (*ACTIVATION_TYPES, DType.I32), "dequantize input")
    n = len(attrs["scale"])
    if len(attrs["zero_point"]) != n or (n > 1 and ins[0].shape[norm_axis(attrs["axis"], ins[0].rank)] != n):
        raise TypeRuleError(f"dequantize has {n} scales for shape {ins[0].shape}")
    return [TensorType(ins[0].shape, DType.F32)]


def _per_axis(v: tuple, rank: int, axis: int, dtype) -> np.ndarray:
    arr = np.asarray(v, dtype=dtype)
    if arr.size == 1:
        return arr.reshape(())
    shape = [1] * rank
    shape[norm_axis(axis, rank)] = arr.size
    return arr.reshape(shape)


def _dequantize_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x = ins[0]
    s = _per_axis(a["scale"], x.ndim, a["axis"], np.float32)
    z = _per_axis(a["zero_point"], x.ndim, a["axis"], np.int64)
    return [((x.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)]


dequantize = define("q.dequantize", "x = (q - zero_point) * scale in float32, per tensor or per "
                    "channel along axis.", _dequantize_infer, _dequantize_ref, 1,
                    scale=Attr("floats"), zero_point=Attr("ints"), axis=Attr("int", 1))


# -- integer contractions --------------------------------------------------------------
def _int_operands(ins: list[TensorType], what: str, wide_b: bool = False) -> None:
    _need(ins[0], (DType.I8, DType.U8, DType.I4, DType.I16), f"{what} input")
    _need(ins[1], (DType.I8, DType.U8, DType.I4, *((DType.I16,) if wide_b else ())), f"{what} weight")
    if len(ins) > 2:
        _need(ins[2], (DType.I32,), f"{what} bias")


WEIGHT_CODES = ("", "pow2x1", "pow2x2")
REALIZATIONS = ("", "vnni", "shift")


def _check_code(attrs: dict[str, Any]) -> None:
    if attrs["weight_code"] not in WEIGHT_CODES or attrs["realization"] not in REALIZATIONS:
        raise TypeRuleError(f"weight_code {attrs['weight_code']!r} / realization {attrs['realization']!r}: "
                            f"expected one of {WEIGHT_CODES} / {REALIZATIONS}")


def _qconv_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    _int_operands(ins, "q.conv")
    _check_code(attrs)
    f32 = [TensorType(t.shape, DType.F32) for t in ins]
    return [TensorType(_conv_infer(f32, attrs)[0].shape, DType.I32)]


def exact_sum_dtype(x: np.ndarray, w: np.ndarray, terms: int, bias: np.ndarray | None = None) -> type:
    """The dtype an integer contraction of int64 `x` and `w` (`terms` products per output, then `bias`) is summed
    in: float64 where every partial sum, in any order, is an integer below 2^53 (exact, and numpy hands it to
    BLAS), else int64 (numpy's integer einsum / matmul, no BLAS). The result is the same integer either way."""
    def amax(a):
        return int(np.abs(a).max(initial=0)) if a is not None and a.size else 0
    return np.float64 if amax(x) * amax(w) * terms + amax(bias) < 2**53 else np.int64


def _qconv_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x = ins[0].astype(np.int64) - a["x_zero_point"]
    w = ins[1].astype(np.int64)
    b = ins[2].astype(np.int64) if len(ins) > 2 else None
    dt = exact_sum_dtype(x, w, w[0].size, b)
    x, w, b = x.astype(dt), w.astype(dt), None if b is None else b.astype(dt)
    if a["groups"] == x.shape[1] == w.shape[0] and x.ndim == 4:
        y = _depthwise_sum(x, w, b, a["strides"], a["pads"], a["dilations"])
    else:
        y = conv_reference(x, w, b, a["strides"], a["pads"], a["dilations"], a["groups"])
    return [y.astype(np.int64).astype(np.int32)]


def _depthwise_sum(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, strides, pads, dilations) -> np.ndarray:
    """conv_reference for a 2-D depthwise conv (one filter per channel), as one strided multiply-add per tap:
    the same integers (exact_sum_dtype), without einsum's per-channel loop."""
    (sh, sw), (dh, dw) = strides, dilations
    xp = np.pad(x, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    kh, kw = w.shape[2:]
    oh = (xp.shape[2] - (kh - 1) * dh - 1) // sh + 1
    ow = (xp.shape[3] - (kw - 1) * dw - 1) // sw + 1
    y = np.zeros((x.shape[0], x.shape[1], oh, ow), x.dtype)
    for r in range(kh):
        for t in range(kw):
            tap = xp[:, :, r * dh:r * dh + (oh - 1) * sh + 1:sh, t * dw:t * dw + (ow - 1) * sw + 1:sw]
            y += tap * w[:, 0, r, t][None, :, None, None]
    return y if b is None else y + b[None, :, None, None]


conv = define("q.conv", "Integer conv (ONNX Conv semantics): int32 sum((x - x_zero_point) * w) + "
              "bias; padded positions contribute 0.", _qconv_infer, _qconv_ref, (2, 3),
              strides=Attr("ints"), pads=Attr("ints"), dilations=Attr("ints"), groups=Attr("int", 1),
              x_zero_point=Attr("int", 0), weight_code=Attr("str", ""), realization=Attr("str", ""))


def _qmatmul_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    _int_operands(ins, "q.matmul", wide_b=True)
    _check_code(attrs)
    f32 = [TensorType(t.shape, DType.F32) for t in ins]
    return [TensorType(_matmul_infer(f32, attrs)[0].shape, DType.I32)]


def _qmatmul_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    x = ins[0].astype(np.int64) - a["a_zero_point"]
    w = ins[1].astype(np.int64) - a["b_zero_point"]
    dt = exact_sum_dtype(x, w, x.shape[-1])
    return [np.matmul(x.astype(dt), w.astype(dt)).astype(np.int64).astype(np.int32)]


matmul = define("q.matmul", "Integer numpy.matmul: int32 (a - a_zero_point) @ (b - b_zero_point).",
                _qmatmul_infer, _qmatmul_ref, 2, a_zero_point=Attr("int", 0), b_zero_point=Attr("int", 0),
                weight_code=Attr("str", ""), realization=Attr("str", ""))


# -- table lookup ----------------------------------------------------------------------------
TABLE_INDEX_TYPES = (DType.I8, DType.U8, DType.I16)


def _table_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x, t = ins
    _need(x, TABLE_INDEX_TYPES, "table index")
    _need(t, (DType.I8, DType.U8, DType.I16, DType.I32), "table")
    lo, hi = INT_RANGE[x.dtype]
    if t.shape != (hi - lo + 1,):
        raise TypeRuleError(f"a table indexed by {x.dtype.value} needs shape ({hi - lo + 1},), got {t.shape}")
    return [TensorType(x.shape, t.dtype)]


def table_values(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    lo = np.iinfo(x.dtype).min
    return np.asarray(t)[np.asarray(x, np.int64) - lo]


table = define("q.table", "Elementwise lookup: y = table[x - min(x's dtype)], one entry per value of the "
               "int8/uint8/int16 index x (256 or 65536 entries, int8..int32).",
               _table_infer, lambda ins, a: [table_values(ins[0], ins[1])], 2)


# -- requantization -----------------------------------------------------------------------
def _requant_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x = ins[0]
    _need(x, (*ACTIVATION_TYPES, DType.I32), "requant input")
    out = attrs["dtype"]
    _need(TensorType((), out), (*ACTIVATION_TYPES, DType.I32), "requant output")
    _check_clamp(attrs, out)
    m, c = attrs["multiplier"], attrs["shift"]
    if len(m) != len(c) or not m:
        raise TypeRuleError("requant needs one shift per multiplier")
    if len(m) > 1 and x.shape[norm_axis(attrs["axis"], x.rank)] != len(m):
        raise TypeRuleError(f"requant has {len(m)} multipliers for shape {x.shape}, axis {attrs['axis']}")
    if not all(0 <= v < 2**31 for v in m) or not all(0 <= v <= 62 for v in c):
        raise TypeRuleError("requant multipliers must be in [0, 2^31) and shifts in [0, 62]")
    return [TensorType(x.shape, out)]


def requant_values(x: np.ndarray, multiplier, shift, in_zp: int, out_zp: int, qmin: int, qmax: int,
                   axis: int = 1) -> np.ndarray:
    """The one rounding rule, in int64: clamp(((x - in_zp) * m + 2^(c-1)) >> c) + out_zp)."""
    m = _per_axis(multiplier, x.ndim, axis, np.int64)
    c = _per_axis(shift, x.ndim, axis, np.int64)
    rnd = np.where(c > 0, np.left_shift(np.int64(1), np.maximum(c - 1, 0)), 0)
    y = ((x.astype(np.int64) - in_zp) * m + rnd) >> c
    return np.clip(y + out_zp, qmin, qmax)


def _requant_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    y = requant_values(ins[0], a["multiplier"], a["shift"], a["in_zero_point"], a["zero_point"],
                       a["qmin"], a["qmax"], a["axis"])
    return [y.astype(a["dtype"].numpy)]


requant = define("q.requant", "Dyadic requantization: y = clamp(((x - in_zero_point) * m + 2^(c-1)) >> c"
                 " + zero_point, qmin, qmax), x*m in int64, >> arithmetic, no rounding term when c = 0; "
                 "m and c per tensor or per channel along axis.", _requant_infer, _requant_ref, 1,
                 multiplier=Attr("ints"), shift=Attr("ints"), zero_point=Attr("int", 0),
                 in_zero_point=Attr("int", 0), qmin=Attr("int"), qmax=Attr("int"),
                 dtype=Attr("dtype"), axis=Attr("int", 1))


def dyadic(ratio: float) -> tuple[int, int]:
    """(m, c) with m / 2^c ~= ratio, m a 31-bit mantissa (frexp, HAWQV3/TVM), c in [0, 62].
    The ratio is first rounded to float32, as the scales are stored."""
    r = float(np.float32(ratio))
    if r <= 0:
        return 0, 0
    f, e = np.frexp(r)
    m = int(np.floor(f * 2**31 + 0.5))
    if m == 2**31:
        m, e = m // 2, e + 1
    c = 31 - int(e)
    while c > 62:                 # tiny ratios: drop mantissa bits
        m, c = m >> 1, c - 1
    if c < 0:
        raise TypeRuleError(f"requant ratio {ratio} is too large for a 31-bit multiplier")
    return m, c


# -- bilinear resize ------------------------------------------------------------------------
RESIZE_COORD_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric")
RESIZE_FRAC_BITS = 10          # F: the weights' fractional bits (passes/dyadic.py)
RESIZE_MAX_FRAC_BITS = 11      # 255 * 2^(2F) + 2^(2F-1) <= 2^31 - 1: the 4-tap sum of 8-bit values fits int32


def resize_linear_taps(out_size: int, in_size: int, scale: float, mode: str,
                       frac_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """One axis of q.resize_linear: (idx, w), both (out_size, 2) int32. The taps are nn.resize's linear
    ones (shape.source_coords in float32, clipped to [0, in_size - 1]; lo = floor(c), hi = min(lo + 1,
    in_size - 1)); the far tap's weight c - lo is rounded half up to F fractional bits,
    w1 = floor((c - lo) * 2^F + 1/2), and w0 = 2^F - w1, so each pair sums to exactly 2^F."""
    c = np.clip(source_coords(out_size, in_size, scale, mode).astype(np.float64), 0, in_size - 1)
    lo = np.floor(c).astype(np.int64)
    one = 1 << frac_bits
    w1 = np.floor((c - lo) * one + 0.5).astype(np.int64)
    idx = np.stack([lo, np.minimum(lo + 1, in_size - 1)], axis=1)
    return idx.astype(np.int32), np.stack([one - w1, w1], axis=1).astype(np.int32)


def resize_linear_tables(in_hw: tuple[int, int], a: dict[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(idx_h, w_h), (idx_w, w_w)] of q.resize_linear `a` on an input of spatial shape in_hw."""
    return [resize_linear_taps(a["sizes"][k], in_hw[k], a["scales"][k], a["coordinate_transformation_mode"],
                               a["frac_bits"]) for k in range(2)]


def _resize_linear_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x = ins[0]
    _need(x, (DType.I8, DType.U8), "resize_linear input")
    if x.rank != 4:
        raise TypeRuleError(f"resize_linear takes an NCHW tensor, got rank {x.rank}")
    sizes, scales, f = attrs["sizes"], attrs["scales"], attrs["frac_bits"]
    if len(sizes) != 2 or len(scales) != 2 or min(sizes) < 1 or min(scales) <= 0:
        raise TypeRuleError(f"resize_linear needs 2 positive sizes and scales (H, W), got {sizes} / {scales}")
    if attrs["coordinate_transformation_mode"] not in RESIZE_COORD_MODES:
        raise TypeRuleError(f"resize_linear coordinate_transformation_mode "
                            f"{attrs['coordinate_transformation_mode']!r}: one of {RESIZE_COORD_MODES}")
    if not 1 <= f <= RESIZE_MAX_FRAC_BITS:
        raise TypeRuleError(f"resize_linear frac_bits {f} outside [1, {RESIZE_MAX_FRAC_BITS}] (int32 sum)")
    lo, hi = INT_RANGE[x.dtype]
    if not lo <= attrs["zero_point"] <= hi:
        raise TypeRuleError(f"resize_linear zero point {attrs['zero_point']} outside {x.dtype.value}")
    return [TensorType((*x.shape[:2], *sizes), x.dtype)]


def resize_linear_values(x: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    """The semantics of q.resize_linear, in int64 (the int32 sum cannot overflow: the weights are >= 0 and
    sum to 2^(2F), so |acc| <= 255 * 2^(2F) + 2^(2F-1) < 2^31 for F <= 11)."""
    (iy, wy), (ix, wx) = resize_linear_tables(x.shape[2:], a)
    d = x.astype(np.int64) - a["zero_point"]
    acc = np.zeros((*x.shape[:2], *a["sizes"]), np.int64)
    for p in range(2):
        rows = d[:, :, iy[:, p], :]
        for k in range(2):
            acc += rows[:, :, :, ix[:, k]] * (wy[:, p, None].astype(np.int64) * wx[None, :, k])
    sh = 2 * a["frac_bits"]
    lo, hi = INT_RANGE[DType.from_numpy(x.dtype)]
    return np.clip(((acc + (1 << (sh - 1))) >> sh) + a["zero_point"], lo, hi).astype(x.dtype)


resize_linear = define(
    "q.resize_linear", "Integer bilinear resize of H and W of an int8/uint8 NCHW tensor, the output on the input's "
    "grid (scale, zero point). y = clamp(((sum over the 4 taps of (x - zero_point) * wy * wx + 2^(2F-1)) >> 2F) "
    "+ zero_point, dtype range), summed in int32 (no overflow for F <= 11); the taps are nn.resize's linear ones for "
    "the coordinate_transformation_mode, the weights rounded half up to F = frac_bits bits with w0 + w1 = 2^F per "
    "axis (resize_linear_taps). Error against the float bilinear resize of the dequantized input: at most "
    "1/2 + D / 2^F steps, D the spread of the 4 taps (<= 255: 0.749 steps at F = 10), exactly <= 1/2 where the "
    "weights are multiples of 2^-F (2x / 4x half_pixel, asymmetric); measured 0.63 steps at F = 10 on uniform "
    "and 0/255-checkerboard uint8 inputs over all modes (1.19 at F = 8).",
    _resize_linear_infer, lambda ins, a: [resize_linear_values(ins[0], a)], 1,
    sizes=Attr("ints"), scales=Attr("floats"), coordinate_transformation_mode=Attr("str", "half_pixel"),
    zero_point=Attr("int", 0), frac_bits=Attr("int", RESIZE_FRAC_BITS))
