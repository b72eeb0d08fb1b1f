"""Time the hand-scheduled TVM kernels (compiler/backends/tvm_kernels) against onnxruntime on the same single op.

  python benchmarks/kernels_vs_onnxruntime.py [--threads 1] [--only conv|matmul|pool] [--repeat 30] [--quick]

For every distinct conv shape of ResNet-50 (batch 1, 224x224; each conv with bias + ReLU), the BERT-encoder matmul
shapes (6 layers, hidden 384, 6 heads, ffn 1536, seq 128) and ResNet-50's pools / classifier head, it prints:

* ``ORT run``   -- median wall time of ``session.run`` on a one-op ONNX model (includes onnxruntime's own NCHWc
  reorders of input/output and the Python call overhead),
* ``ORT op``    -- median time of onnxruntime's compute node(s) only, from its profiler (no reorders/overhead),
* ``ours``      -- median time of our kernel (``time_evaluator``; activations already in the blocked layout,
  weights pre-packed, bias/activation fused),
* ratios ``ours / ORT op`` and ``ours / ORT run`` (< 1 = we are faster),

and totals weighted by how often each shape occurs in the model.  Outputs are also checked against onnxruntime.
Threads: onnxruntime ``intra_op_num_threads=N`` with ``session.intra_op.allow_spinning=0``; TVM
``TVM_NUM_THREADS=N`` (set before tvm is imported) and target ``num-cores=N``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def _parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", choices=["conv", "matmul", "pool", "all"], default="all")
    p.add_argument("--repeat", type=int, default=30, help="timed runs per measurement")
    p.add_argument("--quick", action="store_true", help="a few shapes only")
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    os.environ["TVM_NUM_THREADS"] = str(ARGS.threads)  # before importing tvm
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
import tvm  # noqa: E402

from compiler.backends.tvm_kernels import conv2d as C  # noqa: E402
from compiler.backends.tvm_kernels import matmul as M  # noqa: E402
from compiler.backends.tvm_kernels import pool as P  # noqa: E402
from compiler.backends.tvm_kernels.common import host_target  # noqa: E402
from compiler.backends.tvm_kernels.layout import pack_nchwc_np, unpack_nchwc_np  # noqa: E402
from costmodel.measure import RESNET50_CONVS  # noqa: E402


# (name, spec, count in the 6-layer encoder)
BERT_MATMULS = [
    ("qkv/out proj 128x384x384 +b", M.MatmulSpec((1,), 128, 384, 384, has_bias=True), 24),
    ("ffn1 128x384x1536 +b gelu", M.MatmulSpec((1,), 128, 1536, 384, has_bias=True, activation="gelu_erf"), 6),
    ("ffn2 128x1536x384 +b", M.MatmulSpec((1,), 128, 384, 1536, has_bias=True), 6),
    ("attn QK^T 6x128x64x128", M.MatmulSpec((1, 6), 128, 128, 64, b_is_const=False, transpose_b=True), 6),
    ("attn PV 6x128x128x64", M.MatmulSpec((1, 6), 128, 64, 128, b_is_const=False), 6),
]
OTHER_MATMULS = [("resnet fc 1x2048x1000 +b", M.MatmulSpec((), 1, 1000, 2048, transpose_b=True, has_bias=True), 1)]
RESNET50_POOLS = [
    ("maxpool 3x3s2 64x112", P.PoolSpec("max", 1, 64, 112, 112, 3, 3, (2, 2), (1, 1, 1, 1)), 1),
    ("global avgpool 2048x7", P.PoolSpec("global_avg", 1, 2048, 7, 7), 1),
]


# ------------------------------------------------------------------------------------------------ onnxruntime side
def _session(model: onnx.ModelProto, threads: int, profile: bool):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tempfile.gettempdir(), "ort_kbench")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_time(model, feeds, threads, repeat, op_filter):
    """(median ms of session.run, median ms of profiled compute nodes matching op_filter, output)."""
    sess = _session(model, threads, profile=False)
    out = None
    for _ in range(3):
        out = sess.run(None, feeds)[0]
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        ts.append(time.perf_counter() - t0)
    t_run = float(np.median(ts)) * 1e3
    # kernel-only time from the profiler
    sess = _session(model, threads, profile=True)
    for _ in range(3):
        sess.run(None, feeds)
    for _ in range(repeat):
        sess.run(None, feeds)
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    per_run, cur = [], 0.0
    for e in events:
        if e.get("cat") == "Session" and e.get("name") == "model_run":
            per_run.append(cur)
            cur = 0.0
        elif e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and op_filter(e["args"].get("op_name", "")):
            cur += e["dur"]
    # model_run events come after their nodes; per_run[i] is the node time of run i
    t_op = float(np.median(per_run[3:])) / 1e3 if len(per_run) > 3 else float("nan")
    return t_run, t_op, out


def conv_onnx(ci, h, co, k, s, p, w, b):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ci, h, h])
    oh = (h + 2 * p - k) // s + 1
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, co, oh, oh])
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4),
             helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "conv", [x], [y], [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def matmul_onnx(spec: M.MatmulSpec, w_raw, bias):
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, list(M.a_shape(spec)))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(M.out_shape(spec)))
    inits, inputs = [], [a]
    if spec.b_is_const:
        wt = w_raw.T if spec.transpose_b else w_raw  # ONNX MatMul wants (k, n)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(wt), "b"))
    else:
        # activations B given to ONNX already as (.., k, n): the transpose of K is the producer's job there
        inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, [*spec.batch, spec.k, spec.n]))
    nodes = [helper.make_node("MatMul", ["a", "b"], ["mm"])]
    cur = "mm"
    if spec.has_bias:
        inits.append(numpy_helper.from_array(bias, "bias"))
        nodes.append(helper.make_node("Add", [cur, "bias"], ["mb"]))
        cur = "mb"
    if spec.activation == "relu":
        nodes.append(helper.make_node("Relu", [cur], ["act"]))
        cur = "act"
    elif spec.activation in ("gelu_erf", "gelu_tanh"):
        nodes.append(helper.make_node("Gelu", [cur], ["act"],
                                      approximate="none" if spec.activation == "gelu_erf" else "tanh"))
        cur = "act"
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    g = helper.make_graph(nodes, "mm", inputs, [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])


def pool_onnx(spec: P.PoolSpec):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [spec.n, spec.c, spec.h, spec.w])
    oh, ow = P.pool_out_hw(spec)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [spec.n, spec.c, oh, ow])
    if spec.kind == "global_avg":
        node = helper.make_node("GlobalAveragePool", ["x"], ["y"])
    else:
        pt, pl, pb, pr = spec.pad
        node = helper.make_node("MaxPool" if spec.kind == "max" else "AveragePool", ["x"], ["y"],
                                kernel_shape=[spec.kh, spec.kw], strides=list(spec.stride), pads=[pt, pl, pb, pr])
    g = helper.make_graph([node], "pool", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


# ----------------------------------------------------------------------------------------------------- TVM side
def tvm_time(func, args, out_shape, target, repeat):
    lib = tvm.compile(tvm.IRModule({"main": func}), target)
    targs = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in args]
    out = tvm.runtime.empty(out_shape, "float32")
    lib["main"](*targs, out)
    ev = lib.mod.time_evaluator("main", tvm.cpu(), number=max(1, 10 // max(1, repeat // 10)), repeat=repeat,
                                min_repeat_ms=20)
    return float(np.median(ev(*targs, out).results)) * 1e3, out.numpy()


# ---------------------------------------------------------------------------------------------------------- main
ROW = "{:<36s} {:>3s} {:>9s} {:>9s} {:>9s} {:>8s} {:>8s} {:>7s} {:>8s}"


def _row(name, cnt, t_run, t_op, t_us, gflop, err):
    gf = gflop / (t_us * 1e-3) if gflop else 0.0
    print(ROW.format(name, str(cnt), f"{t_run:.3f}", f"{t_op:.3f}", f"{t_us:.3f}", f"{t_us / t_op:.2f}",
                     f"{t_us / t_run:.2f}", f"{gf:.0f}" if gflop else "-", f"{err:.1e}"), flush=True)


def _header(title):
    print(f"\n== {title}")
    print(ROW.format("shape", "cnt", "ORT run", "ORT op", "ours", "us/op", "us/run", "GF/s", "max|d|"))


def _total(label, rows):
    w_run = sum(c * r for c, r, _, _ in rows)
    w_op = sum(c * o for c, _, o, _ in rows)
    w_us = sum(c * u for c, _, _, u in rows)
    print(f"-- {label}: ORT run {w_run:.2f} ms | ORT op {w_op:.2f} ms | ours {w_us:.2f} ms | "
          f"ours/ORT op {w_us / w_op:.3f} | ours/ORT run {w_us / w_run:.3f}", flush=True)
    return w_run, w_op, w_us


def bench_convs(target, threads, repeat, quick):
    _header(f"ResNet-50 convs (bias+ReLU fused), {threads} thread(s), times in ms")
    rows = []
    shapes = RESNET50_CONVS[:4] if quick else RESNET50_CONVS
    rng = np.random.default_rng(0)
    for ci, h, co, k, s, p, cnt in shapes:
        ib, ob = C.choose_blocks(ci, co)
        spec = C.Conv2dSpec(1, ci, h, h, co, k, k, stride=(s, s), pad=(p,) * 4, in_block=ib, out_block=ob,
                            has_bias=True, activation="relu")
        x = rng.standard_normal((1, ci, h, h)).astype("float32")
        w = (rng.standard_normal((co, ci, k, k)) / np.sqrt(ci * k * k)).astype("float32")
        b = rng.standard_normal(co).astype("float32")
        t_run, t_op, ref = ort_time(conv_onnx(ci, h, co, k, s, p, w, b), {"x": x}, threads, repeat,
                                    lambda op: "Conv" in op)
        t_us, y = tvm_time(C.make_conv2d(spec), [pack_nchwc_np(x, ib), C.pack_weight(spec, w), C.pack_bias(spec, b)],
                           C.out_shape(spec), target, repeat)
        err = float(np.abs(unpack_nchwc_np(y) - ref).max())
        name = f"{k}x{k}s{s} {ci}->{co} {h}x{h}"
        _row(name, cnt, t_run, t_op, t_us, spec.flops / 1e9, err)
        rows.append((cnt, t_run, t_op, t_us))
    return _total("ResNet-50 convs weighted by occurrence", rows)


def bench_matmuls(target, threads, repeat, quick):
    _header(f"BERT-encoder matmuls, {threads} thread(s), times in ms")
    rng = np.random.default_rng(1)
    rows = []
    todo = BERT_MATMULS[:2] if quick else BERT_MATMULS
    for name, spec, cnt in todo + ([] if quick else OTHER_MATMULS):
        a = rng.standard_normal(M.a_shape(spec)).astype("float32")
        raw = (spec.n, spec.k) if spec.transpose_b else (spec.k, spec.n)
        if not spec.b_is_const:
            raw = (*spec.batch, *raw)
        braw = (rng.standard_normal(raw) / np.sqrt(spec.k)).astype("float32")
        bias = rng.standard_normal(spec.n).astype("float32")
        model = matmul_onnx(spec, braw, bias)
        feeds = {"a": a}
        if not spec.b_is_const:
            feeds["b"] = np.ascontiguousarray(np.swapaxes(braw, -1, -2)) if spec.transpose_b else braw
        t_run, t_op, ref = ort_time(model, feeds, threads, repeat, lambda op: op != "Identity")
        args = [a, M.pack_b(spec, braw) if spec.b_is_const else braw] + ([bias] if spec.has_bias else [])
        t_us, y = tvm_time(M.make_matmul(spec), args, M.out_shape(spec), target, repeat)
        err = float(np.abs(y - ref).max())
        _row(name, cnt, t_run, t_op, t_us, spec.flops / 1e9, err)
        if spec in [s for _, s, _ in BERT_MATMULS]:
            rows.append((cnt, t_run, t_op, t_us))
    return _total("BERT 6-layer encoder matmuls weighted by occurrence", rows)


def bench_pools(target, threads, repeat):
    _header(f"ResNet-50 pools, {threads} thread(s), times in ms")
    rng = np.random.default_rng(2)
    for name, spec, cnt in RESNET50_POOLS:
        x = rng.standard_normal((spec.n, spec.c, spec.h, spec.w)).astype("float32")
        t_run, t_op, ref = ort_time(pool_onnx(spec), {"x": x}, threads, repeat, lambda op: "Pool" in op)
        t_us, y = tvm_time(P.make_pool2d(spec), [pack_nchwc_np(x, spec.block)], P.pool_out_shape(spec), target, repeat)
        _row(name, cnt, t_run, t_op, t_us, 0, float(np.abs(unpack_nchwc_np(y) - ref).max()))


def main(args):
    target = host_target(args.threads)
    print(f"target: {target}  | onnxruntime {ort.__version__} | tvm {tvm.__version__}")
    print("ours = kernel only (blocked layout in/out, weights pre-packed); ratios < 1 mean ours is faster")
    if args.only in ("conv", "all"):
        bench_convs(target, args.threads, args.repeat, args.quick)
    if args.only in ("matmul", "all"):
        bench_matmuls(target, args.threads, args.repeat, args.quick)
    if args.only in ("pool", "all"):
        bench_pools(target, args.threads, args.repeat)


if __name__ == "__main__":
    main(ARGS)
