"""The integer-only INT8 acceptance table: every model, its accuracy and speed measured side by side with
onnxruntime in one run (1 thread by default), and its bars; one markdown table at the end.

    PYTHONPATH=. python benchmarks/e2e_int8_table.py [--models yolov8n digits_cnn bert_sdpa] [--repeat 30]
        [--threads 1] [--keep-16bit yolov8n=first:11 mobilenetv3_large=auto:cos0.99 convnext_t=none]
        [--eval-crops 30] [--eval-seed 7]

Ours is compiler.compile(..., quantize="int8", integer_only=True, keep_16bit=BUILDS[model]) on the TVM
backend; --keep-16bit NAME=OPT replaces a model's option (none: all 8-bit). The rows and their bars:

- yolov8n (320x320): the head output's cosine with FP32 >= 0.99 and the best class score of the FP32 model's
  top-10 anchors within 0.05; ours <= 0.45x onnxruntime FP32's latency and <= 0.9x onnxruntime INT8's
  (`quantize_static`, QDQ). mobilenetv3_large, efficientnet_b0, convnext_t (224x224): cosine >= 0.99; ours
  <= 0.9x onnxruntime INT8 (QDQ). Measured by benchmarks/e2e_int8_real_arch.py (real photographs: 8 crops
  calibrate, `--eval-crops` others (30) drawn with `--eval-seed` (7) evaluate; the worst image counts).
- digits_cnn, digits_resnet, digits_mobile (examples/digits_models.py, trained on sklearn's digits): top-1
  accuracy on the whole test set (one batch of 360) at most 0.5 points below FP32's (onnxruntime on the same
  ONNX export); no speed bar (onnxruntime FP32 shown). Calibration: the training digits.
- bert_sdpa, bert_eager (transformers' BertModel, 6 layers, hidden 384, seq 128): the sentence embedding's
  cosine with FP32 >= 0.99 (the worst of 8 sequences); ours <= 0.7x onnxruntime `quantize_dynamic` INT8.
  Measured by benchmarks/e2e_int8_transformer.py.

Speed: median of `--repeat` interleaved calls after `--warmup` warmups, onnxruntime in the same runs.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import e2e_int8_real_arch as real_arch  # noqa: E402
from benchmarks import e2e_int8_transformer as transformer  # noqa: E402
from benchmarks.common import CACHE, interleaved_medians, ort_session  # noqa: E402
from benchmarks.e2e_real_arch import LABELS  # noqa: E402

# our build per model: its --keep-16bit option (None: all 8-bit); the table's rows, in order. On 30 photographs:
# MobileNetV3-Large auto:cos0.99 measures 0.9861, auto:cos0.993 0.9896, auto:cos0.995 0.9910; EfficientNet-B0's
# searched layers reach 0.92-0.93 (one photograph far from the calibration crops), every layer kept 0.9950.
BUILDS: dict[str, str | None] = {
    "yolov8n": "first:11", "mobilenetv3_large": "auto:cos0.995", "efficientnet_b0": "all",
    "convnext_t": None, "digits_cnn": None, "digits_resnet": None, "digits_mobile": None,
    "bert_sdpa": None, "bert_eager": None,
}
COSINE_BAR, ANCHOR_BAR, POINTS_BAR = 0.99, 0.05, 0.5
# ours / baseline latency at most, per model and baseline; a model not here has no speed bar
SPEED_BARS = {
    "yolov8n": {"ORT FP32": 0.45, "ORT INT8 QDQ": 0.9}, "mobilenetv3_large": {"ORT INT8 QDQ": 0.9},
    "efficientnet_b0": {"ORT INT8 QDQ": 0.9}, "convnext_t": {"ORT INT8 QDQ": 0.9},
    "bert_sdpa": {"ORT INT8 dynamic": 0.7}, "bert_eager": {"ORT INT8 dynamic": 0.7},
}
BERT_LABEL = "transformers BertModel, {} (6 layers, hidden 384, seq 128)"


@dataclass
class Row:
    """One model's line: its accuracy (what, value), the bar and whether it is met, our latency, the
    baselines' latencies and the speed bars (baseline: ours / baseline at most)."""
    model: str
    keep_16bit: str | None
    accuracy: str
    accuracy_bar: str
    accuracy_met: bool
    ours_ms: float
    baselines: dict[str, float]
    speed_bars: dict[str, float]

    def speed_met(self) -> bool | None:
        if not self.speed_bars:
            return None
        return all(self.ours_ms / self.baselines[k] <= bar for k, bar in self.speed_bars.items())

    def cells(self) -> list[str]:
        def yes(met: bool | None) -> str:
            return "" if met is None else "yes" if met else "no"
        return [self.model, f"keep-16bit {self.keep_16bit}" if self.keep_16bit else "all 8-bit",
                self.accuracy, self.accuracy_bar, f"{self.ours_ms:.2f}",
                "; ".join(f"{k} {ms:.2f}" for k, ms in self.baselines.items()),
                "; ".join(f"{self.ours_ms / ms:.2f}x" for ms in self.baselines.values()),
                "; ".join(f"<= {bar}x {k}" for k, bar in self.speed_bars.items()),
                yes(self.accuracy_met), yes(self.speed_met())]


