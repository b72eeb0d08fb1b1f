"""ShiftAddViT's binary-code linear attention (mfree.binary_attention, compiler/ops/mfree.py), bit-exact with
the op's reference, as linalg.generics over the leading dims flattened to one batch dim b:

    amax     = max |V| over the whole tensor (a full f32 reduction, order free)        0-d
    s        = select(amax > 0, amax / 127, 1)                                          0-d
    v8       = clamp(fptosi(floor(V / s + 0.5)), -127, 127)                            (b, Lk, Dv) i32
    KV, KS   = sum_m select(K[b, m, e] > 0, v8[b, m, n], 0), sum_m select(K > 0, 1, 0)  (b, D, Dv), (b, D)
    num, den = sum_e select(Q[b, p, e] > 0, KV[b, e, n], 0), ... KS[b, e] ...         (b, Lq, Dv), (b, Lq)
    r        = s / sitofp(max(den, 1))                                                  (b, Lq) f32
    out      = sitofp(num) * r                                                          (b, Lq, Dv) f32

Every product with a code is arith.select + arith.addi into an i32 accumulator (no arith.muli): the sums are
integers, exact (the op's type rule bounds them below 2^31), so IREE may take them in any order. The float
steps are single IEEE float32 operations (divf, addf, floor, divf, mulf; no multiply-add pair for LLVM to
contract), the same as the reference's. Clamping after the conversion to i32 equals the reference's clip of
the float (|V / s| <= 127 + an ulp, so the value fits i32). The reductions are i32 and f32 (IREE 3.13's GPU
distribution fails on i64 ones: ivit.py), and the lowering makes no splat constant tensor, so the same form
builds for cuda.
"""
from __future__ import annotations

import numpy as np
from iree.compiler import ir
from iree.compiler.dialects import arith, math

from compiler.backends.mlir_lower.registry import (
    PAR,
    RED,
    LowerCtx,
    amap,
    generic,
    lowers,
    scalar,
    shape_of,
)
from compiler.ir import Node
from compiler.ops import mfree

OGT = arith.CmpFPredicate.OGT


def _f32() -> ir.Type:
    return ir.F32Type.get()


def _i32() -> ir.Type:
    return ir.IntegerType.get_signless(32)


def _positive(x: ir.Value) -> ir.Value:
    """The code bit [x > 0] as an i1 (false for -0.0 and NaN)."""
    return arith.cmpf(OGT, x, scalar(0.0, _f32()))


def _masked_sum(ctx: LowerCtx, codes: ir.Value, vals: ir.Value | None, out_shape: tuple[int, ...],
                maps: list[ir.AffineMap], nd: int) -> ir.Value:
    """An i32 sum over the last of `nd` dims of select(codes > 0, vals, 0), vals 1 when None: masked adds."""
    i32 = _i32()
    iters = [PAR] * (nd - 1) + [RED]
    ins = [codes] if vals is None else [codes, vals]

    def body(c: ir.Value, *rest: ir.Value) -> ir.Value:
        *v, acc = rest
        one = v[0] if v else scalar(1, i32)
        return arith.addi(acc, arith.select(_positive(c), one, scalar(0, i32)))
    return generic(ins, [ctx.full(out_shape, i32, 0)], maps, iters, body)[0]


def scale_of(ctx: LowerCtx, v: ir.Value) -> ir.Value:
    """mfree.v_scale: a 0-d f32 tensor, max|V| / 127 (float32 division), 1 for an all-zero V."""
    f32 = _f32()
    amax = ctx.reduce(v, list(range(len(shape_of(v)))), 0.0, arith.maximumf, pre=math.absf)
    return ctx.ewise([amax], (), f32, lambda a: arith.select(
        arith.cmpf(OGT, a, scalar(0.0, f32)), arith.divf(a, scalar(float(mfree.V_LEVELS), f32)),
        scalar(1.0, f32)))


@lowers(mfree.binary_attention)
def _binary_attention(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    out_t = node.outputs[0].type
    (lq, d), (lk, dv) = node.inputs[0].type.shape[-2:], node.inputs[2].type.shape[-2:]
    b = int(np.prod(out_t.shape[:-2], dtype=np.int64))
    q, k, v = (ctx.reshape(x, (b,) + shape_of(x)[-2:]) for x in args)
    f32, i32 = _f32(), _i32()
    s = scale_of(ctx, v)
    lv = mfree.V_LEVELS

    def quant(x: ir.Value, sv: ir.Value) -> ir.Value:
        f = math.floor(arith.addf(arith.divf(x, sv), scalar(0.5, f32)))
        return arith.minsi(arith.maxsi(arith.fptosi(i32, f), scalar(-lv, i32)), scalar(lv, i32))
    v8 = ctx.ewise([v, s], (b, lk, dv), i32, quant)
    # dims (b, e, n, m): KV[b, e, n] = sum_m [K[b, m, e] > 0] v8[b, m, n]; KS over (b, e, m)
    kv = _masked_sum(ctx, k, v8, (b, d, dv), [amap(4, (0, 3, 1)), amap(4, (0, 3, 2)), amap(4, (0, 1, 2))], 4)
    ks = _masked_sum(ctx, k, None, (b, d), [amap(3, (0, 2, 1)), amap(3, (0, 1))], 3)
    # dims (b, p, n, e): num[b, p, n] = sum_e [Q[b, p, e] > 0] KV[b, e, n]; den over (b, p, e)
    num = _masked_sum(ctx, q, kv, (b, lq, dv), [amap(4, (0, 1, 3)), amap(4, (0, 3, 2)), amap(4, (0, 1, 2))], 4)
    den = _masked_sum(ctx, q, ks, (b, lq), [amap(3, (0, 1, 2)), amap(3, (0, 2)), amap(3, (0, 1))], 3)
    r = ctx.ewise([den, s], (b, lq), f32,
                  lambda dn, sv: arith.divf(sv, arith.sitofp(f32, arith.maxsi(dn, scalar(1, i32)))))
    out = ctx.ewise([num, ctx.reshape(r, (b, lq, 1))], (b, lq, dv), f32,
                    lambda n, rv: arith.mulf(arith.sitofp(f32, n), rv))
    return [ctx.reshape(out, out_t.shape)]
