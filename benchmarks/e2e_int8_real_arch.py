"""Integer-only INT8 on the real-architecture suite, side by side in one run: this compiler
(`--quantize int8 --integer-only`, TVM backend) against onnxruntime FP32 and onnxruntime's own INT8
(`quantize_static`, QDQ, per-channel weights, uint8 activations), both calibrated on the same inputs.

    python benchmarks/e2e_int8_real_arch.py [--models yolov8n convnext_t] [--repeat 30] [--threads 1]
                                            [--keep-16bit auto:cos0.99|auto:metric0.05|first:11|NAMES]
                                            [--eval-crops 6] [--eval-seed 1]

With --keep-16bit, a second build of ours per model with that option (`auto[:BUDGET]`: the fewest layers on
int16 grids that meet BUDGET on the calibration crops, passes/keep_16bit_search.py) is measured in the same
interleaved runs, as its own row.

Inputs are real photographs (examples/real_arch/photos.py: crops of scikit-learn's two sample images):
8 crops calibrate, 6 other crops evaluate (`--eval-crops`, drawn with `--eval-seed`). Accuracy is the cosine of
each INT8 output with the FP32 output (the worst image); for the detector also the largest difference of the best class
score over the FP32 model's 10 highest-scoring anchors (examples/real_arch/detector_metric.py, also the metric of
`--keep-16bit auto:metricM` for the detector). Speed: median of `--repeat` interleaved calls (the three runtimes
alternate) after 5 warmups, 1 thread by default.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass
class Build:
    """One build of ours: its --keep-16bit option (None: all 8-bit), median ms, worst cosine with FP32, the
    detector's top-10 anchor score diff (None for the classifiers), compile seconds."""
    keep_16bit: str | None
    ms: float
    cosine: float
    anchor_diff: float | None
    compile_s: float

    @property
    def label(self) -> str:
        return f" --keep-16bit {self.keep_16bit}" if self.keep_16bit else ""


@dataclass
class Measured:
    """One model measured: onnxruntime FP32 and INT8 QDQ (ms, and the INT8 accuracy) and each build of ours."""
    name: str
    fp32_ms: float
    qdq_ms: float
    qdq_cosine: float
    qdq_anchor_diff: float | None
    builds: list[Build]


def measure_model(name: str, keep_16bit: Sequence[str | None] = (None,), threads: int = 1, repeat: int = 30,
                  warmup: int = 5, eval_crops: int = 6, eval_seed: int = 1) -> Measured:
    """Export `name`, build ours once per `keep_16bit` option (None: all 8-bit; "a,b": the layers a and b),
    quantize it with onnxruntime, and time all of them interleaved on the first evaluation crop."""
    import compiler
    from examples.real_arch import MODELS as SIZES
    from examples.real_arch import export_onnx
    from examples.real_arch.detector_metric import class_score_error, top_anchor_score_diff
    from examples.real_arch.photos import photo_batch
    out_dir = CACHE / "real_arch"
    out_dir.mkdir(parents=True, exist_ok=True)
    path, _ = export_onnx(name, out_dir / f"{name}.onnx")
    size = SIZES[name][1]
    calib = list(photo_batch(size, 8, seed=0)[:, None])
    evals = list(photo_batch(size, eval_crops, seed=eval_seed)[:, None])
    ours, compile_s = [], []
    is_detector = name.startswith("yolo")
    for opt in keep_16bit:
        t0 = time.perf_counter()
        ours.append(compiler.compile(path, target=f"llvm -num-threads={threads}", quantize="int8",
                                     calibration=calib, integer_only=True,
                                     keep_16bit=opt.split(",") if opt else (),
                                     accuracy_metric=class_score_error if is_detector else None))
        compile_s.append(time.perf_counter() - t0)
    fp32 = ort_session(path, threads)
    path.with_name(f"{path.stem}_ort_qdq.onnx").unlink(missing_ok=True)    # quantize the model just exported
    qdq = ort_session(ort_int8(path, calib, "qdq"), threads)
    feed = fp32.get_inputs()[0].name
    ref = [fp32.run(None, {feed: x})[0] for x in evals]
    x0 = evals[0]
    times = interleaved_ms([*(lambda b=b: b.run(x0) for b in ours), lambda: fp32.run(None, {feed: x0}),
                            lambda: qdq.run(None, {feed: x0})], warmup, repeat)

    def accuracy(outs: list[np.ndarray]) -> tuple[float, float | None]:
        cos = min(cosine(r, o) for r, o in zip(ref, outs))
        return cos, max(top_anchor_score_diff(r, o) for r, o in zip(ref, outs)) if is_detector else None

    builds = [Build(opt, statistics.median(t), *accuracy([b.run(x)[0] for x in evals]), cs)
              for opt, b, t, cs in zip(keep_16bit, ours, times, compile_s)]
    qdq_cos, qdq_anchor = accuracy([qdq.run(None, {feed: x})[0] for x in evals])
    return Measured(name, statistics.median(times[-2]), statistics.median(times[-1]), qdq_cos, qdq_anchor, builds)


def machine_line(threads: int, repeat: int, warmup: int) -> str:
    import onnxruntime as ort

    import compiler
    return (f"machine: {cpu_name()}, {len(os.sched_getaffinity(0))} cores, target cpu "
            f"{compiler.Target.parse('llvm').cpu}, onnxruntime {ort.__version__}; {threads} thread(s), "
            f"median of {repeat} interleaved calls after {warmup} warmups")


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

    results = []
    for name in args.models:
        m = measure_model(name, [None, args.keep_16bit] if args.keep_16bit else [None], args.threads,
                          args.repeat, args.warmup, args.eval_crops, args.eval_seed)
        results.append(m)
        for b in m.builds:
            print(f"{name}{b.label}: ours {b.ms:.2f} ms, ORT FP32 {m.fp32_ms:.2f}, ORT INT8 QDQ {m.qdq_ms:.2f}; "
                  f"cosine ours {b.cosine:.4f}, ORT INT8 {m.qdq_cosine:.4f}", file=sys.stderr, flush=True)

    print(f"\n{machine_line(args.threads, args.repeat, args.warmup)}\n")
    print("| model | ours INT8 ms | ORT FP32 ms | ORT INT8 QDQ ms | ours / ORT FP32 | ours / ORT INT8 | "
          "cosine ours | cosine ORT INT8 | top-10 anchor score diff ours / ORT | compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m in results:
        for b in m.builds:
            anc = f"{b.anchor_diff:.3f} / {m.qdq_anchor_diff:.3f}" if b.anchor_diff is not None else ""
            print(f"| {LABELS[m.name]}{b.label} | {b.ms:.2f} | {m.fp32_ms:.2f} | {m.qdq_ms:.2f} | "
                  f"{b.ms / m.fp32_ms:.2f}x | {b.ms / m.qdq_ms:.2f}x | {b.cosine:.4f} | "
                  f"{m.qdq_cosine:.4f} | {anc} | {b.compile_s:.1f} |")


if __name__ == "__main__":
    main()
