"""Integer-only INT8 end to end, side by side in one run: this compiler vs onnxruntime's own
static INT8 (quantize_static, QOperator and QDQ formats) and onnxruntime FP32.

    python benchmarks/e2e_int8.py --threads 1 2 [--models resnet50 digits] [--repeat 30]

resnet50: zoo.resnet50 with random weights at 224x224 (speed only), calibrated on 8 random
batches; digits: a CNN trained here on sklearn's digits (accuracy is reported too), calibrated
on 64 training images. Both runtimes get the same calibration inputs. Prints a markdown table:
median latency, ratio to onnxruntime INT8 QOperator, agreement with the FP32 model.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import CACHE, interleaved_medians, ort_session  # noqa: E402




def build(name: str):
    """(onnx path, calibration batches, eval inputs, labels or None)."""
    import torch

    from examples import zoo
    from examples.digits import load_digits_split
    torch.manual_seed(0)
    CACHE.mkdir(parents=True, exist_ok=True)
    if name == "resnet50":
        path = CACHE / "resnet50.onnx"
        if not path.exists():
            zoo.export_onnx(zoo.randomize_batch_norm(zoo.resnet50()), torch.randn(1, 3, 224, 224), path)
        rng = np.random.default_rng(0)
        calib = [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(8)]
        return path, calib, calib[:4], None
    if name == "digits":
        from examples.make_demo_model import train
        xtr, _, xte, yte = load_digits_split()
        path = CACHE / "digits_logits.onnx"
        if not path.exists():
            model, _ = train(logits=True)
            zoo.export_onnx(model, torch.zeros(1, 1, 8, 8), path)
        return path, [xtr[i:i + 1] for i in range(64)], [xte[i:i + 1] for i in range(len(xte))], yte
    raise SystemExit(f"unknown model {name}")




def ort_int8(path: Path, calib: list[np.ndarray], fmt: str) -> Path:
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            import onnx
            self.name = onnx.load(str(path), load_external_data=False).graph.input[0].name
            self.it = iter(calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {self.name: x}

    out = path.with_name(f"{path.stem}_ort_{fmt}.onnx")
    if not out.exists():
        with tempfile.TemporaryDirectory() as d:
            pre = Path(d) / "pre.onnx"
            quant_pre_process(str(path), str(pre))
            quantize_static(str(pre), str(out), Reader(),
                            quant_format=QuantFormat.QOperator if fmt == "qop" else QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            per_channel=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet50", "digits"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()

    import compiler
    rows = []
    for name in args.models:
        path, calib, evals, labels = build(name)
        variants = {"ORT FP32": path, "ORT INT8 QOperator": ort_int8(path, calib, "qop"),
                    "ORT INT8 QDQ": ort_int8(path, calib, "qdq")}
        for t in args.threads:
            t0 = time.perf_counter()
            cm = compiler.compile(path, target=f"llvm -num-threads={t}", quantize="int8",
                                  calibration=calib, integer_only=True)
            compile_s = time.perf_counter() - t0
            sessions = {k: ort_session(p, t) for k, p in variants.items()}
            feed_name = sessions["ORT FP32"].get_inputs()[0].name
            outs = {k: np.concatenate([s.run(None, {feed_name: x})[0] for x in evals])
                    for k, s in sessions.items()}
            outs["ours INT8 integer-only"] = np.concatenate([cm.run(x)[0] for x in evals])
            ref = outs["ORT FP32"]
            x0 = evals[0]
            fns = {k: (lambda s=s: s.run(None, {feed_name: x0})) for k, s in sessions.items()}
            fns["ours INT8 integer-only"] = lambda: cm.run(x0)
            lat = interleaved_medians(fns, args.warmup, args.repeat)
            base = lat["ORT INT8 QOperator"]
            for k in lat:
                agree = float(np.mean(outs[k].argmax(1) == ref.argmax(1)))
                acc = float(np.mean(outs[k].argmax(1) == labels)) if labels is not None else None
                err = float(np.max(np.abs(outs[k] - ref)))
                rows.append((name, t, k, lat[k], lat[k] / base, agree, acc, err,
                             compile_s if k.startswith("ours") else None))
                print(f"{name} t={t} {k}: {lat[k]:.2f} ms ({lat[k] / base:.2f}x QOperator), "
                      f"top-1 agreement with FP32 {agree:.3f}", file=sys.stderr, flush=True)
    print(f"\nmachine: {os.uname().machine}, {os.cpu_count()} cores, cpu {compiler.Target.parse('llvm').cpu}")
    print("| model | threads | runtime | median ms | vs ORT INT8 QOperator | top-1 = FP32 | accuracy | "
          "max abs diff vs FP32 | compile s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, t, k, ms, r, agree, acc, err, cs in rows:
        print(f"| {name} | {t} | {k} | {ms:.3f} | {r:.2f}x | {agree:.3f} | "
              f"{'' if acc is None else f'{acc:.4f}'} | {err:.2e} | {'' if cs is None else f'{cs:.1f}'} |")


if __name__ == "__main__":
    main()
