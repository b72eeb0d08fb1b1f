"""FP32 conv2d in blocked channel layouts (NCHW{b}c) with register-tiled s_tir schedules.

Layouts (``ib = spec.in_block or 1``; ``ob = weight_out_block(spec)``, equal to ``spec.out_block`` when that is > 0):

* data:      ``(n, ci//ib, h, w, ib)`` if ``in_block > 0`` else plain ``(n, ci, h, w)``; **unpadded** -- padding is a
  separate stage inside the same PrimFunc (skipped when all pads are 0).
* weight:    packed at compile time by :func:`pack_weight` (shape :func:`weight_shape`):

  - ``dense`` kind (groups == 1, or groups whose per-group channel counts are multiples of the blocks):
    ``(co//ob, ci_per_group//ib, kh, kw, ib, ob)``  (OIHW{ib}i{ob}o)
  - ``depthwise`` kind (groups == ci == co): ``(co//ob, kh, kw, ob)``
  - ``generic`` kind (any other grouping): ``(co//ob, ci_per_group, kh, kw, ob)``

* bias:      :func:`pack_bias` -> ``(co//ob, ob)``.
* residual:  same shape/layout as the output.
* output:    ``(n, co//ob, oh, ow, ob)`` if ``out_block > 0`` else plain ``(n, co, oh, ow)``.

Epilogue, fused into the register write-back: ``act(conv + bias + residual)`` where ``act`` is none / relu /
clip(clip_min, clip_max).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from tvm import te, tirx

from compiler.layouts import choose_blocks, conv_weight_form, pack_conv_weight

from .common import act_te, finalize

__all__ = [
    "Conv2dSpec", "choose_blocks", "conv2d_te", "pack_weight", "pack_bias", "make_conv2d", "conv_kind",
    "weight_shape", "bias_shape", "data_shape", "out_shape", "output_hw", "weight_out_block", "conv2d_reference",
]


@dataclass(frozen=True)
class Conv2dSpec:
    """Static description of one conv2d call (batch n, NCHW logical shapes, OIHW weights with I = ci // groups).

    stride=(sh, sw), pad=(top, left, bottom, right), dilation=(dh, dw).  ``in_block``/``out_block`` give the
    channel block of the input/output activation layout (0 = plain NCHW).  Epilogue: bias (``has_bias``),
    residual (``has_residual``, same layout as the output) and ``activation`` in {"none", "relu", "clip"}.
    """

    n: int
    ci: int
    h: int
    w: int
    co: int
    kh: int
    kw: int
    stride: Tuple[int, int] = (1, 1)
    pad: Tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: Tuple[int, int] = (1, 1)
    groups: int = 1
    in_block: int = 16
    out_block: int = 16
    has_bias: bool = False
    has_residual: bool = False
    activation: str = "none"
    clip_min: float = 0.0
    clip_max: float = 6.0
    dtype: str = "float32"

    def __post_init__(self):
        if self.ci % self.groups or self.co % self.groups:
            raise ValueError(f"channels {self.ci}->{self.co} not divisible by groups={self.groups}")
        if self.in_block and self.ci % self.in_block:
            raise ValueError(f"ci={self.ci} not divisible by in_block={self.in_block}")
        if self.out_block and self.co % self.out_block:
            raise ValueError(f"co={self.co} not divisible by out_block={self.out_block}")
        if self.activation not in ("none", "relu", "clip"):
            raise ValueError(f"activation {self.activation!r}")
        oh, ow = output_hw(self)
        if oh <= 0 or ow <= 0:
            raise ValueError("empty output")

    @property
    def ci_per_group(self) -> int:
        return self.ci // self.groups

    @property
    def co_per_group(self) -> int:
        return self.co // self.groups

    @property
    def flops(self) -> int:
        oh, ow = output_hw(self)
        return 2 * self.n * self.co * oh * ow * self.ci_per_group * self.kh * self.kw




def output_hw(spec: Conv2dSpec) -> Tuple[int, int]:
    pt, pl, pb, pr = spec.pad
    dh, dw = spec.dilation
    sh, sw = spec.stride
    oh = (spec.h + pt + pb - dh * (spec.kh - 1) - 1) // sh + 1
    ow = (spec.w + pl + pr - dw * (spec.kw - 1) - 1) // sw + 1
    return oh, ow


def conv_kind(spec: Conv2dSpec) -> str:
    """'dense' (groups==1 or block-aligned groups), 'depthwise' (groups == ci == co) or 'generic'
    (compiler.layouts.conv_weight_form, the table the weight-packing pass shares)."""
    return _form(spec)[0]


def weight_out_block(spec: Conv2dSpec) -> int:
    """Output-channel block used by the packed weights/bias and the accumulators (= out_block if > 0, else an
    internal block: plain-NCHW outputs are computed blocked and transposed in the epilogue)."""
    return _form(spec)[2]


def _form(spec: Conv2dSpec) -> Tuple[str, int, int]:
    return conv_weight_form(spec.ci, spec.co, spec.groups, spec.in_block, spec.out_block)


def data_shape(spec: Conv2dSpec):
    if spec.in_block:
        return (spec.n, spec.ci // spec.in_block, spec.h, spec.w, spec.in_block)
    return (spec.n, spec.ci, spec.h, spec.w)


def out_shape(spec: Conv2dSpec):
    oh, ow = output_hw(spec)
    if spec.out_block:
        return (spec.n, spec.co // spec.out_block, oh, ow, spec.out_block)
    return (spec.n, spec.co, oh, ow)


def weight_shape(spec: Conv2dSpec):
    kind = conv_kind(spec)
    ob = weight_out_block(spec)
    ib = spec.in_block or 1
    if kind == "dense":
        return (spec.co // ob, spec.ci_per_group // ib, spec.kh, spec.kw, ib, ob)
    if kind == "depthwise":
        return (spec.co // ob, spec.kh, spec.kw, ob)
    return (spec.co // ob, spec.ci_per_group, spec.kh, spec.kw, ob)


def bias_shape(spec: Conv2dSpec):
    ob = weight_out_block(spec)
    return (spec.co // ob, ob)


def pack_weight(spec: Conv2dSpec, w: np.ndarray) -> np.ndarray:
    """OIHW (I = ci // groups) numpy weights -> the packed layout of :func:`weight_shape` (contiguous copy)."""
    w = np.asarray(w, dtype=spec.dtype)
    assert w.shape == (spec.co, spec.ci_per_group, spec.kh, spec.kw), w.shape
    form, ib, ob = _form(spec)
    return pack_conv_weight(w, form, ib, ob)


def pack_bias(spec: Conv2dSpec, b: np.ndarray) -> np.ndarray:
    """(co,) bias -> (co // ob, ob)."""
    b = np.asarray(b, dtype=spec.dtype).reshape(spec.co)
    return np.ascontiguousarray(b.reshape(bias_shape(spec)))


# ----------------------------------------------------------------------------------------------------------------
# compute definition
# ----------------------------------------------------------------------------------------------------------------
def conv2d_te(spec: Conv2dSpec, data: te.Tensor, weight: te.Tensor, bias: Optional[te.Tensor] = None,
              residual: Optional[te.Tensor] = None, epilogue=None) -> te.Tensor:
    """TE compute of the fused conv: stages ``pad`` (only if some pad > 0), ``conv`` (the reduction, blocked
    output) and ``out`` (epilogue: + bias, + residual, activation; also the transpose for a plain NCHW output).

    ``data`` is unpadded in the layout of :func:`data_shape`; ``weight`` in :func:`weight_shape`; ``bias`` in
    :func:`bias_shape`; ``residual`` in :func:`out_shape`.  Returns the output tensor (:func:`out_shape`).
    ``epilogue(v, n, c, y, x, idx)``, if given, maps each result after the activation (c: the logical channel,
    idx: the index in the output layout) to the value written.
    """
    kind = conv_kind(spec)
    dt = spec.dtype
    ib = spec.in_block or 1
    ob = weight_out_block(spec)
    pt, pl, pb, pr = spec.pad
    sh, sw = spec.stride
    dh, dw = spec.dilation
    oh, ow = output_hw(spec)
    blocked_in = spec.in_block > 0
    zero = tirx.const(0.0, dt)

    if pt or pl or pb or pr:
        hp, wp = spec.h + pt + pb, spec.w + pl + pr
        if blocked_in:
            def _pad(n, c, y, x, i):
                cond = tirx.all(y >= pt, y < pt + spec.h, x >= pl, x < pl + spec.w)
                return tirx.if_then_else(cond, data[n, c, y - pt, x - pl, i], zero)
            padded = te.compute((spec.n, spec.ci // ib, hp, wp, ib), _pad, name="pad")
        else:
            def _pad(n, c, y, x):
                cond = tirx.all(y >= pt, y < pt + spec.h, x >= pl, x < pl + spec.w)
                return tirx.if_then_else(cond, data[n, c, y - pt, x - pl], zero)
            padded = te.compute((spec.n, spec.ci, hp, wp), _pad, name="pad")
    else:
        padded = data

    def pin(n, c, y, x):
        """padded input at logical channel c."""
        if blocked_in:
            return padded[n, tirx.floordiv(c, ib), y, x, tirx.floormod(c, ib)]
        return padded[n, c, y, x]

    cshape = (spec.n, spec.co // ob, oh, ow, ob)
    if kind == "dense":
        cib_g = spec.ci_per_group // ib
        rc = te.reduce_axis((0, cib_g), name="rc")
        ry = te.reduce_axis((0, spec.kh), name="ry")
        rx = te.reduce_axis((0, spec.kw), name="rx")
        axes = [rc, ry, rx]
        if ib > 1:
            ri = te.reduce_axis((0, ib), name="ri")
            axes.append(ri)
        grouped = spec.groups > 1

        def _conv(n, oc, y, x, o):
            cb = rc
            if grouped:
                cb = tirx.floordiv(oc * ob, spec.co_per_group) * cib_g + rc
            yy, xx = y * sh + ry * dh, x * sw + rx * dw
            if blocked_in:
                d = padded[n, cb, yy, xx, ri] if ib > 1 else padded[n, cb, yy, xx, 0]
                wv = weight[oc, rc, ry, rx, ri, o] if ib > 1 else weight[oc, rc, ry, rx, 0, o]
            else:
                d = padded[n, cb, yy, xx]
                wv = weight[oc, rc, ry, rx, 0, o]
            return te.sum(d * wv, axis=axes)

        conv = te.compute(cshape, _conv, name="conv")
    elif kind == "depthwise":
        ry = te.reduce_axis((0, spec.kh), name="ry")
        rx = te.reduce_axis((0, spec.kw), name="rx")
        same = blocked_in and ib == ob

        def _conv(n, oc, y, x, o):
            yy, xx = y * sh + ry * dh, x * sw + rx * dw
            d = padded[n, oc, yy, xx, o] if same else pin(n, oc * ob + o, yy, xx)
            return te.sum(d * weight[oc, ry, rx, o], axis=[ry, rx])

        conv = te.compute(cshape, _conv, name="conv")
    else:
        rc = te.reduce_axis((0, spec.ci_per_group), name="rc")
        ry = te.reduce_axis((0, spec.kh), name="ry")
        rx = te.reduce_axis((0, spec.kw), name="rx")

        def _conv(n, oc, y, x, o):
            c_out = oc * ob + o
            c_in = tirx.floordiv(c_out, spec.co_per_group) * spec.ci_per_group + rc
            yy, xx = y * sh + ry * dh, x * sw + rx * dw
            return te.sum(pin(n, c_in, yy, xx) * weight[oc, rc, ry, rx, o], axis=[rc, ry, rx])

        conv = te.compute(cshape, _conv, name="conv")

    def _epi(v, oc, o, idx):
        if bias is not None:
            v = v + bias[oc, o]
        if residual is not None:
            v = v + residual[idx]
        v = act_te(v, spec.activation, spec.clip_min, spec.clip_max, spec.dtype)
        if epilogue is not None:
            v = epilogue(v, idx[0], oc * ob + o, idx[2], idx[3], idx)
        return v

    if spec.out_block:
        return te.compute(cshape, lambda n, oc, y, x, o: _epi(conv[n, oc, y, x, o], oc, o, (n, oc, y, x, o)),
                          name="out")

    def _plain(n, c, y, x):
        oc, o = tirx.floordiv(c, ob), tirx.floormod(c, ob)
        return _epi(conv[n, oc, y, x, o], oc, o, (n, c, y, x))

    return te.compute((spec.n, spec.co, oh, ow), _plain, name="out")


def _placeholders(spec: Conv2dSpec):
    data = te.placeholder(data_shape(spec), spec.dtype, name="data")
    weight = te.placeholder(weight_shape(spec), spec.dtype, name="weight")
    bias = te.placeholder(bias_shape(spec), spec.dtype, name="bias") if spec.has_bias else None
    res = te.placeholder(out_shape(spec), spec.dtype, name="residual") if spec.has_residual else None
    return data, weight, bias, res


def conv2d_prim_func(spec: Conv2dSpec, extras=(), epilogue=None) -> tirx.PrimFunc:
    """Unscheduled PrimFunc (data, weight, [bias], [residual], *extras, out); ``extras`` are the placeholders
    ``epilogue`` reads."""
    data, weight, bias, res = _placeholders(spec)
    out = conv2d_te(spec, data, weight, bias, res, epilogue)
    args = [data, weight] + ([bias] if bias is not None else []) + ([res] if res is not None else []) + \
        list(extras) + [out]
    return te.create_prim_func(args)


# ----------------------------------------------------------------------------------------------------------------
# the scheduled kernel (schedules: conv2d_schedule.py)
# ----------------------------------------------------------------------------------------------------------------
def make_conv2d(spec: Conv2dSpec, tile: Optional[Tuple[int, int]] = None, extras=(), epilogue=None) -> tirx.PrimFunc:
    """Scheduled PrimFunc with params (data, weight, [bias], [residual], *extras, out) and attrs op_pattern=8
    (opaque), tirx.is_scheduled=True.  ``tile`` = (reg_oc, reg_w) overrides the register-tile choice;
    ``epilogue`` (reading ``extras``) is fused into the write-back (see :func:`conv2d_te`)."""
    from .conv2d_schedule import schedule_conv2d
    return finalize(schedule_conv2d(conv2d_prim_func(spec, extras, epilogue), spec, tile))


# ----------------------------------------------------------------------------------------------------------------
# numpy reference (plain NCHW/OIHW) used by tests and benchmarks
# ----------------------------------------------------------------------------------------------------------------
def conv2d_reference(x: np.ndarray, w: np.ndarray, b=None, stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1),
                     groups: int = 1, residual=None, activation="none", clip_min=0.0, clip_max=6.0) -> np.ndarray:
    """float64-accumulated NCHW reference: act(conv(x, w) + b + residual)."""
    n, ci, h, wd = x.shape
    co, cig, kh, kw = w.shape
    pt, pl, pb, pr = pad
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    sh, sw = stride
    dh, dw = dilation
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    cog = co // groups
    out = np.zeros((n, co, oh, ow))
    for g in range(groups):
        xs = xp[:, g * cig:(g + 1) * cig]
        cols = np.empty((n, cig, kh, kw, oh, ow))
        for r in range(kh):
            for s in range(kw):
                cols[:, :, r, s] = xs[:, :, r * dh: r * dh + sh * (oh - 1) + 1: sh, s * dw: s * dw + sw * (ow - 1) + 1: sw]
        wg = w[g * cog:(g + 1) * cog].astype(np.float64)
        out[:, g * cog:(g + 1) * cog] = np.einsum("ocrs,ncrsyx->noyx", wg, cols)
    if b is not None:
        out += np.asarray(b, np.float64).reshape(1, co, 1, 1)
    if residual is not None:
        out += residual
    if activation == "relu":
        out = np.maximum(out, 0)
    elif activation == "clip":
        out = np.clip(out, clip_min, clip_max)
    return out.astype(x.dtype)
