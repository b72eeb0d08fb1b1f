"""FP32 side by side in one run: the same optimized graph through our TVM backend and our MLIR
(IREE) backend, plus onnxruntime FP32 on the same ONNX file. One thread by default.

    python benchmarks/tvm_vs_mlir.py [--models bert resnet50] [--threads 1] [--repeat 20]

Models (random weights): zoo.resnet50 at 224x224 and zoo.BertEncoder at seq 128, exported with
examples.zoo.export_onnx (cached in out/bench/), imported with compiler.import_model and optimized
with compiler.optimize once; both backends build that one graph. Prints a markdown table: median
latency (ms), ratio to onnxruntime, max |diff| vs onnxruntime, build seconds. ResNet-50 takes
minutes to build with IREE on a 2-core machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import export_model as export, ort_session, time_ms  # noqa: E402








def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["bert", "resnet50"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backends", nargs="+", default=["tvm", "mlir"])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()

    import compiler
    from compiler.backends.mlir import BACKEND as MLIR
    from compiler.target import Target
    target = Target("llvm", num_threads=args.threads)
    rows = []
    for name in args.models:
        path, x = export(name)
        g = compiler.optimize(compiler.import_model(str(path)), target)
        sess = ort_session(path, args.threads)
        feed = {sess.get_inputs()[0].name: x}
        ref = sess.run(None, feed)[0]
        ort_ms = time_ms(lambda s=sess, f=feed: s.run(None, f), args.warmup, args.repeat)
        rows.append((name, "onnxruntime", ort_ms, 1.0, 0.0, 0.0))
        print(f"{name}: onnxruntime {ort_ms:.2f} ms", file=sys.stderr, flush=True)
        for be_name in args.backends:
            if be_name == "mlir":
                be = MLIR
            else:
                from compiler.backends.tvm import BACKEND as be
            t0 = time.perf_counter()
            exe = be.build(g, target)
            build_s = time.perf_counter() - t0
            diff = float(np.max(np.abs(exe.run([x])[0] - ref)))
            ms = time_ms(lambda e=exe, a=x: e.run([a]), args.warmup, args.repeat)
            rows.append((name, be_name, ms, ms / ort_ms, diff, build_s))
            print(f"{name}: {be_name} {ms:.2f} ms ({ms / ort_ms:.2f}x ORT), max|diff| {diff:.1e}, "
                  f"build {build_s:.1f}s", file=sys.stderr, flush=True)
    print(f"\nmachine: {os.uname().machine}, {os.cpu_count()} cores, threads {args.threads}")
    print("| model | engine | median ms | vs onnxruntime | max abs diff vs ORT | build s |")
    print("|---|---|---|---|---|---|")
    for name, eng, ms, r, d, b in rows:
        print(f"| {name} | {eng} | {ms:.2f} | {r:.2f}x | {d:.1e} | {b:.1f} |")


if __name__ == "__main__":
    main()
