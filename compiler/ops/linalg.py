"""Contractions: matmul, einsum, N-d convolution and transposed convolution (float)."""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from compiler.ops._util import broadcast_shapes, same_dtype
from compiler.ops.registry import Attr, TypeRuleError, define
from compiler.types import TensorType


def _matmul_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    a, b = ins
    dt = same_dtype(ins)
    if a.rank == 0 or b.rank == 0:
        raise TypeRuleError("matmul operands must have rank >= 1")
    sa = a.shape if a.rank > 1 else (1,) + a.shape
    sb = b.shape if b.rank > 1 else b.shape + (1,)
    if sa[-1] != sb[-2]:
        raise TypeRuleError(f"matmul contraction mismatch: {a.shape} @ {b.shape}")
    shape = broadcast_shapes(sa[:-2], sb[:-2]) + (sa[-2], sb[-1])
    if a.rank == 1:
        shape = shape[:-2] + shape[-1:]
    if b.rank == 1:
        shape = shape[:-1]
    return [TensorType(shape, dt)]


matmul = define("nn.matmul", "numpy.matmul: batched, broadcasting, 1-D operands promoted.",
                _matmul_infer, lambda ins, a: [np.matmul(ins[0], ins[1])], 2)


def _einsum_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    dt = same_dtype(ins)
    try:
        dummies = [np.empty(t.shape, np.int8) for t in ins]
        shape = np.einsum(attrs["equation"], *dummies).shape
    except ValueError as e:
        raise TypeRuleError(f"einsum '{attrs['equation']}': {e}") from None
    return [TensorType(shape, dt)]


einsum = define("nn.einsum", "numpy.einsum with the given equation.", _einsum_infer,
                lambda ins, a: [np.einsum(a["equation"], *ins).astype(ins[0].dtype)],
                (1, -1), equation=Attr("str"))


# -- convolution --------------------------------------------------------------
def conv_out_size(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, dil: int) -> int:
    return (size + pad_lo + pad_hi - ((k - 1) * dil + 1)) // stride + 1


def _conv_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x, w = ins[0], ins[1]
    dt = same_dtype(ins)
    nsp = x.rank - 2
    if nsp < 1 or w.rank != x.rank:
        raise TypeRuleError(f"conv needs x and w of equal rank >= 3, got {x.shape}, {w.shape}")
    g = attrs["groups"]
    if x.shape[1] != w.shape[1] * g or w.shape[0] % g:
        raise TypeRuleError(f"conv channels: x {x.shape}, w {w.shape}, groups {g}")
    if len(ins) == 3 and ins[2].shape != (w.shape[0],):
        raise TypeRuleError(f"conv bias must have shape ({w.shape[0]},), got {ins[2].shape}")
    s, p, d = attrs["strides"], attrs["pads"], attrs["dilations"]
    if not (len(s) == len(d) == nsp and len(p) == 2 * nsp):
        raise TypeRuleError("conv strides/dilations need one entry per spatial axis, pads two")
    out = tuple(conv_out_size(x.shape[2 + i], w.shape[2 + i], s[i], p[i], p[i + nsp], d[i])
                for i in range(nsp))
    if min(out) < 1:
        raise TypeRuleError(f"conv output would be empty: {out}")
    return [TensorType((x.shape[0], w.shape[0]) + out, dt)]


