"""Shift-and-add integer conv2d and matmul: the multiplication-free realization of power-of-two weights
(passes/shiftadd.py), bit-exact with q.conv / q.matmul.

Every weight is a sum of ``terms`` (1 or 2) signed powers of two, w = sum_t s_t * 2^p_t with p_t in [0, 7], so
x * w = sum_t +-(x << p_t). The weights are stored as exponents and sign masks (``pack_*_code``), one int32
each, so the vector shift and xor read them straight from memory (measured: int8 codes, sign-extended in the
loop, made the 3x3 convs 2-3x slower):

    code[..., t, 0, j] = p_t               the shift
    code[..., t, 1, j] = 0 or -1           the sign mask n_t (-1: the term is subtracted)
    code[..., t, 2, j] = -1 or 0           the keep mask (1 term only: 0 for a zero weight)

and the inner loop adds ``((x << p_t) & keep) ^ n_t`` per term: with n = -1 that is ~v = -v - 1, so the loop
subtracts v and is off by -1 per subtracted term; that count is a per-channel constant folded into the bias
(``pack_*_bias``). A zero weight with 2 terms is 2^0 - 2^0. The loop vectorizes over 16 output channels (one
variable shift, and, xor and add per lane and term); no multiply touches the data.

Both kernels read and write exactly what the VNNI kernels (qconv2d.py, qmatmul.py) do -- the same blocked
data, bias convention (bias - xz * sum(w), the data shifted to uint8 and padded with its zero point), requant
tables, residual and output layouts, register tiles -- so the fused-kernel emitter swaps only the weight
constant, the bias and the kernel.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import numpy as np
from tvm import s_tir, te, tirx

from .common import ACC_SCOPE, SCHEDULE_ATTR, finalize
from .qconv2d import QConvSpec, output_hw, out_shape, pack_bias as conv_bias, pad_te, pick_tile as conv_tile, \
    sched_pad, write_back_te
from .qconv2d_schedule import tile_full_blocks, tile_half_blocks
from .qmatmul import QMatmulSpec, pack_bias as matmul_bias, pick_tile as matmul_tile
from .requant import requant_dtype, requant_te
from .table import table_args

__all__ = ["decompose", "pack_conv_code", "pack_conv_bias", "make_shift_qconv2d", "pack_matmul_code",
           "pack_matmul_bias", "make_shift_qmatmul", "conv_realization", "matmul_realization", "TERMS"]

TERMS = {"pow2x1": 1, "pow2x2": 2}
MAX_EXP = 7
CODE_DTYPE = "int32"


def components(terms: int) -> int:
    """Entries per term in the code: shift and sign, plus the keep mask with one term."""
    return 3 if terms == 1 else 2


# ----------------------------------------------------------------------------------------------------------------
# the code: exponents and sign masks
# ----------------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _table(terms: int) -> tuple[np.ndarray, np.ndarray]:
    """(256, terms, components) int8: the code of every int8 value (index w + 128); the keep entry is 0 where
    the value has no code (then it cannot be a weight)."""
    comps = components(terms)
    tab = np.zeros((256, terms, comps), np.int8)
    found = np.zeros(256, bool)
    pows = [(p, s) for p in range(MAX_EXP + 1) for s in (1, -1)]
    combos = [((p, s),) for p, s in pows] if terms == 1 else [(a, b) for a in pows for b in pows]
    for combo in combos:
        v = sum(s << p for p, s in combo)
        if -128 <= v <= 127 and not found[v + 128]:
            found[v + 128] = True
            for t, (p, s) in enumerate(combo):
                tab[v + 128, t, 0] = p
                tab[v + 128, t, 1] = -1 if s < 0 else 0
                if comps == 3:
                    tab[v + 128, t, 2] = -1
    if terms == 1:
        found[128] = True              # zero: keep = 0
    tab.flags.writeable = False
    return tab, found


def decompose(w: np.ndarray, terms: int) -> np.ndarray:
    """w (int8 values) -> (*w.shape, terms, components) int8 code; ValueError if a weight is not a sum of
    `terms` signed powers of two 2^0..2^7."""
    tab, found = _table(terms)
    idx = np.asarray(w, np.int64) + 128
    if idx.size and (idx.min() < 0 or idx.max() > 255 or not found[idx].all()):
        bad = np.asarray(w).reshape(-1)[~found[np.clip(idx, 0, 255)].reshape(-1)][:4]
        raise ValueError(f"weights {bad.tolist()} are not sums of {terms} signed powers of two")
    return tab[idx]


def code_value(code: np.ndarray) -> np.ndarray:
    """The integers a code stands for (the inverse of decompose), for tests."""
    c = code.astype(np.int64)
    v = np.left_shift(np.int64(1), c[..., 0]) * np.where(c[..., 1] < 0, -1, 1)
    if c.shape[-1] == 3:
        v = np.where(c[..., 2] < 0, v, 0)
    return v.sum(axis=-1)


def _neg_count(code: np.ndarray) -> np.ndarray:
    return -code[..., 1].astype(np.int64).sum(axis=-1)


def _term(x32, code, idx, t: int, comps: int):
    """((x << p_t) & keep) ^ n_t on TIR scalars; code[(*idx, t, k)] are the term's entries."""
    v = x32 << code[(*idx[:-1], t, 0, idx[-1])].astype("int32")
    if comps == 3:
        v = v & code[(*idx[:-1], t, 2, idx[-1])].astype("int32")
    return v ^ code[(*idx[:-1], t, 1, idx[-1])].astype("int32")


