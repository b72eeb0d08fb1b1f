"""Lowering of q.lut_matmul (compiler/ops/lut.py), bit-exact with its reference.

On an llvm target with AVX-512 (BW) and constant weights: our LUT kernel (tvm_kernels/lut_gemm.py: tables
once per row, vpshufb lookups), the weight repacked at compile time into the kernel's index bytes (the same
b bits per weight as the op's planes: the executable stores the packed weight). Elsewhere: the same
algorithm as a TE compute (tables, the int8 table scales, lookups, shifts, group scales after each
group's sum), left to TVM's schedules.
"""
from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx

from compiler.backends.tvm_kernels import lut_gemm as kl
from compiler.backends.tvm_lower.registry import LowerCtx, lowers, tvm_dtype
from compiler.host import cpu_features
from compiler.ir import Node
from compiler.ops import lut


def _kernel_spec(ctx: LowerCtx, node: Node) -> kl.LutSpec | None:
    """The LUT kernel's spec for `node`, or None where the kernel does not apply."""
    a_v, *consts = node.inputs
    if ctx.target.kind != "llvm" or "avx512bw" not in cpu_features(ctx.target.cpu) or \
            not all(v.is_const for v in consts):
        return None
    at = node.attrs
    k, n = a_v.type.shape[-1], consts[0].type.shape[1]
    try:
        return kl.LutSpec(int(np.prod(a_v.type.shape[:-1], dtype=np.int64)), k, n, at["bits"], at["group_size"],
                          at["table"], tvm_dtype(a_v.type.dtype), at["a_zero_point"])
    except ValueError:
        return None


def _emit_kernel(ctx: LowerCtx, node: Node, spec: kl.LutSpec, a: relax.Expr) -> relax.Expr:
    planes, scales, zeros = (np.asarray(v.const) for v in node.inputs[1:4])
    bias = np.asarray(node.inputs[4].const) if len(node.inputs) > 4 else None
    call_args = [ctx.reshape(a, (spec.m, spec.k)),
                 relax.const(kl.pack_weight(spec, planes), "uint8"),
                 relax.const(kl.pack_groups(spec, scales, "int16"), "int16"),
                 relax.const(kl.pack_groups(spec, zeros, "uint8"), "uint8"),
                 relax.const(kl.pack_bias(spec, bias), "int32")]
    gv = ctx.kernel(("lut_gemm", spec), lambda: kl.make_lut_gemm(spec), "lut_gemm")
    y = ctx.call_kernel(gv, call_args, kl.out_shape(spec), "int32")
    if spec.np_ != spec.n:
        y = ctx.bb.emit(relax.op.strided_slice(y, axes=[1], begin=[0], end=[spec.n]))
    return ctx.reshape(y, node.outputs[0].type.shape)


def _round_shift(x, e):
    """shift_round (ties to even) on int32 TE scalars."""
    one = tirx.const(1, "int32")
    half = tirx.Select(e > 0, (one << tirx.max(e - 1, 0)) - 1 + ((x >> e) & 1), tirx.const(0, "int32"))
    return (x + half) >> e


def lut_matmul_te(a, planes, scales, zeros, bias, bits: int, group_size: int, table: str, a_zp: int):
    """The q.lut_matmul reference as TE stages; a is (rows, K); bias None or (N,) int32."""
    rows, k = a.shape
    n, kp = planes.shape[1], planes.shape[2] * 8
    gj, ng = group_size // 4, kp // group_size
    i32 = "int32"
    zero = tirx.const(0, i32)
    x = te.compute((rows, kp), lambda r, kk: tirx.Select(kk < k, a[r, tirx.min(kk, k - 1)].astype(i32) - a_zp, zero),
                   name="x")
    tab = te.compute((rows, kp // 4, 16), lambda r, j, p: sum(
        tirx.Select(((p >> t) & 1) > 0, x[r, 4 * j + t], zero) for t in range(4)), name="tables")
    if table == "int8":
        big = te.compute((rows, kp // 4), lambda r, j: tirx.max(
            sum(tirx.max(x[r, 4 * j + t], 0) for t in range(4)), sum(tirx.max(-x[r, 4 * j + t], 0) for t in range(4))),
            name="big")
        jl = te.reduce_axis((0, gj), "jl")
        mx = te.compute((rows, ng), lambda r, g: te.max(big[r, g * gj + jl], axis=jl), name="mx")
        e = te.compute((rows, ng), lambda r, g: sum(
            tirx.Select(_round_shift(mx[r, g], tirx.const(s, i32)) > 127, 1, 0) for s in range(8)), name="shift")
        tab = te.compute(tab.shape, lambda r, j, p: _round_shift(tab[r, j, p], e[r, j // gj]), name="tables8")
    else:
        e = te.compute((rows, ng), lambda r, g: zero, name="shift")
    pat = te.compute((bits, n, kp // 4), lambda i, c, j: sum(
        ((planes[i, c, (4 * j + t) // 8].astype(i32) >> ((4 * j + t) % 8)) & 1) << t for t in range(4)), name="pat")
    ri, rj = te.reduce_axis((0, bits), "ri"), te.reduce_axis((0, gj), "rj")
    part = te.compute((rows, ng, n), lambda r, g, c: te.sum(
        tab[r, g * gj + rj, pat[ri, c, g * gj + rj]] << ri, axis=[ri, rj]), name="lookups")
    rk = te.reduce_axis((0, group_size), "rk")
    s = te.compute((rows, ng), lambda r, g: te.sum(x[r, g * group_size + rk], axis=rk), name="group_sum")
    rg = te.reduce_axis((0, ng), "rg")
    y = te.compute((rows, n), lambda r, c: te.sum(scales[rg, c].astype(i32) * (
        (part[r, rg, c] << e[r, rg]) - zeros[rg, c].astype(i32) * s[r, rg]), axis=rg), name="lut_matmul")
    if bias is None:
        return y
    return te.compute((rows, n), lambda r, c: y[r, c] + bias[c], name="lut_matmul_bias")


@lowers(lut.lut_matmul)
def _lut_matmul(ctx: LowerCtx, node: Node, args: list[relax.Expr]) -> list[relax.Expr]:
    spec = _kernel_spec(ctx, node)
    if spec is not None:
        return [_emit_kernel(ctx, node, spec, args[0])]
    at = node.attrs
    shape = node.inputs[0].type.shape
    a2 = ctx.reshape(args[0], (int(np.prod(shape[:-1], dtype=np.int64)), shape[-1]))
    bias = args[4] if len(args) > 4 else None
    y = ctx.emit_te(lut_matmul_te, a2, *args[1:4], bias, at["bits"], at["group_size"], at["table"], at["a_zero_point"],
                    name="lut_matmul")
    return [ctx.reshape(y, node.outputs[0].type.shape)]
