"""The INT8 matmul on AMX tiles (tvm_kernels/amx.py through qmatmul.py) vs our VNNI matmul and onnxruntime's
MatMulInteger, per kernel, on the linear-layer shapes of BERT-6L (seq 128) and ConvNeXt-T (rows = pixels).

  python benchmarks/amx_vs_vnni.py [--threads 1] [--repeat 30]

Our two kernels compute the same thing: int8 activations (shifted to uint8 inside, the shift in the bias) times
a constant int8 weight, plus a bias, requantized per column to int8 (the epilogue the compiler fuses, in the
cheapest exact form it picks: requant.py). Their
outputs are checked equal to the reference first. onnxruntime's MatMulInteger (uint8 activations x an int8
weight initializer, int32 out, no requant: its epilogue is lighter) is the competitor, checked exact too.
The three are timed interleaved in one run (benchmarks.common.interleaved_medians); GOP/s = 2 m k n / time.
Needs a CPU with AMX-INT8 (cpuinfo amx_int8); elsewhere it says so and exits 0.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from benchmarks.common import amx_host, interleaved_medians, kernel_bench_args  # noqa: E402

ARGS = kernel_bench_args(__doc__) if __name__ == "__main__" else None      # before tvm is imported

SHAPES = [  # (m, k, n, where)
    (128, 384, 384, "BERT-6L attention projections"), (128, 384, 1536, "BERT-6L FFN up"),
    (128, 1536, 384, "BERT-6L FFN down"), (3136, 96, 384, "ConvNeXt-T stage 1 up"),
    (3136, 384, 96, "ConvNeXt-T stage 1 down"), (196, 384, 1536, "ConvNeXt-T stage 3 up"),
    (196, 1536, 384, "ConvNeXt-T stage 3 down"), (49, 768, 3072, "ConvNeXt-T stage 4 up"),
]


def _ours(m, k, n, amx: bool, a, w, b, mc, cpu: str):
    import tvm

    from compiler.backends.tvm_kernels import qmatmul as QM
    from compiler.backends.tvm_kernels.qconv2d import Requant
    from compiler.backends.tvm_kernels.requant import requant_form
    rq = Requant(0, 0, -128, 127, "int8", requant_form(*mc, 0, 0, (-2**31, 2**31 - 1), (-128, 127)))
    spec = QM.QMatmulSpec(m, k, n, "int8", 0, rq, amx=amx)
    lib = tvm.compile(QM.make_qmatmul(spec), target=tvm.target.Target({"kind": "llvm", "mcpu": cpu,
                                                                       "num-cores": ARGS.threads}))
    args = [tvm.runtime.tensor(x) for x in (a, QM.pack_weight(spec, w), QM.pack_bias(spec, w, 0, b),
                                            QM.pack_requant(*mc, spec), np.zeros(QM.out_shape(spec), np.int8))]
    lib(*args)
    want = QM.qmatmul_reference(QM.QMatmulSpec(m, k, n, "int8", 0, rq), a, w, 0, b, mc)
    if not np.array_equal(args[-1].numpy()[:, :n], want):
        raise AssertionError(f"{'AMX' if amx else 'VNNI'} {m}x{k}x{n}: not the reference")
    return lambda: lib(*args)


def _ort(a, w):
    import tempfile
    from pathlib import Path

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from benchmarks.common import ort_session
    m, k = a.shape
    au = (a.astype(np.int16) + 128).astype(np.uint8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "mmi",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, w.shape[1]])], [numpy_helper.from_array(w, "w")])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "mmi.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
        sess = ort_session(path, ARGS.threads)
    if not np.array_equal(sess.run(None, {"a": au})[0], au.astype(np.int64) @ w.astype(np.int64)):
        raise AssertionError("onnxruntime MatMulInteger: not exact")
    return lambda: sess.run(None, {"a": au})


def main() -> int:
    cpu = amx_host()
    if cpu is None:
        return 0
    print(f"cpu {cpu}, {ARGS.threads} thread(s), median of {ARGS.repeat} interleaved rounds\n")
    print("| m x k x n | layer | AMX us | VNNI us | onnxruntime MatMulInteger us | AMX GOP/s | AMX / VNNI | AMX / ORT |")
    print("|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for m, k, n, where in SHAPES:
        a = rng.integers(-128, 128, (m, k)).astype(np.int8)
        w = rng.integers(-127, 128, (k, n)).astype(np.int8)
        b = rng.integers(-5000, 5000, n).astype(np.int32)
        mc = (np.full(n, 1 << 30, np.int64), np.full(n, 44, np.int64))
        fns = {"amx": _ours(m, k, n, True, a, w, b, mc, cpu), "vnni": _ours(m, k, n, False, a, w, b, mc, cpu),
               "ort": _ort(a, w)}
        ms = interleaved_medians(fns, warmup=5, repeat=ARGS.repeat)
        us = {key: v * 1e3 for key, v in ms.items()}
        print(f"| {m} x {k} x {n} | {where} | {us['amx']:.1f} | {us['vnni']:.1f} | {us['ort']:.1f} | "
              f"{2 * m * k * n / us['amx'] / 1e3:.0f} | {us['amx'] / us['vnni']:.2f}x | {us['amx'] / us['ort']:.2f}x |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