def real_arch_row(name: str, keep_16bit: str | None, args: argparse.Namespace) -> Row:
    m = real_arch.measure_model(name, [keep_16bit], args.threads, args.repeat, args.warmup,
                                args.eval_crops, args.eval_seed)
    b = m.builds[0]
    accuracy, bar, met = (f"cosine {b.cosine:.4f} (ORT INT8 {m.qdq_cosine:.4f})", f"cosine >= {COSINE_BAR}",
                          b.cosine >= COSINE_BAR)
    if b.anchor_diff is not None:
        accuracy += f"; top-10 anchor score diff {b.anchor_diff:.3f} (ORT INT8 {m.qdq_anchor_diff:.3f})"
        bar += f"; diff <= {ANCHOR_BAR}"
        met = met and b.anchor_diff <= ANCHOR_BAR
    baselines = {"ORT FP32": m.fp32_ms, "ORT INT8 QDQ": m.qdq_ms}
    return Row(LABELS[name], keep_16bit, accuracy, bar, met, b.ms,
               {k: baselines[k] for k in SPEED_BARS[name]}, SPEED_BARS[name])


def bert_row(name: str, keep_16bit: str | None, args: argparse.Namespace) -> Row:
    attn = name.removeprefix("bert_")
    m = transformer.measure_model(f"hf-{attn}", threads=args.threads, repeat=args.repeat, warmup=args.warmup,
                                  keep_16bit=keep_16bit.split(",") if keep_16bit else ())
    cos = m.cosine[transformer.OURS]
    return Row(BERT_LABEL.format(attn), keep_16bit,
               f"sentence-embedding cosine {cos:.4f} (ORT INT8 {m.cosine[transformer.ORT_INT8]:.4f})",
               f"cosine >= {COSINE_BAR}", cos >= COSINE_BAR, m.ms[transformer.OURS],
               {"ORT INT8 dynamic": m.ms[transformer.ORT_INT8]}, SPEED_BARS[name])


def digits_row(name: str, keep_16bit: str | None, args: argparse.Namespace) -> Row:
    """Train the digits model, export it to ONNX at batch = the test set, and compile that file."""
    import torch

    import compiler
    from examples.digits import load_digits_split
    from examples.digits_models import trained_model
    from examples.zoo import export_onnx

    x_tr, y_tr, x_te, y_te = load_digits_split()
    model = trained_model(name.removeprefix("digits_"), x_tr, y_tr)
    CACHE.mkdir(parents=True, exist_ok=True)
    path = export_onnx(model, torch.tensor(x_te), CACHE / f"{name}.onnx")
    n = len(x_te)
    calib = [x_tr[i:i + n] for i in range(0, len(x_tr) - n + 1, n)]     # whole batches of the training digits
    cm = compiler.compile(path, target=f"llvm -num-threads={args.threads}", quantize="int8", calibration=calib,
                          integer_only=True, keep_16bit=keep_16bit.split(",") if keep_16bit else ())
    fp32 = ort_session(path, args.threads)
    feed = {fp32.get_inputs()[0].name: x_te}
    ms = interleaved_medians({"ours": lambda: cm.run(x_te), "ORT FP32": lambda: fp32.run(None, feed)},
                             args.warmup, args.repeat)
    acc_fp32, acc = ((out.argmax(1) == y_te).mean() * 100 for out in (fp32.run(None, feed)[0], cm.run(x_te)[0]))
    return Row(f"digits {name.removeprefix('digits_')}", keep_16bit,
               f"top-1 {acc:.2f}% (FP32 {acc_fp32:.2f}%)", f"at most {POINTS_BAR} point below FP32",
               acc_fp32 - acc <= POINTS_BAR, ms["ours"], {"ORT FP32": ms["ORT FP32"]}, {})


def parse_builds(overrides: list[str]) -> dict[str, str | None]:
    builds = dict(BUILDS)
    for item in overrides:
        name, sep, opt = item.partition("=")
        if not sep or name not in BUILDS:
            raise SystemExit(f"--keep-16bit {item}: expected NAME=OPT with NAME one of {', '.join(BUILDS)}")
        builds[name] = None if opt in ("", "none") else opt
    return builds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(BUILDS), choices=list(BUILDS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--keep-16bit", nargs="+", default=[], metavar="NAME=OPT",
                    help="our build's --keep-16bit per model (auto[:BUDGET], first:N, layer names, none)")
    ap.add_argument("--eval-crops", type=int, default=30, help="photographs the CNNs' accuracy is measured on")
    ap.add_argument("--eval-seed", type=int, default=7, help="seed of the evaluation crops (calibration: 0)")
    args = ap.parse_args()
    builds = parse_builds(args.keep_16bit)

    rows = []
    for name in args.models:
        measure = digits_row if name.startswith("digits") else bert_row if name.startswith("bert") else real_arch_row
        row = measure(name, builds[name], args)
        rows.append(row)
        print(f"{name}: {row.accuracy}; ours {row.ours_ms:.2f} ms, "
              + ", ".join(f"{k} {ms:.2f}" for k, ms in row.baselines.items()), file=sys.stderr, flush=True)

    print(f"\n{real_arch.machine_line(args.threads, args.repeat, args.warmup)}\n")
    print("| model | build | accuracy | accuracy bar | ours ms | baseline ms | ours / baseline | speed bar | "
          "accuracy met | speed met |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")


if __name__ == "__main__":
    main()
