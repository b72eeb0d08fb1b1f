"""Register tiles chosen by the cost model vs the hand-written pick_tile vs TVM's untuned default, same run.

  python benchmarks/schedules_vs_untuned.py [--threads 1] [--repeat 7] [--quick] [--no-untuned] [--kinds qmatmul,qbmm]

For a few fp32 conv2d (ResNet-50 and off-grid shapes), int8 VNNI conv2d, fp32 matmul (BERT), int8 VNNI matmul
(the integer BERT encoder's linear layers) and int8 batched matmul (its attention Q K^T / P V) kernels, prints the
median ``time_evaluator`` time in ms of:

* ``policy``  -- our kernel with ``costmodel.policy``'s tile (the shipped / tuned model),
* ``hand``    -- our kernel with the kernel's hand-written ``pick_tile``,
* ``untuned`` -- the same op as plain Relax (``relax.op.nn.conv2d`` / ``matmul`` + bias + relu, NCHW, float32)
  through ``LegalizeOps`` and ``tvm.compile`` with no schedule (dlight's CPU rules only cover GEMV/reduction,
  so nothing schedules these), timed through the Relax VM.  Not measured for int8 (no comparable untuned path).

The int8 matmuls take int8 activations and requantize to int8 (what ``benchmarks/e2e_int8_transformer.py`` runs).

Times of "policy" and "hand" come from the same compiled functions when the tiles coincide.
"""
from __future__ import annotations

import argparse
import os
import sys


def _parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="two kernels per kind")
    p.add_argument("--no-untuned", action="store_true", help="skip the (slow) untuned TVM baseline")
    p.add_argument("--kinds", default="conv,qconv,matmul,qmatmul,qbmm",
                   help="comma-separated kernel kinds (default all: conv,qconv,matmul,qmatmul,qbmm)")
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    os.environ["TVM_NUM_THREADS"] = str(ARGS.threads)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np
import tvm
from tvm import relax

from compiler.backends.tvm_kernels.common import host_target
from costmodel import features as F
from costmodel import measure as Me
from costmodel import policy

CONVS = [(64, 56, 64, 3, 1, 1), (256, 56, 512, 1, 2, 0), (128, 28, 128, 3, 1, 1), (1024, 14, 256, 1, 1, 0),
         (512, 7, 512, 3, 1, 1), (96, 30, 160, 3, 1, 1), (48, 17, 96, 5, 1, 2)]
QCONVS = [(64, 56, 64, 3, 1, 1), (128, 28, 512, 1, 1, 0), (256, 14, 256, 3, 1, 1), (512, 7, 2048, 1, 1, 0)]
MATMULS = [((1,), 128, 384, 384, True, False), ((1,), 128, 1536, 384, True, False),
           ((1,), 128, 384, 1536, True, False), ((1, 6), 128, 128, 64, False, True), ((), 49, 512, 768, True, False)]
QMATMULS = [(128, 384, 1152), (128, 384, 384), (128, 384, 1536), (128, 1536, 384), (1, 384, 1536)]   # m, k, n
QBMMS = [(6, 128, 64, 128, True), (6, 128, 128, 64, False)]                     # heads, m, k, n, transpose_b


def _ms(func, spec, target, repeat):
    return Me.time_func(func, spec, target, repeat=repeat)[0] * 1e3


def untuned_conv_ms(ci, h, co, k, s, p, target, repeat):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, ci, h, h), "float32"))
    w = relax.Var("w", relax.TensorType((co, ci, k, k), "float32"))
    b = relax.Var("b", relax.TensorType((1, co, 1, 1), "float32"))
    with bb.function("main", [x, w, b]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, w, strides=s, padding=p))
            y = bb.emit(relax.op.nn.relu(relax.op.add(y, b)))
            o = bb.emit_output(y)
        bb.emit_func_output(o)
    return _vm_ms(bb.get(), [(1, ci, h, h), (co, ci, k, k), (1, co, 1, 1)], target, repeat)


