"""The multiplication-free ops, bit-exact with their references: L-Mul (compiler/ops/lmul.py), the
shift-and-add realization of power-of-two weights (passes/shiftadd.py) and the LUT GEMM (compiler/ops/lut.py).

- lmul.mul / lmul.matmul: arith on the float32 bits (arith.bitcast), in i64 so nothing wraps: one addi of
  the (exponent || m-bit mantissa) fields, selects for the special values; no float multiply. The matmul is
  one linalg.generic whose reduction adds each L-Mul product to a float32 accumulator that starts at +0.0,
  k = 0..K-1 (the reference's order; IREE's llvm-cpu keeps an ordered float reduction in order).
- q.matmul / q.conv with realization "shift" (weight_code pow2x1 / pow2x2): the constant weight becomes, per
  term, an i32 exponent tensor and an i1 sign tensor (plus an i1 keep tensor with one term, 0 for a zero
  weight); the linalg.generic body adds select(neg, 0 - (x << p), x << p) per term to an i32 accumulator:
  arith.shli / subi / addi / select, no arith.muli. The data is widened to i32 with its zero point removed
  (a conv's padding holds the zero point, so it contributes 0). Any other realization keeps the int8
  multiply lowering of quant.py, which calls these for a shift-realized layer (one OpDef either way).
- q.lut_matmul: the reference's stages as linalg.generics in i32: x = a - zp padded to Kp; per row the
  16-entry tables of every group of 4 activations (selects and adds); for table "int8" the power-of-two table
  scale per row and group (shift_round, ties to even) and the rounded tables; the 4-bit patterns from the
  planes (shrui, andi); the lookups (tensor.extract at the pattern, shli by the bit-plane, summed over the
  group); the group scales and zero points after each group's sum; the bias. Every int64 step of the
  reference is exact or wraps mod 2^32 like its final int32 cast (adds, shli, multiplies), and the arithmetic
  shifts only touch table entries (|T| <= 1020), so i32 is bit-exact.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

import numpy as np
from iree.compiler import ir
from iree.compiler.dialects import arith, linalg, tensor

from compiler.backends.mlir_lower.linalg import pad_constant
from compiler.backends.mlir_lower.registry import (
    PAR,
    RED,
    LowerCtx,
    amap,
    generic,
    is_unsigned,
    lowers,
    scalar,
    shape_of,
)
from compiler.ir import Node
from compiler.ops import lmul, lut
from compiler.types import DType

EQ, NE, SGT, SLE, SGE = (arith.CmpIPredicate.eq, arith.CmpIPredicate.ne, arith.CmpIPredicate.sgt,
                         arith.CmpIPredicate.sle, arith.CmpIPredicate.sge)


def _int(bits: int) -> ir.Type:
    return ir.IntegerType.get_signless(bits)


def _c(v: int, bits: int = 64) -> ir.Value:
    return scalar(int(v), _int(bits))


def _widen(v: ir.Value, dt: DType, zp: int) -> ir.Value:
    """An integer element as i32 with the zero point removed."""
    w = arith.extui(_int(32), v) if is_unsigned(dt) else arith.extsi(_int(32), v)
    return arith.subi(w, _c(zp, 32)) if zp else w


def _idx(d: int) -> ir.Value:
    return linalg.IndexOp(d).result


# -- L-Mul ---------------------------------------------------------------------------------------------------
def lmul_scalar(x: ir.Value, y: ir.Value, m: int) -> ir.Value:
    """compiler.ops.lmul.lmul_values on two f32 scalars."""
    drop = 23 - m
    i64 = _int(64)
    bx = arith.extui(i64, arith.bitcast(_int(32), x))
    by = arith.extui(i64, arith.bitcast(_int(32), y))
    ax, ay = arith.andi(bx, _c(0x7FFFFFFF)), arith.andi(by, _c(0x7FFFFFFF))
    fx, fy = arith.shrui(ax, _c(drop)), arith.shrui(ay, _c(drop))       # exponent || truncated mantissa
    ex, ey = arith.shrui(fx, _c(m)), arith.shrui(fy, _c(m))
    r = arith.addi(arith.addi(fx, fy), _c((1 << (m - lmul.offset_exponent(m))) - (lmul.BIAS << m)))  # the add
    er = arith.shrsi(r, _c(m))
    mag = arith.select(arith.cmpi(SGE, er, _c(lmul.EXP_MAX)), _c(lmul.INF),
                       arith.select(arith.cmpi(SLE, er, _c(0)), _c(0), arith.shli(r, _c(drop))))
    zx, zy = arith.cmpi(EQ, ex, _c(0)), arith.cmpi(EQ, ey, _c(0))
    mag = arith.select(arith.ori(zx, zy), _c(0), mag)
    sign = arith.andi(arith.xori(bx, by), _c(lmul.SIGN))
    inf_x, inf_y = arith.cmpi(EQ, ex, _c(lmul.EXP_MAX)), arith.cmpi(EQ, ey, _c(lmul.EXP_MAX))
    nan = arith.ori(arith.ori(arith.cmpi(SGT, ax, _c(lmul.INF)), arith.cmpi(SGT, ay, _c(lmul.INF))),
                    arith.ori(arith.andi(inf_x, zy), arith.andi(inf_y, zx)))
    out = arith.select(arith.ori(inf_x, inf_y), arith.ori(sign, _c(lmul.INF)), arith.ori(sign, mag))
    out = arith.select(nan, _c(lmul.QNAN), out)
    return arith.bitcast(ir.F32Type.get(), arith.trunci(_int(32), out))


@lowers(lmul.mul)
def _lmul_mul(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    m = node.attrs["mantissa_bits"]
    return [ctx.ewise(args, node.outputs[0].type.shape, ir.F32Type.get(), lambda x, y: lmul_scalar(x, y, m))]


def _batch_map(shape: Sequence[int], batch: Sequence[int], tail: Sequence[int], nd: int) -> ir.AffineMap:
    """An operand's map over dims (batch..., i, j, k): its leading dims broadcast against `batch` (missing
    ones dropped, size-1 ones read at 0), then the dims `tail`."""
    lead = shape[:len(shape) - 2]
    off = len(batch) - len(lead)
    return amap(nd, ["zero" if d == 1 and batch[off + i] != 1 else off + i for i, d in enumerate(lead)]
                + list(tail))


@lowers(lmul.matmul)
def _lmul_matmul(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    m, shape = node.attrs["mantissa_bits"], node.outputs[0].type.shape
    nb = len(shape) - 2
    nd = nb + 3
    i, j, k = nb, nb + 1, nb + 2
    maps = [_batch_map(shape_of(args[0]), shape[:nb], (i, k), nd),
            _batch_map(shape_of(args[1]), shape[:nb], (k, j), nd), amap(nd, range(nb + 2))]
    f32 = ir.F32Type.get()
    return generic(args, [ctx.full(shape, f32, 0.0)], maps, [PAR] * (nb + 2) + [RED],
                   lambda x, y, acc: arith.addf(acc, lmul_scalar(x, y, m)))


# -- shift-and-add -------------------------------------------------------------------------------------------
TERMS = {"pow2x1": 1, "pow2x2": 2}


@cache
def _code_table(terms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For every int8 value (index v + 128): exponents (256, terms), sign bits (256, terms), keep (256,) and
    whether the value is a sum of `terms` signed powers of two 2^0..2^7 (zero: keep 0 with one term)."""
    shifts, negs = np.zeros((256, terms), np.int32), np.zeros((256, terms), bool)
    keep, found = np.ones(256, bool), np.zeros(256, bool)
    pows = [(p, s) for p in range(8) for s in (1, -1)]
    combos = [((p, s),) for p, s in pows] if terms == 1 else [(a, b) for a in pows for b in pows]
    for combo in combos:
        v = sum(s << p for p, s in combo)
        if -128 <= v <= 127 and not found[v + 128]:
            found[v + 128] = True
            shifts[v + 128] = [p for p, _ in combo]
            negs[v + 128] = [s < 0 for _, s in combo]
    if terms == 1:
        found[128], keep[128] = True, False
    return shifts, negs, keep, found


