"""The convs on AMX tiles vs our VNNI kernels, per kernel: the INT8 3x3 conv (tvm_kernels/qconv2d_amx.py) on the
3x3 convs of YOLOv8n (320 x 320) and ResNet-50, with onnxruntime's QLinearConv beside it; the int16 convs
(`--keep-16bit` layers: qconv2d_amx.py's byte planes for 3x3, qconv1x1_amx.py for 1x1) on those of YOLOv8n,
MobileNetV3-Large and EfficientNet-B0, against our vpdpwssd kernel (onnxruntime has no int16 conv).

  python benchmarks/amx_conv_vs_vnni.py [--threads 1] [--repeat 30]

Our two kernels compute the same thing: uint8 activations in 16-channel blocks (NCHW16c) times a constant int8
weight, plus a bias, requantized per output channel to int8 (the epilogue the compiler fuses). Their outputs are
checked equal to the reference first. onnxruntime's QLinearConv (uint8 NCHW activations x an int8 weight
initializer, an int32 bias, requantized to uint8 through a float scale: its int8 conv kernel; ConvInteger is a
reference loop there) is the competitor, checked within 1 of the reference.
The three are timed interleaved in one run (benchmarks.common.interleaved_medians); GOP/s = 2 MACs / time.
Needs a CPU with AMX-INT8 (cpuinfo amx_int8); elsewhere it says so and exits 0.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from benchmarks.common import amx_host, interleaved_medians, kernel_bench_args  # noqa: E402

ARGS = kernel_bench_args(__doc__) if __name__ == "__main__" else None      # before tvm is imported

SHAPES = [  # (ci, h, co, stride, where)
    (32, 80, 32, 1, "YOLOv8n C2f bottleneck @80"), (32, 80, 64, 2, "YOLOv8n stage 3 down"),
    (64, 40, 64, 1, "YOLOv8n head box branch @40"), (64, 40, 80, 1, "YOLOv8n head class branch @40"),
    (80, 40, 80, 1, "YOLOv8n head class branch @40"), (128, 20, 128, 1, "YOLOv8n C2f @20"),
    (64, 56, 64, 1, "ResNet-50 stage 1"), (128, 28, 128, 1, "ResNet-50 stage 2"),
    (256, 14, 256, 1, "ResNet-50 stage 3"), (512, 7, 512, 1, "ResNet-50 stage 4"),
]
SHAPES_3X3_16 = [  # (ci, h, co, stride, where): int16 data
    (16, 160, 32, 2, "YOLOv8n stage 2 down"), (16, 80, 16, 1, "YOLOv8n C2f bottleneck @80"),
    (32, 80, 64, 2, "YOLOv8n stage 3 down"), (32, 40, 32, 1, "YOLOv8n C2f bottleneck @40"),
]
SHAPES_1X1 = [  # (ci, h, co, where): int16 data
    (64, 40, 64, "YOLOv8n C2f cv1 @40"), (128, 40, 64, "YOLOv8n C2f cv2 @40"),
    (112, 14, 672, "MobileNetV3-L / EfficientNet-B0 expand @14"), (672, 14, 112, "EfficientNet-B0 project @14"),
    (480, 14, 80, "MobileNetV3-L project @14"), (160, 7, 960, "MobileNetV3-L expand @7"),
    (960, 7, 160, "MobileNetV3-L project @7"), (320, 7, 1280, "EfficientNet-B0 head @7"),
]


def _ours(spec, x, w, b, mc, cpu: str):
    import tvm

    from compiler.backends.tvm_kernels import qconv2d as K
    lib = tvm.compile(K.make_qconv2d(spec), target=tvm.target.Target({"kind": "llvm", "mcpu": cpu,
                                                                       "num-cores": ARGS.threads}))
    args = [tvm.runtime.tensor(a) for a in (K.pack_data(spec, x), K.pack_weight(spec, w), K.pack_bias(spec, w, b),
                                            K.pack_requant(*mc, spec.co, spec.cop, form=spec.rq1.form),
                                            np.zeros(K.out_shape(spec), spec.out_dtype))]
    lib(*args)
    if not np.array_equal(K.unpack_out(spec, args[-1].numpy()), K.qconv2d_reference(spec, x, w, b, mc)):
        raise AssertionError(f"{'AMX' if spec.amx else 'VNNI'} {spec}: not the reference")
    return lambda: lib(*args)


def _ort(x, w, b, stride: int):
    """onnxruntime's QLinearConv (its int8 conv kernel, requantized to uint8 through a float scale); checked
    within 1 of the float reference (its rounding is not ours)."""
    import tempfile
    from pathlib import Path

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from benchmarks.common import ort_session
    from compiler.ops.linalg import conv_reference
    scale = 2.0 ** -14
    inits = [numpy_helper.from_array(np.array(v, dt), n) for n, v, dt in
             (("xs", 1.0, np.float32), ("xz", 0, np.uint8), ("ws", 1.0, np.float32), ("wz", 0, np.int8),
              ("ys", 1 / scale, np.float32), ("yz", 128, np.uint8))]
    graph = helper.make_graph(
        [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                          strides=[stride] * 2, pads=[1] * 4)], "qlc",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), *inits])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "conv.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
        sess = ort_session(path, ARGS.threads)
    acc = conv_reference(x.astype(np.int64), w.astype(np.int64), b.astype(np.int64), (stride,) * 2, (1,) * 4,
                         (1, 1), 1)
    want = np.clip(np.round(acc * scale) + 128, 0, 255)
    if np.abs(sess.run(None, {"x": x})[0].astype(np.int64) - want).max() > 1:
        raise AssertionError("onnxruntime QLinearConv: not the reference")
    return lambda: sess.run(None, {"x": x})


def main() -> int:
    from compiler.backends.tvm_kernels import qconv2d as K
    from compiler.backends.tvm_kernels.requant import requant_form
    cpu = amx_host()
    if cpu is None:
        return 0
    print(f"cpu {cpu}, {ARGS.threads} thread(s), median of {ARGS.repeat} interleaved rounds\n")
    print("| 3x3 conv | layer | AMX us | VNNI us | onnxruntime QLinearConv us | AMX GOP/s | AMX / VNNI | AMX / ORT |")
    print("|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for ci, h, co, s, where in SHAPES:
        x = rng.integers(0, 256, (1, ci, h, h)).astype(np.uint8)
        w = rng.integers(-127, 128, (co, ci, 3, 3)).astype(np.int8)
        b = rng.integers(-5000, 5000, co).astype(np.int32)
        mc = (np.full(co, 1 << 30, np.int64), np.full(co, 44, np.int64))
        rq = K.Requant(0, 0, -128, 127, "int8", requant_form(*mc, 0, 0, (-2**31, 2**31 - 1), (-128, 127)))
        specs = {amx: K.QConvSpec(1, ci, h, h, co, 3, 3, (s, s), (1, 1, 1, 1), x_dtype="uint8", rq1=rq, amx=amx)
                 for amx in (True, False)}
        fns = {"amx": _ours(specs[True], x, w, b, mc, cpu), "vnni": _ours(specs[False], x, w, b, mc, cpu),
               "ort": _ort(x, w, b, s)}
        us = {key: v * 1e3 for key, v in interleaved_medians(fns, warmup=5, repeat=ARGS.repeat).items()}
        print(f"| {ci}->{co} @{h} s{s} | {where} | {us['amx']:.1f} | {us['vnni']:.1f} | {us['ort']:.1f} | "
              f"{2 * specs[True].macs / us['amx'] / 1e3:.0f} | {us['amx'] / us['vnni']:.2f}x | "
              f"{us['amx'] / us['ort']:.2f}x |", flush=True)
    print("\n| int16 conv | layer | AMX us | VNNI (vpdpwssd) us | AMX GOP/s | AMX / VNNI |\n|---|---|---|---|---|---|")
    for ci, h, co, s, k, where in [(*c[:3], c[3], 3, c[4]) for c in SHAPES_3X3_16] + \
            [(*c[:3], 1, 1, c[3]) for c in SHAPES_1X1]:
        x = rng.integers(-32768, 32768, (1, ci, h, h)).astype(np.int16)
        w = rng.integers(-127, 128, (co, ci, k, k)).astype(np.int8)
        b = rng.integers(-5000, 5000, co).astype(np.int32)
        mc = (np.full(co, 1 << 30, np.int64), np.full(co, 44, np.int64))
        rq = K.Requant(0, 0, -32768, 32767, "int16", requant_form(*mc, 0, 0, (-2**31, 2**31 - 1), (-32768, 32767)))
        specs = {amx: K.QConvSpec(1, ci, h, h, co, k, k, (s, s), (k // 2,) * 4, x_dtype="int16", rq1=rq, amx=amx)
                 for amx in (True, False)}
        fns = {"amx": _ours(specs[True], x, w, b, mc, cpu), "vnni": _ours(specs[False], x, w, b, mc, cpu)}
        us = {key: v * 1e3 for key, v in interleaved_medians(fns, warmup=5, repeat=ARGS.repeat).items()}
        print(f"| {k}x{k} {ci}->{co} @{h} s{s} | {where} | {us['amx']:.1f} | {us['vnni']:.1f} | "
              f"{2 * specs[True].macs / us['amx'] / 1e3:.0f} | {us['amx'] / us['vnni']:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