def conv_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, strides, pads,
                   dilations, groups: int) -> np.ndarray:
    nsp = x.ndim - 2
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + nsp]) for i in range(nsp)])
    ks = w.shape[2:]
    ext = [(ks[i] - 1) * dilations[i] + 1 for i in range(nsp)]
    win = sliding_window_view(xp, ext, axis=tuple(range(2, 2 + nsp)))
    win = win[(slice(None), slice(None))
              + tuple(slice(None, None, s) for s in strides)
              + tuple(slice(None, None, d) for d in dilations)]
    n, c = x.shape[:2]
    m = w.shape[0]
    osp = win.shape[2:2 + nsp]
    win = win.reshape((n, groups, c // groups) + osp + tuple(ks))
    wg = w.reshape((groups, m // groups, c // groups) + tuple(ks))
    sp = "xyz"[:nsp]
    kk = "uvw"[:nsp]
    y = np.einsum(f"ngc{sp}{kk},gmc{kk}->ngm{sp}", win, wg, optimize=True)
    y = y.reshape((n, m) + osp)
    if b is not None:
        y = y + b.reshape((1, m) + (1,) * nsp)
    return y.astype(x.dtype)


conv = define(
    "nn.conv", "N-d cross-correlation (ONNX Conv): x (N,C,*), w (M,C/groups,*k), optional bias (M,). "
    "pads = begins then ends.", _conv_infer,
    lambda ins, a: [conv_reference(ins[0], ins[1], ins[2] if len(ins) > 2 else None,
                                   a["strides"], a["pads"], a["dilations"], a["groups"])],
    (2, 3), strides=Attr("ints"), pads=Attr("ints"), dilations=Attr("ints"), groups=Attr("int", 1))


def _convt_infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x, w = ins[0], ins[1]
    dt = same_dtype(ins)
    nsp = x.rank - 2
    g = attrs["groups"]
    if nsp < 1 or w.rank != x.rank or w.shape[0] != x.shape[1]:
        raise TypeRuleError(f"conv_transpose: x {x.shape}, w {w.shape}")
    s, p, d, op = attrs["strides"], attrs["pads"], attrs["dilations"], attrs["output_padding"]
    out = tuple(s[i] * (x.shape[2 + i] - 1) + op[i] + (w.shape[2 + i] - 1) * d[i] + 1 - p[i] - p[i + nsp]
                for i in range(nsp))
    if min(out) < 1:
        raise TypeRuleError(f"conv_transpose output would be empty: {out}")
    return [TensorType((x.shape[0], w.shape[1] * g) + out, dt)]


def conv_transpose_reference(x, w, b, strides, pads, dilations, groups, output_padding):
    """Transposed conv as a direct conv over the zero-stuffed input with the flipped kernel."""
    nsp = x.ndim - 2
    n, c = x.shape[:2]
    stuffed_shape = (n, c) + tuple((x.shape[2 + i] - 1) * strides[i] + 1 for i in range(nsp))
    xs = np.zeros(stuffed_shape, x.dtype)
    xs[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)] = x
    ks = w.shape[2:]
    cg, mg = c // groups, w.shape[1]
    wf = w[(slice(None), slice(None)) + (slice(None, None, -1),) * nsp]
    wc = wf.reshape((groups, cg, mg) + ks).swapaxes(1, 2).reshape((groups * mg, cg) + ks)
    lo = [(ks[i] - 1) * dilations[i] - pads[i] for i in range(nsp)]
    hi = [(ks[i] - 1) * dilations[i] - pads[i + nsp] + output_padding[i] for i in range(nsp)]
    # negative padding crops
    xs = np.pad(xs, [(0, 0), (0, 0)] + [(max(a, 0), max(b, 0)) for a, b in zip(lo, hi)])
    crop = tuple(slice(max(-a, 0), xs.shape[2 + i] - max(-b, 0)) for i, (a, b) in enumerate(zip(lo, hi)))
    xs = xs[(slice(None), slice(None)) + crop]
    return conv_reference(xs, wc, b, (1,) * nsp, (0,) * (2 * nsp), dilations, groups)


conv_transpose = define(
    "nn.conv_transpose", "N-d transposed convolution (ONNX ConvTranspose): w (C, M/groups, *k).",
    _convt_infer,
    lambda ins, a: [conv_transpose_reference(ins[0], ins[1], ins[2] if len(ins) > 2 else None,
                                             a["strides"], a["pads"], a["dilations"], a["groups"],
                                             a["output_padding"])],
    (2, 3), strides=Attr("ints"), pads=Attr("ints"), dilations=Attr("ints"),
    groups=Attr("int", 1), output_padding=Attr("ints"))