def shift_code(w: np.ndarray, terms: int) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray | None]:
    """w (int8 values) -> (per term: exponents int32, sign masks bool; the keep mask (bool) with one term,
    else None).
    ValueError if a weight is not a sum of `terms` signed powers of two."""
    shifts, negs, keep, found = _code_table(terms)
    idx = np.asarray(w, np.int64) + 128
    if idx.size and (idx.min() < 0 or idx.max() > 255 or not found[idx].all()):
        bad = np.asarray(w).reshape(-1)[~found[np.clip(idx, 0, 255)].reshape(-1)][:4]
        raise ValueError(f"weights {bad.tolist()} are not sums of {terms} signed powers of two")
    return ([shifts[idx][..., t] for t in range(terms)], [negs[idx][..., t] for t in range(terms)],
            keep[idx] if terms == 1 else None)


def _code_operands(ctx: LowerCtx, w: np.ndarray, terms: int) -> list[ir.Value]:
    """The code of w as constants: exponents of each term (i32), its signs (i1), [keep (i1)]."""
    sh, neg, keep = shift_code(w, terms)
    out = [ctx.const(s, DType.I32) for s in sh] + [ctx.const(n, DType.BOOL) for n in neg]
    return out + ([ctx.const(keep, DType.BOOL)] if keep is not None else [])


