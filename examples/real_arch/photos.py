"""Real photographs as model inputs: scikit-learn's two bundled sample images (china.jpg, flower.jpg,
427x640), cut into seeded square crops, resized by nearest neighbour, some flipped, normalized with the
ImageNet mean and std. Calibration and evaluation use different seeds, so different crops.

    from examples.real_arch.photos import photo_batch
    calib = photo_batch(224, n=8, seed=0)       # float32 (8, 3, 224, 224)
"""
from __future__ import annotations

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def photo_batch(size: int, n: int = 8, seed: int = 0) -> np.ndarray:
    """n crops of size x size (NCHW float32): crop side uniform in [size, 427), position uniform,
    every third one flipped left-right."""
    from sklearn.datasets import load_sample_images
    images = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        im = images[i % len(images)].astype(np.float32) / 255.0
        h, w, _ = im.shape
        side = int(rng.integers(min(size, min(h, w) - 1), min(h, w)))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        idx = (np.arange(size) * side / size).astype(np.int64)
        crop = im[y:y + side, x:x + side][idx][:, idx]
        if i % 3 == 1:
            crop = crop[:, ::-1]
        out.append(((crop - MEAN) / STD).transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out).astype(np.float32))
