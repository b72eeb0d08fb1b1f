"""The integer activations' table lookups as AVX-512 VBMI permutes (256-entry tables) and vpgatherdd (65536-entry
ones, int16 activations) (compiler/backends/tvm_byte_lookup.py) against TVM's lane-by-lane loads, side by side
with onnxruntime's INT8 in one run: each model compiled integer-only twice (the second time with TVM's default TIR
pipeline), both checked equal, then the three timed interleaved.

    python benchmarks/table_lookup_ab.py [--models efficientnet_b0 mobilenetv3_large yolov8n] [--repeats 3]
                                         [--keep-16bit auto:cos0.99|NAMES]

With --keep-16bit, both builds keep those layers at 16 bits (`auto[:BUDGET]` is searched once, by the first
build, and its layers reused by the second), so their activations' 65536-entry tables are measured too.

Calibration and input: photographs (examples/real_arch/photos.py), as benchmarks/e2e_int8_real_arch.py.
Prints, per repeat, the median ms of 40 interleaved rounds after 5 warmups, 1 thread, and the ratios to
onnxruntime's INT8 (`quantize_static`, QDQ, per-channel). Needs a CPU with AVX-512 VBMI.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import CACHE, interleaved_ms, ort_session  # noqa: E402
from benchmarks.e2e_int8 import ort_int8  # noqa: E402
from benchmarks.e2e_real_arch import cpu_name  # noqa: E402

TABLE_MODELS = ["efficientnet_b0", "mobilenetv3_large", "yolov8n"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=TABLE_MODELS, choices=TABLE_MODELS + ["convnext_t"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep-16bit", default=None, metavar="auto[:BUDGET]|NAMES",
                    help="compile both builds with these layers at 16 bits")
    args = ap.parse_args()

    import compiler
    import compiler.backends.tvm as tvm_backend
    from compiler.backends.tvm_byte_lookup import PIPELINE
    from examples.real_arch import MODELS as SIZES
    from examples.real_arch import export_onnx
    from examples.real_arch.photos import photo_batch
    from compiler.target import Target
    if tvm_backend.pipeline_for(Target("llvm").cpu) != PIPELINE:
        raise SystemExit("this CPU has no AVX-512 VBMI: both builds would be the same")
    out_dir = CACHE / "real_arch"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"{cpu_name()}, 1 thread; median ms of 40 interleaved calls; VBMI permutes and vpgatherdd vs lane-by-lane "
          f"loads vs onnxruntime INT8" + (f"; --keep-16bit {args.keep_16bit}" if args.keep_16bit else ""))
    for name in args.models:
        path, _ = export_onnx(name, out_dir / f"{name}.onnx")
        size = SIZES[name][1]
        calib = list(photo_batch(size, 8, seed=0)[:, None])
        x = photo_batch(size, 1, seed=1)
        builds = {}
        chosen = tvm_backend.pipeline_for
        keep = args.keep_16bit
        for label, pick in (("permutes", chosen), ("gathers", lambda cpu: "default")):
            tvm_backend.pipeline_for = pick
            try:
                builds[label] = compiler.compile(str(path), target="llvm -num-threads=1", quantize="int8",
                                                 calibration=calib, integer_only=True,
                                                 **({"keep_16bit": keep} if keep else {}))
            finally:
                tvm_backend.pipeline_for = chosen
            search = builds[label].report.keep_16bit
            if search is not None:          # searched once: the second build keeps the same layers
                keep = ",".join(search.layers)
                print(f"{name}: {search}")
        same = np.array_equal(builds["permutes"].run(x)[0], builds["gathers"].run(x)[0])
        path.with_name(f"{path.stem}_ort_qdq.onnx").unlink(missing_ok=True)
        qdq = ort_session(ort_int8(path, calib, "qdq"), 1)
        feed = {qdq.get_inputs()[0].name: x}
        fns = [lambda: builds["permutes"].run(x), lambda: builds["gathers"].run(x), lambda: qdq.run(None, feed)]
        print(f"{name}: outputs identical: {same}")
        for _ in range(args.repeats):
            ours, theirs, ort = (statistics.median(t) for t in interleaved_ms(fns, 5, 40))
            print(f"  ours {ours:6.2f} ms ({ours / ort:.2f}x)   lane by lane {theirs:6.2f} ms ({theirs / ort:.2f}x)   "
                  f"onnxruntime INT8 {ort:6.2f} ms", flush=True)


if __name__ == "__main__":
    main()