def shift_add_body(dt: DType, zp: int, terms: int) -> Callable[..., ir.Value]:
    """body(x, exponents..., signs..., [keep], acc): acc + sum_t select(neg_t, -(x' << p_t), x' << p_t)."""
    def body(x: ir.Value, *rest: ir.Value) -> ir.Value:
        *code, acc = rest
        xw = _widen(x, dt, zp)
        zero = _c(0, 32)
        for t in range(terms):
            v = arith.shli(xw, code[t])
            if terms == 1:
                v = arith.select(code[2], v, zero)
            acc = arith.addi(acc, arith.select(code[terms + t], arith.subi(zero, v), v))
        return acc
    return body


def shift_matmul(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    a, terms = node.attrs, TERMS[node.attrs["weight_code"]]
    xt, out = node.inputs[0].type, node.outputs[0].type
    w = np.asarray(node.inputs[1].const, np.int64) - a["b_zero_point"]
    k, n = w.shape
    rows = int(np.prod(xt.shape[:-1], dtype=np.int64))
    x2 = ctx.reshape(args[0], (rows, k))
    code = _code_operands(ctx, w, terms)
    maps = [amap(3, (0, 2))] + [amap(3, (2, 1))] * len(code) + [amap(3, (0, 1))]
    y = generic([x2, *code], [ctx.full((rows, n), _int(32), 0)], maps, [PAR, PAR, RED],
                shift_add_body(xt.dtype, a["a_zero_point"], terms))[0]
    return [ctx.reshape(y, out.shape)]


def shift_conv(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    """Grouped N-d cross-correlation as one linalg.generic over (n, g, m, o..., c, k...), as linalg.conv's
    generic form, the multiply-accumulate replaced by the shift-and-add body."""
    a, terms = node.attrs, TERMS[node.attrs["weight_code"]]
    xt, out = node.inputs[0].type, node.outputs[0].type
    w = np.asarray(node.inputs[1].const, np.int64)
    nsp, strides, dil = xt.rank - 2, a["strides"], a["dilations"]
    x = pad_constant(ctx, args[0], [0, 0, *a["pads"][:nsp]], [0, 0, *a["pads"][nsp:]], a["x_zero_point"])
    n, c = xt.shape[:2]
    mch, groups, ks, osp = w.shape[0], a["groups"], w.shape[2:], tuple(out.shape[2:])
    g, cg, mg = groups, c // groups, mch // groups
    xg = ctx.reshape(x, (n, g, cg) + shape_of(x)[2:])
    code = _code_operands(ctx, w.reshape((g, mg, cg) + tuple(ks)), terms)
    i32 = _int(32)
    if len(args) > 2:
        init = ctx.broadcast_to(ctx.reshape(args[2], (1, mch) + (1,) * nsp), out.shape)
    else:
        init = ctx.full(out.shape, i32, 0)
    nd, o0, c0, k0 = 4 + 2 * nsp, 3, 3 + nsp, 4 + nsp
    xmap = [0, 1, c0] + [ir.AffineDimExpr.get(o0 + i) * strides[i] + ir.AffineDimExpr.get(k0 + i) * dil[i]
                         for i in range(nsp)]
    maps = ([amap(nd, xmap)] + [amap(nd, [1, 2, c0] + [k0 + i for i in range(nsp)])] * len(code)
            + [amap(nd, [0, 1, 2] + [o0 + i for i in range(nsp)])])
    iters = [PAR] * (3 + nsp) + [RED] * (1 + nsp)
    y = generic([xg, *code], [ctx.reshape(init, (n, g, mg) + osp)], maps, iters,
                shift_add_body(xt.dtype, a["x_zero_point"], terms))[0]
    return [ctx.reshape(y, out.shape)]


def is_shift_realized(node: Node) -> bool:
    """passes/shiftadd.py chose the shift-and-add kernel for this layer (and its weight is a constant)."""
    a = node.attrs
    return a["realization"] == "shift" and a["weight_code"] in TERMS and node.inputs[1].is_const




# -- LUT GEMM ------------------------------------------------------------------------------------------------
def _shift_round(x: ir.Value, e: ir.Value) -> ir.Value:
    """lut.shift_round on i32 scalars: (x + 2^(e-1) - 1 + (x >> e & 1)) >> e, x for e = 0."""
    one, zero = _c(1, 32), _c(0, 32)
    half = arith.addi(arith.subi(arith.shli(one, arith.maxsi(arith.subi(e, one), zero)), one),
                      arith.andi(arith.shrsi(x, e), one))
    return arith.shrsi(arith.addi(x, arith.select(arith.cmpi(SGT, e, zero), half, zero)), e)


def _tables(ctx: LowerCtx, xr: ir.Value) -> ir.Value:
    """xr (R, J, 4) -> (R, J, 16): entry p = sum_t bit_t(p) * x[t], as selects and adds."""
    r, j, _ = shape_of(xr)
    maps = [amap(3, [0, 1, ir.AffineConstantExpr.get(t)]) for t in range(lut.G4)] + [amap(3, (0, 1, 2))]
    i32 = _int(32)

    def body(*xs: ir.Value) -> ir.Value:
        p = arith.index_cast(i32, _idx(2))
        acc = _c(0, 32)
        for t in range(lut.G4):
            on = arith.cmpi(NE, arith.andi(arith.shrui(p, _c(t, 32)), _c(1, 32)), _c(0, 32))
            acc = arith.addi(acc, arith.select(on, xs[t], _c(0, 32)))
        return acc
    return generic([xr] * lut.G4, [ctx.empty((r, j, lut.PATTERNS), i32)], maps, [PAR] * 3, body)[0]


def _table_shifts(ctx: LowerCtx, xr: ir.Value, ng: int) -> ir.Value:
    """lut.table_shifts: (R, J, 4) -> (R, ng) i32, the smallest e with shift_round(max |T|, e) <= 127."""
    r, j, _ = shape_of(xr)
    i32 = _int(32)
    maps = [amap(2, [0, 1, ir.AffineConstantExpr.get(t)]) for t in range(lut.G4)] + [amap(2, (0, 1))]

    def big(*xs: ir.Value) -> ir.Value:
        pos, neg = _c(0, 32), _c(0, 32)
        for v in xs[:lut.G4]:
            pos = arith.addi(pos, arith.maxsi(v, _c(0, 32)))
            neg = arith.addi(neg, arith.maxsi(arith.subi(_c(0, 32), v), _c(0, 32)))
        return arith.maxsi(pos, neg)
    b = generic([xr] * lut.G4, [ctx.empty((r, j), i32)], maps, [PAR, PAR], big)[0]
    mx = ctx.reduce(ctx.reshape(b, (r, ng, j // ng)), [2], 0, arith.maxsi)

    def count(v: ir.Value) -> ir.Value:
        e = _c(0, 32)
        for s in range(16):
            over = arith.cmpi(SGT, _shift_round(v, _c(s, 32)), _c(lut.INT8_MAX, 32))
            e = arith.addi(e, arith.extui(i32, over))
        return e
    return ctx.ewise([mx], (r, ng), i32, count)


def _patterns(ctx: LowerCtx, planes: ir.Value) -> ir.Value:
    """(b, N, Kp/8) planes -> (b, N, J) i32 table indices: the nibble of byte j // 2 at 4 * (j % 2)."""
    b, n, q8 = shape_of(planes)
    i32 = _int(32)
    src = amap(3, [0, 1, ir.AffineFloorDivExpr.get(ir.AffineDimExpr.get(2), ir.AffineConstantExpr.get(2))])

    def body(v: ir.Value, _out: ir.Value) -> ir.Value:
        odd = arith.andi(arith.index_cast(i32, _idx(2)), _c(1, 32))
        return arith.andi(arith.shrui(arith.extui(i32, v), arith.shli(odd, _c(2, 32))), _c(15, 32))
    return generic([planes], [ctx.empty((b, n, 2 * q8), i32)], [src, amap(3, (0, 1, 2))], [PAR] * 3, body)[0]


@lowers(lut.lut_matmul)
def _lut_matmul(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    at, at_t = node.attrs, node.inputs[0].type
    bits, gs = at["bits"], at["group_size"]
    k = at_t.shape[-1]
    _, n, q8 = shape_of(args[1])
    kp, rows = 8 * q8, int(np.prod(at_t.shape[:-1], dtype=np.int64))
    j, ng, gj = kp // lut.G4, kp // gs, gs // lut.G4
    i32 = _int(32)
    a2 = ctx.reshape(args[0], (rows, k))
    x = ctx.ewise([a2], (rows, k), i32, lambda v: _widen(v, at_t.dtype, at["a_zero_point"]))
    x = pad_constant(ctx, x, [0, 0], [0, kp - k], 0)                              # (R, Kp)
    xr = ctx.reshape(x, (rows, j, lut.G4))
    t4 = ctx.reshape(_tables(ctx, xr), (rows, ng, gj, lut.PATTERNS))
    if at["table"] == "int8":
        e = _table_shifts(ctx, xr, ng)
        t4 = ctx.ewise([t4, ctx.reshape(e, (rows, ng, 1, 1))], shape_of(t4), i32, _shift_round)
    else:
        e = ctx.full((rows, ng), i32, 0)
    pat = ctx.reshape(_patterns(ctx, args[1]), (bits, n, ng, gj))

    def lookup(pv: ir.Value, acc: ir.Value) -> ir.Value:       # dims (r, g, c, i, jl)
        at_p = arith.index_cast(ir.IndexType.get(), pv)
        hit = tensor.ExtractOp(t4, [_idx(0), _idx(1), _idx(4), at_p]).result
        return arith.addi(acc, arith.shli(hit, arith.index_cast(i32, _idx(3))))
    part = generic([pat], [ctx.full((rows, ng, n), i32, 0)], [amap(5, (3, 2, 1, 4)), amap(5, (0, 1, 2))],
                   [PAR, PAR, PAR, RED, RED], lookup)[0]
    s = ctx.reduce(ctx.reshape(x, (rows, ng, gs)), [2], 0, arith.addi)          # (R, ng)
    if len(args) > 4:
        init = ctx.broadcast_to(ctx.reshape(args[4], (1, n)), (rows, n))
    else:
        init = ctx.full((rows, n), i32, 0)

    def combine(p: ir.Value, ev: ir.Value, sv: ir.Value, u: ir.Value, z: ir.Value, acc: ir.Value) -> ir.Value:
        d = arith.subi(arith.shli(p, ev), arith.muli(arith.extui(i32, z), sv))   # dims (r, c, g)
        return arith.addi(acc, arith.muli(arith.extsi(i32, u), d))
    maps = [amap(3, (0, 2, 1)), amap(3, (0, 2)), amap(3, (0, 2)), amap(3, (2, 1)), amap(3, (2, 1)),
            amap(3, (0, 1))]
    y = generic([part, e, s, args[2], args[3]], [init], maps, [PAR, PAR, RED], combine)[0]
    return [ctx.reshape(y, node.outputs[0].type.shape)]


__all__ = ["is_shift_realized", "lmul_scalar", "shift_add_body", "shift_code"]
