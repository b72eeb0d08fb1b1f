"""Per-layer INT8 conv timing: our fused VNNI conv + requant (tvm_kernels.qconv2d) vs onnxruntime QLinearConv.

  python benchmarks/int8_vs_onnxruntime.py [--threads 1] [--repeat 30] [--quick] [--tile OCxW]

For every distinct conv shape of ResNet-50 (batch 1, 224x224) it builds a single-node QOperator ONNX model
(uint8 activations with a zero point, int8 per-channel symmetric weights, int32 bias) and times:

* ``ORT``  -- median wall time of ``session.run`` (onnxruntime's NCHW QLinearConv, incl. its layout reorders and
  the Python call),
* ``ours`` -- median ``time_evaluator`` time of our kernel: uint8 activations already in the blocked layout
  (n, c/16, h, w, 16) (or (n, 1, h, w, 4) for the 3-channel stem), weights pre-packed, zero points folded into
  the bias, per-channel dyadic requant to uint8 fused into the write-back -- the form used between layers,

and the ratio ours / ORT, plus the count-weighted ResNet-50 totals.  Our output is checked bit-exactly against the
q.conv + q.requant references.  Threads: onnxruntime intra_op_num_threads=N, session.intra_op.allow_spinning=0;
TVM TVM_NUM_THREADS=N (set before tvm is imported) and target num-cores=N.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def _parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=30, help="timed runs per measurement")
    p.add_argument("--quick", action="store_true", help="a few shapes only")
    p.add_argument("--tile", default=None, help="force the register tile, e.g. 4x4 (reg_oc x reg_w)")
    p.add_argument("--no-check", action="store_true", help="skip the bit-exactness check")
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    os.environ["TVM_NUM_THREADS"] = str(ARGS.threads)  # before importing tvm
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
import tvm  # noqa: E402

from compiler.backends.tvm_kernels import qconv2d as K  # noqa: E402
from compiler.backends.tvm_kernels.common import host_target  # noqa: E402
from compiler.ops.quant import dyadic  # noqa: E402
from costmodel.measure import RESNET50_CONVS  # noqa: E402

X_SCALE, X_ZP, Y_SCALE, Y_ZP = 0.02, 3, 0.05, 5


def ort_model(ci, h, co, k, s, p, w, w_scales, bias) -> bytes:
    inits = [numpy_helper.from_array(np.array(X_SCALE, np.float32), "xs"),
             numpy_helper.from_array(np.array(X_ZP, np.uint8), "xz"),
             numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(w_scales.astype(np.float32), "ws"),
             numpy_helper.from_array(np.zeros(co, np.int8), "wz"),
             numpy_helper.from_array(np.array(Y_SCALE, np.float32), "ys"),
             numpy_helper.from_array(np.array(Y_ZP, np.uint8), "yz"),
             numpy_helper.from_array(bias, "b")]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                            kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p])
    oh = (h + 2 * p - k) // s + 1
    graph = helper.make_graph([node], "qconv", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, ci, h, h])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, co, oh, oh])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def ort_time(model: bytes, x: np.ndarray, threads: int, repeat: int) -> float:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    feed = {"x": x}
    for _ in range(5):
        sess.run(None, feed)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        sess.run(None, feed)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def ours(ci, h, co, k, s, p, w, w_scales, bias, x, threads, repeat, tile, check):
    m, c = zip(*(dyadic(X_SCALE * float(ws) / Y_SCALE) for ws in w_scales))
    rq = K.Requant(0, Y_ZP, 0, 255, "uint8")
    spec = K.QConvSpec(1, ci, h, h, co, k, k, (s, s), (p, p, p, p), (1, 1), "uint8", X_ZP, K.choose_in_block(ci), rq)
    t0 = time.time()
    lib = tvm.compile(tvm.IRModule({"main": K.make_qconv2d(spec, tile)}), target=host_target(threads))
    build_s = time.time() - t0
    asm_ok = "vpdpbusd" in lib.mod.inspect_source("asm")
    dev = tvm.cpu()
    args = [K.pack_data(spec, x), K.pack_weight(spec, w), K.pack_bias(spec, w, bias), K.pack_requant(m, c, co, spec.cop)]
    targs = [tvm.runtime.tensor(a, dev) for a in args] + [tvm.runtime.empty(K.out_shape(spec), spec.out_dtype, dev)]
    lib["main"](*targs)
    exact = None
    if check:
        exact = bool(np.array_equal(K.unpack_out(spec, targs[-1].numpy()),
                                    K.qconv2d_reference(spec, x, w, bias, (m, c))))
    number = max(1, int(2e-3 / max(1e-6, 2 * spec.macs / 400e9)))
    ev = lib.mod.time_evaluator("main", dev, number=number, repeat=repeat)
    return float(np.median(ev(*targs).results)), exact, asm_ok, build_s, spec


def main():
    a = ARGS
    tile = tuple(int(v) for v in a.tile.split("x")) if a.tile else None
    layers = RESNET50_CONVS[:4] if a.quick else RESNET50_CONVS
    rng = np.random.default_rng(0)
    print(f"INT8 conv (u8 x s8, per-channel requant -> u8), ResNet-50 shapes, batch 1, {a.threads} thread(s), "
          f"{host_target(a.threads).attrs['mcpu']}")
    hdr = f"{'layer':<26}{'n':>3}{'GOP':>7}{'ORT ms':>9}{'ours ms':>9}{'GOP/s':>7}{'ours/ORT':>9}  {'exact':<6}{'vnni':<5}"
    print(hdr)
    print("-" * len(hdr))
    tot_ort = tot_ours = 0.0
    all_exact = True
    for ci, h, co, k, s, p, cnt in layers:
        x = rng.integers(0, 256, (1, ci, h, h)).astype(np.uint8)
        w = rng.integers(-127, 128, (co, ci, k, k)).astype(np.int8)
        w_scales = rng.uniform(0.5e-3, 2e-3, co).astype(np.float32)
        bias = rng.integers(-2000, 2000, co).astype(np.int32)
        t_ort = ort_time(ort_model(ci, h, co, k, s, p, w, w_scales, bias), x, a.threads, a.repeat)
        t_us, exact, asm_ok, _, spec = ours(ci, h, co, k, s, p, w, w_scales, bias, x, a.threads, a.repeat, tile,
                                            not a.no_check)
        all_exact &= exact is not False
        tot_ort += cnt * t_ort
        tot_ours += cnt * t_us
        name = f"{k}x{k}{'/2' if s == 2 else ''} {ci}->{co} @{h}"
        print(f"{name:<26}{cnt:>3}{2 * spec.macs / 1e9:>7.3f}{t_ort * 1e3:>9.3f}{t_us * 1e3:>9.3f}"
              f"{2 * spec.macs / t_us / 1e9:>7.0f}{t_us / t_ort:>9.2f}  {str(exact):<6}{str(asm_ok):<5}", flush=True)
    print("-" * len(hdr))
    print(f"{'ResNet-50 weighted total':<26}{'':>3}{'':>7}{tot_ort * 1e3:>9.2f}{tot_ours * 1e3:>9.2f}{'':>7}"
          f"{tot_ours / tot_ort:>9.2f}  {'all' if all_exact else 'NO'}")


if __name__ == "__main__":
    main()
