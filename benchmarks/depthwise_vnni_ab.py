"""The integer depthwise conv's two forms side by side (compiler/backends/tvm_kernels/qdepthwise.py): the plain
one (one widen-multiply-add per tap in int32 lanes) against the VNNI one (each 32-bit lane holds one channel's 4
adjacent taps, one vpermb + one vpdpbusd per window; int16 data: 2 taps, vpermw + vpdpwssd), on every depthwise
layer of the real architectures, both checked equal on the same packed data.

    python benchmarks/depthwise_vnni_ab.py [--models mobilenetv3_large efficientnet_b0 convnext_t]
                                           [--dtypes uint8 int16] [--repeat 200]

The layers' shapes come from the exported models (onnx shape inference; Conv with group == channels). Each
kernel has a requant to uint8 in its write-back, as in the compiled models. Prints microseconds per call
(median of 5 batches of `--repeat` calls after warmup) on 1 thread, per layer and summed per model. Needs a CPU
with AVX-512 VNNI and VBMI.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import CACHE  # noqa: E402
from benchmarks.e2e_real_arch import cpu_name  # noqa: E402

MODELS = ["mobilenetv3_large", "efficientnet_b0", "convnext_t"]


def depthwise_layers(path: Path) -> list[tuple[int, int, int, int, int, int]]:
    """(channels, height, width, kernel, stride, pad) of each depthwise Conv of the ONNX model, in graph order."""
    import onnx
    m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.input)}
    out = []
    for n in m.graph.node:
        if n.op_type != "Conv":
            continue
        a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
        shp = shapes.get(n.input[0])
        if shp and a.get("group", 1) == shp[1] > 1:
            k, s, p = a["kernel_shape"][0], a.get("strides", [1])[0], a.get("pads", [0])[0]
            out.append((shp[1], shp[2], shp[3], k, s, p))
    return out


def time_us(lib, args, repeat: int) -> float:
    for _ in range(10):
        lib(*args)
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(repeat):
            lib(*args)
        runs.append((time.perf_counter() - t0) / repeat * 1e6)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--dtypes", nargs="+", default=["uint8", "int16"], choices=["uint8", "int8", "int16"])
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()

    import tvm

    from compiler.backends.tvm_kernels import qdepthwise as D
    from compiler.backends.tvm_kernels.common import host_target
    from compiler.backends.tvm_kernels.qconv2d import Requant, pack_requant
    from compiler.layouts import pack_conv_weight
    from examples.real_arch import export_onnx
    tvm.get_global_func("runtime.config_threadpool")(1, 1)      # 1 thread, as the compiled models run here
    target = host_target(1)
    rng = np.random.default_rng(0)
    built: dict = {}
    print(f"machine: {cpu_name()}, target cpu {target.attrs['mcpu']}, 1 thread\n")
    print("| model | layer (c, h x w, k, stride) | data | plain us | VNNI us | plain / VNNI |")
    print("|---|---|---|---|---|---|")
    totals = []
    for name in args.models:
        path, _ = export_onnx(name, CACHE / "real_arch" / f"{name}.onnx")
        for dt in args.dtypes:
            tot = [0.0, 0.0]
            for c, h, w, k, s, p in depthwise_layers(path):
                key = (c, h, w, k, s, p, dt)
                if key not in built:
                    info = np.iinfo(dt)
                    spec = D.QDepthwiseSpec(1, c, h, w, k, k, (s, s), (p,) * 4, (1, 1), 16 if c % 16 == 0 else 8,
                                            dt, 0 if dt != "int8" else -3, Requant(0, 0, 0, 255, "uint8"))
                    b = spec.block
                    x = rng.integers(info.min, info.max + 1, (1, c // b, h, w, b)).astype(dt)
                    wt = rng.integers(-127, 128, (c, 1, k, k)).astype(np.int8)
                    bias = rng.integers(-5000, 5000, c).astype(np.int32)
                    mult, shift = rng.integers(2**29, 2**30, c), np.full(c, 36)
                    res = []
                    for sp in (spec, dataclasses.replace(spec, vnni=True)):
                        wp, bp = D.pack_vnni(sp, wt, bias) if sp.vnni else \
                            (pack_conv_weight(wt, "depthwise", 1, b),
                             bias.reshape(c // b, b))
                        rqp = pack_requant(mult, shift, c, c, (3, c // b, b), sp.rq.form)
                        lib = tvm.compile(tvm.IRModule({"main": D.make_qdepthwise(sp)}), target=target)
                        a = [tvm.runtime.tensor(v) for v in (x, wp, bp, rqp)]
                        a.append(tvm.runtime.tensor(np.zeros(sp.out_shape(), sp.out_dtype)))
                        res.append((time_us(lib, a, args.repeat), a[-1].numpy()))
                    if not np.array_equal(res[0][1], res[1][1]):
                        raise SystemExit(f"{name} {key}: the two forms differ")
                    built[key] = (res[0][0], res[1][0])
                t0, t1 = built[key]
                tot[0] += t0
                tot[1] += t1
                print(f"| {name} | {c}, {h}x{w}, {k}x{k}, s{s} | {dt} | {t0:.1f} | {t1:.1f} | {t0 / t1:.2f}x |",
                      flush=True)
            totals.append((name, dt, *tot))
    print("\n| model | data | every depthwise layer, plain ms | VNNI ms | plain / VNNI |")
    print("|---|---|---|---|---|")
    for name, dt, t0, t1 in totals:
        print(f"| {name} | {dt} | {t0 / 1e3:.3f} | {t1 / 1e3:.3f} | {t0 / t1:.2f}x |")


if __name__ == "__main__":
    main()
