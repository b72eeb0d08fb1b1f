"""Integer-only INT8 on the real-architecture suite, side by side in one run: this compiler
(`--quantize int8 --integer-only`, TVM backend) against onnxruntime FP32 and onnxruntime's own INT8
(`quantize_static`, QDQ, per-channel weights, uint8 activations), both calibrated on the same inputs.

    python benchmarks/e2e_int8_real_arch.py [--models yolov8n convnext_t] [--repeat 30] [--threads 1]
                                            [--keep-16bit auto:cos0.99|first:11|NAMES]
                                            [--eval-crops 6] [--eval-seed 1]

With --keep-16bit, a second build of ours per model with that option (`auto[:BUDGET]`: the fewest layers on
int16 grids that meet BUDGET on the calibration crops, passes/keep_16bit_search.py) is measured in the same
interleaved runs, as its own row.

Inputs are real photographs (examples/real_arch/photos.py: crops of scikit-learn's two sample images):
8 crops calibrate, 6 other crops evaluate (`--eval-crops`, drawn with `--eval-seed`). Accuracy is the cosine of
each INT8 output with the FP32 output (the worst image); for the detector also the largest difference of the best class
score over the FP32 model's 10 highest-scoring anchors. Speed: median of `--repeat` interleaved calls
(the three runtimes alternate) after 5 warmups, 1 thread by default.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import CACHE, interleaved_ms, ort_session  # noqa: E402
from benchmarks.e2e_int8 import ort_int8  # noqa: E402
from benchmarks.e2e_real_arch import LABELS, MODELS, cpu_name  # noqa: E402


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def top_anchor_score_diff(ref: np.ndarray, got: np.ndarray, k: int = 10) -> float:
    """YOLOv8 head output (1, 4 + classes, anchors): over the k anchors whose best class score is highest
    in `ref`, the largest |best class score of got - of ref|."""
    rs, gs = ref[0, 4:].max(0), got[0, 4:].max(0)
    top = np.argsort(-rs)[:k]
    return float(np.abs(gs[top] - rs[top]).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--keep-16bit", default=None, metavar="auto[:BUDGET]|NAMES",
                    help="also build ours with this --keep-16bit and measure it as a second row")
    ap.add_argument("--eval-crops", type=int, default=6, help="photographs the accuracy is measured on")
    ap.add_argument("--eval-seed", type=int, default=1, help="seed of the evaluation crops (calibration: 0)")
    args = ap.parse_args()

    import onnxruntime as ort

    import compiler
    from examples.real_arch import MODELS as SIZES
    from examples.real_arch import export_onnx
    from examples.real_arch.photos import photo_batch
    out_dir = CACHE / "real_arch"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        path, _ = export_onnx(name, out_dir / f"{name}.onnx")
        size = SIZES[name][1]
        calib = list(photo_batch(size, 8, seed=0)[:, None])
        evals = list(photo_batch(size, args.eval_crops, seed=args.eval_seed)[:, None])
        t0 = time.perf_counter()
        cm = compiler.compile(path, target=f"llvm -num-threads={args.threads}", quantize="int8",
                              calibration=calib, integer_only=True)
        compile_s = time.perf_counter() - t0
        builds = [("", cm, compile_s)]
        if args.keep_16bit:
            t0 = time.perf_counter()
            wide = compiler.compile(path, target=f"llvm -num-threads={args.threads}", quantize="int8",
                                    calibration=calib, integer_only=True, keep_16bit=args.keep_16bit.split(","))
            builds.append((f" --keep-16bit {args.keep_16bit}", wide, time.perf_counter() - t0))
        fp32 = ort_session(path, args.threads)
        path.with_name(f"{path.stem}_ort_qdq.onnx").unlink(missing_ok=True)    # quantize the model just exported
        qdq = ort_session(ort_int8(path, calib, "qdq"), args.threads)
        feed = fp32.get_inputs()[0].name
        ref = [fp32.run(None, {feed: x})[0] for x in evals]
        theirs = [qdq.run(None, {feed: x})[0] for x in evals]
        x0 = evals[0]
        times = interleaved_ms([*(lambda b=b: b.run(x0) for _, b, _ in builds), lambda: fp32.run(None, {feed: x0}),
                                lambda: qdq.run(None, {feed: x0})], args.warmup, args.repeat)
        t_fp32, t_qdq = (statistics.median(t) for t in times[-2:])
        for (label, build, cs), t_ours in zip(builds, times):
            ours = [build.run(x)[0] for x in evals]
            acc = {k: min(cosine(r, o) for r, o in zip(ref, outs)) for k, outs in (("ours", ours), ("ort", theirs))}
            anchors = {k: max(top_anchor_score_diff(r, o) for r, o in zip(ref, outs))
                       for k, outs in (("ours", ours), ("ort", theirs))} if name.startswith("yolo") else None
            m = {"ours": statistics.median(t_ours), "fp32": t_fp32, "qdq": t_qdq}
            rows.append((name, label, m, acc, anchors, cs))
            print(f"{name}{label}: ours {m['ours']:.2f} ms, ORT FP32 {m['fp32']:.2f}, ORT INT8 QDQ {m['qdq']:.2f}; "
                  f"cosine ours {acc['ours']:.4f}, ORT INT8 {acc['ort']:.4f}", file=sys.stderr, flush=True)

    print(f"\nmachine: {cpu_name()}, {len(os.sched_getaffinity(0))} cores, target cpu "
          f"{compiler.Target.parse('llvm').cpu}, onnxruntime {ort.__version__}; {args.threads} thread(s), "
          f"median of {args.repeat} interleaved calls after {args.warmup} warmups\n")
    print("| model | ours INT8 ms | ORT FP32 ms | ORT INT8 QDQ ms | ours / ORT FP32 | ours / ORT INT8 | "
          "cosine ours | cosine ORT INT8 | top-10 anchor score diff ours / ORT | compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, label, m, acc, anchors, cs in rows:
        anc = f"{anchors['ours']:.3f} / {anchors['ort']:.3f}" if anchors else ""
        print(f"| {LABELS[name]}{label} | {m['ours']:.2f} | {m['fp32']:.2f} | {m['qdq']:.2f} | "
              f"{m['ours'] / m['fp32']:.2f}x | {m['ours'] / m['qdq']:.2f}x | {acc['ours']:.4f} | "
              f"{acc['ort']:.4f} | {anc} | {cs:.1f} |")


if __name__ == "__main__":
    main()