def untuned_matmul_ms(spec, target, repeat):
    bb = relax.BlockBuilder()
    ashape = spec.batch + (spec.m, spec.k)
    bshape = (spec.k, spec.n) if spec.b_is_const else spec.batch + ((spec.n, spec.k) if spec.transpose_b
                                                                     else (spec.k, spec.n))
    a = relax.Var("a", relax.TensorType(ashape, "float32"))
    b = relax.Var("b", relax.TensorType(bshape, "float32"))
    bias = relax.Var("bias", relax.TensorType((spec.n,), "float32"))
    params, shapes = ([a, b, bias], [ashape, bshape, (spec.n,)]) if spec.has_bias else ([a, b], [ashape, bshape])
    with bb.function("main", params):
        with bb.dataflow():
            r = len(bshape)
            bt = relax.op.permute_dims(b, list(range(r - 2)) + [r - 1, r - 2]) if spec.transpose_b else b
            y = bb.emit(relax.op.matmul(a, bt))
            if spec.has_bias:
                y = bb.emit(relax.op.add(y, bias))
            o = bb.emit_output(y)
        bb.emit_func_output(o)
    return _vm_ms(bb.get(), shapes, target, repeat)


def _vm_ms(mod, shapes, target, repeat):
    mod = relax.transform.LegalizeOps()(mod)
    ex = tvm.compile(mod, target)
    dev = tvm.cpu()
    vm = relax.VirtualMachine(ex, dev)
    rng = np.random.default_rng(0)
    args = [tvm.runtime.tensor(rng.standard_normal(s).astype("float32"), dev) for s in shapes]
    vm["main"](*args)
    ev = vm.time_evaluator("main", dev, number=1, repeat=repeat)
    return float(np.median(ev(*args).results)) * 1e3


def main(a):
    target = host_target(a.threads)
    model = policy.default_model()
    print(f"model: {policy.model_path() if model is not None else 'none (fallback = hand-written)'}; "
          f"{a.threads} thread(s); median of {a.repeat} repeats, ms")
    fmt = "{:<40s} {:>12s} {:>8s} {:>12s} {:>8s} {:>9s} {:>9s}"
    print(fmt.format("kernel", "policy tile", "ms", "hand tile", "ms", "untuned", "hand/pol"))
    cut = 2 if a.quick else None
    ratios = []
    jobs = [("conv", Me.conv_spec(*c), c) for c in CONVS[:cut]]
    jobs += [("qconv", Me.qconv_spec(*c), c) for c in QCONVS[:cut]]
    jobs += [("matmul", Me.matmul_spec(*m), m) for m in MATMULS[:cut]]
    jobs += [("qmatmul", Me.qmatmul_spec(*m), m) for m in QMATMULS[:cut]]
    jobs += [("qbmm", Me.qbmm_spec(*m), m) for m in QBMMS[:cut]]
    kinds = {k.strip() for k in a.kinds.split(",")}
    jobs = [j for j in jobs if j[0] in kinds]
    for kind, spec, raw in jobs:
        pt, hand = tuple(policy.choose(spec, target)[0]), F.default_tile(spec)
        t_hand = _ms(F.build_func(spec, hand), spec, target, a.repeat)
        t_pol = t_hand if pt == hand else _ms(F.build_func(spec, pt), spec, target, a.repeat)
        unt = "-"
        if not a.no_untuned and kind == "conv":
            unt = f"{untuned_conv_ms(*raw, target, max(3, a.repeat // 2)):.2f}"
        elif not a.no_untuned and kind == "matmul":
            unt = f"{untuned_matmul_ms(spec, target, max(3, a.repeat // 2)):.2f}"
        ratios.append(t_hand / t_pol)
        print(fmt.format(Me.task_name(spec)[:40], str(pt), f"{t_pol:.3f}", str(hand), f"{t_hand:.3f}", unt,
                         f"{t_hand / t_pol:.2f}"), flush=True)
    print(f"geomean hand/policy speedup: {float(np.exp(np.mean(np.log(ratios)))):.3f} over {len(ratios)} kernels")


if __name__ == "__main__":
    main(ARGS)