def _terms_sum(x, code, idx, terms: int):
    x32 = x.astype("int32")
    comps = components(terms)
    v = _term(x32, code, idx, 0, comps)
    for t in range(1, terms):
        v = v + _term(x32, code, idx, t, comps)
    return v


def _with_bias(bias: np.ndarray, negs: np.ndarray) -> np.ndarray:
    """bias + the per-channel count of subtracted terms, wrapped to int32 like the accumulator."""
    out = bias.astype(np.int64).reshape(-1)
    out[:negs.size] += negs
    return out.astype(np.int32).reshape(bias.shape)


# ----------------------------------------------------------------------------------------------------------------
# conv2d: the VNNI conv's interface (qconv2d.py), shift-and-add inner loop
# ----------------------------------------------------------------------------------------------------------------
def conv_code_shape(spec: QConvSpec, terms: int):
    ib = spec.in_block
    return (spec.cop // 16, spec.cip // ib, spec.kh, spec.kw, ib, terms, components(terms), 16)


def pack_conv_code(spec: QConvSpec, w: np.ndarray, terms: int) -> np.ndarray:
    """OIHW int8 weights -> (cop//16, cip//ib, kh, kw, ib, terms, components, 16) int32 code, element
    [o, cb, r, s, i, t, k, j] of weight w[16 o + j, ib cb + i, r, s]; padded channels get a zero weight."""
    wp = np.zeros((spec.cop, spec.cip, spec.kh, spec.kw), np.int64)
    wp[:spec.co, :spec.ci] = np.asarray(w, np.int64)
    code = decompose(wp, terms)                       # (cop, cip, kh, kw, T, K)
    ib = spec.in_block
    code = code.reshape(spec.cop // 16, 16, spec.cip // ib, ib, spec.kh, spec.kw, terms, -1)
    return np.ascontiguousarray(code.transpose(0, 2, 4, 5, 3, 6, 7, 1), CODE_DTYPE)


def pack_conv_bias(spec: QConvSpec, w: np.ndarray, b, terms: int) -> np.ndarray:
    """The VNNI conv's (cop//16, 16) bias plus the count of subtracted terms of each output channel."""
    wp = np.zeros((spec.cop, spec.cip, spec.kh, spec.kw), np.int64)
    wp[:spec.co, :spec.ci] = np.asarray(w, np.int64)
    negs = _neg_count(decompose(wp, terms)).reshape(spec.cop, -1).sum(axis=1)
    return _with_bias(conv_bias(spec, w, b), negs)


def shift_qconv2d_te(spec: QConvSpec, terms: int, data, code, bias, rq1=None, residual=None, rq2=None, rq3=None,
                     rq1b=None, table=None):
    ib = spec.in_block
    sh, sw = spec.stride
    dh, dw = spec.dilation
    oh, ow = output_hw(spec)
    padded = pad_te(spec, data)
    rcb = te.reduce_axis((0, spec.cip // ib), "rcb")
    rh = te.reduce_axis((0, spec.kh), "rh")
    rw = te.reduce_axis((0, spec.kw), "rw")
    ri = te.reduce_axis((0, ib), "ri")
    acc = te.compute(
        (spec.n, spec.cop // 16, oh, ow, 16),
        lambda n, o, y, x, j: te.sum(_terms_sum(padded[n, rcb, y * sh + rh * dh, x * sw + rw * dw, ri], code,
                                                (o, rcb, rh, rw, ri, j), terms), axis=[rcb, rh, rw, ri]),
        name="conv")

    return write_back_te(spec, acc, bias, rq1, residual, rq2, rq3, rq1b, table)


def shift_qconv2d_prim_func(spec: QConvSpec, terms: int) -> tirx.PrimFunc:
    """Params (data, code, bias, [rq1], [rq1b], [residual, [rq2], rq3], out): the VNNI conv's, the int8 weight
    replaced by the code."""
    from .qconv2d import data_shape
    data = te.placeholder(data_shape(spec), spec.x_dtype, "data")
    code = te.placeholder(conv_code_shape(spec, terms), CODE_DTYPE, "code")
    bias = te.placeholder((spec.cop // 16, 16), "int32", "bias")
    args, kw = [data, code, bias], {}
    for name in ("rq1", "rq1b", "rq2", "rq3"):
        if getattr(spec, name) is not None:
            kw[name] = te.placeholder((3, spec.cop // 16, 16), requant_dtype(getattr(spec, name)), name)
    args += [kw[k] for k in ("rq1", "rq1b") if k in kw]
    if spec.residual_dtype is not None:
        kw["residual"] = te.placeholder(out_shape(spec), spec.residual_dtype, "residual")
        args += [kw["residual"]] + [kw[k] for k in ("rq2", "rq3") if k in kw]
    kw |= table_args(spec)
    args += [kw["table"]] if "table" in kw else []
    return te.create_prim_func(args + [shift_qconv2d_te(spec, terms, data, code, bias, **kw)])


def make_shift_qconv2d(spec: QConvSpec, terms: int, tile: Tuple[int, int] | None = None) -> tirx.PrimFunc:
    """Scheduled PrimFunc: a (reg_oc x reg_w) register tile of 16-lane int32 accumulators (the VNNI conv's tile),
    the reduction over input channels and the kernel window outside it, 16 output channels per vector."""
    oh, ow = output_hw(spec)
    roc, rw = tile or conv_tile(spec.cop // 16, ow)
    sch = s_tir.Schedule(shift_qconv2d_prim_func(spec, terms))
    conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
    if spec.out_block == 8:       # 8-channel block output: the VNNI conv's tile of two half blocks
        lp, first = tile_half_blocks(sch, conv, out, roc, rw, ("v_rcb", "v_rh", "v_rw", "v_ri"))
        sch.vectorize(lp["v_j"])
        init = sch.decompose_reduction(conv, first)
        sch.vectorize(sch.get_loops(init)[-1])
    else:
        _, init = tile_full_blocks(sch, conv, out, roc, rw, spec.blocked_out, vectorize_j=True)
        sch.vectorize(sch.get_loops(init)[-1])
    sched_pad(sch)
    return finalize(sch.mod["main"].with_attr(SCHEDULE_ATTR, "tiled"))


# ----------------------------------------------------------------------------------------------------------------
# matmul with a constant weight: the VNNI matmul's interface (qmatmul.py), shift-and-add inner loop
# ----------------------------------------------------------------------------------------------------------------
def matmul_code_shape(spec: QMatmulSpec, terms: int):
    return (spec.np_ // 16, spec.k, terms, components(terms), 16)


def pack_matmul_code(spec: QMatmulSpec, w: np.ndarray, terms: int, w_zp: int = 0) -> np.ndarray:
    """(k, n) weights -> (np_//16, k, terms, components, 16) int32 code, element [o, q, t, c, j] of
    (w - w_zp)[q, 16 o + j]; padded columns get a zero weight."""
    wp = np.zeros((spec.k, spec.np_), np.int64)
    wp[:, :spec.n] = np.asarray(w, np.int64) - w_zp
    code = decompose(wp, terms).reshape(spec.k, spec.np_ // 16, 16, terms, -1)
    return np.ascontiguousarray(code.transpose(1, 0, 3, 4, 2), CODE_DTYPE)


def pack_matmul_bias(spec: QMatmulSpec, w: np.ndarray, terms: int, w_zp: int = 0, b=None) -> np.ndarray:
    """The VNNI matmul's (np_,) bias plus the count of subtracted terms of each column."""
    wp = np.zeros((spec.k, spec.np_), np.int64)
    wp[:, :spec.n] = np.asarray(w, np.int64) - w_zp
    return _with_bias(matmul_bias(spec, w, w_zp, b), _neg_count(decompose(wp, terms)).sum(axis=0))


def shift_qmatmul_te(spec: QMatmulSpec, terms: int, a, code, bias, rq=None):
    if spec.a_dtype == "int8":
        ap = te.compute((spec.m, spec.k), lambda i, kk: (a[i, kk].astype("int32") + 128).astype("uint8"), name="pad")
    else:
        ap = a
    rk = te.reduce_axis((0, spec.k), "rk")
    acc = te.compute((spec.m, spec.np_ // 16, 16),
                     lambda i, o, j: te.sum(_terms_sum(ap[i, rk], code, (o, rk, j), terms), axis=rk), name="acc")

    def epi(i, col):
        v = acc[i, col // 16, col % 16] + bias[col]
        return requant_te(v, rq, (col,), spec.rq) if spec.rq is not None else v
    return te.compute((spec.m, spec.np_), epi, name="out")


def make_shift_qmatmul(spec: QMatmulSpec, terms: int, tile: Tuple[int, int] | None = None) -> tirx.PrimFunc:
    """Scheduled PrimFunc with params (a, code, bias, [rq], out) -- the VNNI matmul's, the packed int8 weight
    replaced by the code; out is (m, np_), the caller slices off n..np_."""
    a = te.placeholder((spec.m, spec.k), spec.a_dtype, "a")
    code = te.placeholder(matmul_code_shape(spec, terms), CODE_DTYPE, "code")
    bias = te.placeholder((spec.np_,), "int32", "bias")
    args = [a, code, bias]
    rq = None
    if spec.rq is not None:
        rq = te.placeholder((3, spec.np_), "int64", "rq")
        args.append(rq)
    func = te.create_prim_func(args + [shift_qmatmul_te(spec, terms, a, code, bias, rq)])
    rm, rn = tile or matmul_tile(spec.m, spec.np_ // 16)
    sch = s_tir.Schedule(func)
    accb, out = sch.get_sblock("acc"), sch.get_sblock("out")
    i, o, j, k = sch.get_loops(accb)
    io, ii = sch.split(i, [None, rm])
    oo, oi = sch.split(o, [None, rn])
    sch.reorder(io, oo, k, ii, oi, j)
    sch.set_scope(accb, 0, ACC_SCOPE)
    sch.reverse_compute_at(out, oo)
    _, cv = sch.split(sch.get_loops(out)[-1], [None, 16])
    sch.vectorize(cv)
    sch.vectorize(j)
    sch.unroll(ii)
    sch.unroll(oi)
    sch.parallel(sch.fuse(io, oo))
    init = sch.decompose_reduction(accb, k)
    sch.vectorize(sch.get_loops(init)[-1])
    if spec.a_dtype == "int8":
        sch.parallel(sch.get_loops(sch.get_sblock("pad"))[0])
    return finalize(sch.mod["main"].with_attr(SCHEDULE_ATTR, "tiled"))


# ----------------------------------------------------------------------------------------------------------------
# the two realizations of one layer, for the fused-kernel emitters
# ----------------------------------------------------------------------------------------------------------------
def conv_realization(spec: QConvSpec, w: np.ndarray, b, terms: int):
    """(weight operand, bias operand, tile -> PrimFunc, kernel name) of the conv: the shift-and-add kernel for
    `terms` power-of-two terms, the VNNI kernel for 0. ValueError if the weights have no `terms`-term code."""
    from . import qconv2d as kq
    if not terms:
        name = "qconv2d_amx" if spec.amx else "qconv2d_vnni16" if spec.x_dtype == "int16" else "qconv2d_vnni"
        return kq.pack_weight(spec, w), kq.pack_bias(spec, w, b), lambda t: kq.make_qconv2d(spec, t), name
    if spec.x_dtype == "int16":
        raise ValueError("the shift-and-add conv reads 8-bit data")
    return (pack_conv_code(spec, w, terms), pack_conv_bias(spec, w, b, terms),
            lambda t: make_shift_qconv2d(spec, terms, t), "qconv2d_shiftadd")


def matmul_realization(spec: QMatmulSpec, w: np.ndarray, w_zp: int, b, terms: int):
    """(weight operand, bias operand, tile -> PrimFunc, kernel name) of the matmul, as conv_realization."""
    from . import qmatmul as kqm
    if not terms:
        return (kqm.pack_weight(spec, w, w_zp), kqm.pack_bias(spec, w, w_zp, b), lambda t: kqm.make_qmatmul(spec, t),
                "qmatmul_vnni16" if spec.a_dtype == "int16" else "qmatmul_vnni")
    if spec.a_dtype == "int16":
        raise ValueError("the shift-and-add matmul reads 8-bit activations")
    return (pack_matmul_code(spec, w, terms, w_zp), pack_matmul_bias(spec, w, terms, w_zp, b),
            lambda t: make_shift_qmatmul(spec, terms, t), "qmatmul_shiftadd")
