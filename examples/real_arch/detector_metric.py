"""The detector's accuracy metric: how far the quantized model moves the class scores of the anchors that
matter. A cosine over the whole head output (1, 4 + classes, anchors) is dominated by the box coordinates (in
pixels) and hardly sees the scores; this is the loss an accuracy budget can bound instead:

    compile yolov8n.onnx --quantize int8 --integer-only --calibration calib.npz \\
        --keep-16bit auto:metric0.05 --accuracy-metric examples/real_arch/detector_metric.py:class_score_error
"""
from __future__ import annotations

import numpy as np


def top_anchor_score_diff(ref: np.ndarray, got: np.ndarray, k: int = 10) -> float:
    """YOLOv8 head output (batch, 4 + classes, anchors): over the k anchors of each image whose best class
    score is highest in `ref`, the largest |best class score of got - of ref|."""
    worst = 0.0
    for r, g in zip(np.asarray(ref), np.asarray(got)):
        rs, gs = r[4:].max(0), g[4:].max(0)
        top = np.argsort(-rs)[:k]
        worst = max(worst, float(np.abs(gs[top] - rs[top]).max()))
    return worst


def class_score_error(fp32_outputs: list[np.ndarray], quantized_outputs: list[np.ndarray]) -> float:
    """--accuracy-metric's form: the model's outputs on one calibration batch; the head is the first."""
    return top_anchor_score_diff(fp32_outputs[0], quantized_outputs[0])
