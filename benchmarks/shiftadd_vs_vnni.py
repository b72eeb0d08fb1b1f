"""Per-layer latency of the two realizations of a power-of-two layer (passes/shiftadd.py): the shift-and-add
kernels (tvm_kernels/shiftadd.py, 1 and 2 terms) vs the int8 VNNI kernels fed the same weights, with our FP32
kernel of the same shape for scale.

  python benchmarks/shiftadd_vs_vnni.py [--threads 1] [--repeat 30] [--quick]

Every row is one layer shape (batch 1, conv: ci -> co on h x h with a k x k kernel; matmul: m x k @ k x n),
each kernel with its fused epilogue (int8: bias + per-channel dyadic requant to uint8; fp32: bias + relu),
operands already in the kernels' layouts. The four kernels of a row are timed interleaved in the same run
(benchmarks.common.interleaved_ms: every round calls each once, the order reversed every other round) and
the median is printed. Each int8 output is first checked bit-exactly against the q.conv / q.matmul +
q.requant references (compiler/ops/quant.py).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys


def _parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=30, help="interleaved rounds per row")
    p.add_argument("--quick", action="store_true", help="two shapes only")
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    os.environ["TVM_NUM_THREADS"] = str(ARGS.threads)  # before importing tvm
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import tvm  # noqa: E402

from benchmarks.common import interleaved_ms  # noqa: E402
from compiler.backends.tvm_kernels import conv2d as F, matmul as FM, qconv2d as K, qmatmul as M  # noqa: E402
from compiler.backends.tvm_kernels import shiftadd as S  # noqa: E402
from compiler.backends.tvm_kernels.common import host_target  # noqa: E402
from passes.shiftadd import levels  # noqa: E402

# (name, ci, co, h, k, stride) convs and (name, m, k, n) matmuls
CONVS = [("digits conv 16->32 8x8 3x3", 16, 32, 8, 3, 1), ("conv 64->64 56x56 3x3", 64, 64, 56, 3, 1),
         ("conv 128->128 28x28 3x3", 128, 128, 28, 3, 1), ("conv 256->256 14x14 1x1", 256, 256, 14, 1, 1)]
MATMULS = [("digits ViT qkv 17x64 @ 64x192", 17, 64, 192), ("linear 1x768 @ 768x768", 1, 768, 768),
           ("tokens 64x256 @ 256x1024", 64, 256, 1024)]
QUICK = (CONVS[:1], MATMULS[:1])


def _pow2(rng, shape, terms):
    return rng.choice(levels(terms), shape).astype(np.int8)


def _run(lib, args, out_shape, dtype):
    dev = tvm.cpu()
    t = [tvm.runtime.tensor(a, dev) for a in args] + [tvm.runtime.empty(out_shape, dtype, dev)]
    lib["main"](*t)
    return (lambda: lib["main"](*t)), t[-1]


def conv_row(target, ci, co, h, k, s, rng):
    p = k // 2
    x = rng.integers(0, 256, (1, ci, h, h)).astype(np.uint8)
    b = rng.integers(-2000, 2000, co).astype(np.int32)
    m, c = rng.integers(2**30, 2**31 - 1, co), rng.integers(40, 44, co)
    rq = K.Requant(0, 5, 0, 255, "uint8")
    spec = K.QConvSpec(1, ci, h, h, co, k, k, (s, s), (p, p, p, p), (1, 1), "uint8", 3, K.choose_in_block(ci), rq)
    fns = {}
    for terms in (0, 1, 2):
        w = _pow2(rng, (co, ci, k, k), terms or 2)
        wp, bp, make, _ = S.conv_realization(spec, w, b, terms)
        lib = tvm.compile(tvm.IRModule({"main": make(None)}), target=target)
        fn, out = _run(lib, [K.pack_data(spec, x), wp, bp, K.pack_requant(m, c, co, spec.cop)],
                       K.out_shape(spec), spec.out_dtype)
        if not np.array_equal(K.unpack_out(spec, out.numpy()), K.qconv2d_reference(spec, x, w, b, (m, c))):
            raise AssertionError(f"conv {ci}->{co} terms={terms}: not bit-exact")
        fns[terms] = fn
    fs = F.Conv2dSpec(1, ci, h, h, co, k, k, (s, s), (p, p, p, p), (1, 1), 1, 16, 16, True, False, "relu")
    lib = tvm.compile(tvm.IRModule({"main": F.make_conv2d(fs)}), target=target)
    fns["fp32"], _ = _run(lib, [rng.standard_normal(F.data_shape(fs)).astype(np.float32),
                                F.pack_weight(fs, rng.standard_normal((co, ci, k, k)).astype(np.float32)),
                                F.pack_bias(fs, rng.standard_normal(co).astype(np.float32))],
                          F.out_shape(fs), "float32")
    return fns


def matmul_row(target, m_, k, n, rng):
    a = rng.integers(0, 256, (m_, k)).astype(np.uint8)
    b = rng.integers(-2000, 2000, n).astype(np.int32)
    mc = (rng.integers(2**30, 2**31 - 1, n), rng.integers(40, 44, n))
    spec = M.QMatmulSpec(m_, k, n, "uint8", 3, K.Requant(0, 5, 0, 255, "uint8"))
    fns = {}
    for terms in (0, 1, 2):
        w = _pow2(rng, (k, n), terms or 2)
        wp, bp, make, _ = S.matmul_realization(spec, w, 0, b, terms)
        lib = tvm.compile(tvm.IRModule({"main": make(None)}), target=target)
        fn, out = _run(lib, [a, wp, bp, M.pack_requant(*mc, spec)], M.out_shape(spec), spec.out_dtype)
        if not np.array_equal(out.numpy()[:, :n], M.qmatmul_reference(spec, a, w, 0, b, mc)):
            raise AssertionError(f"matmul {m_}x{k}x{n} terms={terms}: not bit-exact")
        fns[terms] = fn
    fs = FM.MatmulSpec((), m_, n, k, True, False, True, "relu")
    lib = tvm.compile(tvm.IRModule({"main": FM.make_matmul(fs)}), target=target)
    fns["fp32"], _ = _run(lib, [rng.standard_normal((m_, k)).astype(np.float32),
                                FM.pack_b(fs, rng.standard_normal((k, n)).astype(np.float32)),
                                rng.standard_normal(n).astype(np.float32)], FM.out_shape(fs), "float32")
    return fns


def main() -> None:
    args = ARGS or _parse()
    target = host_target(args.threads)
    rng = np.random.default_rng(0)
    convs, matmuls = QUICK if args.quick else (CONVS, MATMULS)
    rows = [(name, lambda c=c: conv_row(target, *c, rng)) for name, *c in convs] + \
           [(name, lambda c=c: matmul_row(target, *c, rng)) for name, *c in matmuls]
    print(f"target {target}, {args.threads} thread(s), median of {args.repeat} interleaved rounds, ms\n")
    print("| layer | VNNI int8 | shift 1-term | shift 2-term | FP32 | shift-1 / VNNI | shift-2 / VNNI |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, build in rows:
        fns = build()
        keys = [0, 1, 2, "fp32"]
        ms = dict(zip(keys, (statistics.median(t) for t in interleaved_ms([fns[k] for k in keys], 3, args.repeat))))
        print(f"| {name} | {ms[0]:.4f} | {ms[1]:.4f} | {ms[2]:.4f} | {ms['fp32']:.4f} | "
              f"{ms[1] / ms[0]:.2f}x | {ms[2] / ms[0]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
