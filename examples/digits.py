"""sklearn's bundled 8x8 digits, split reproducibly, as float32 NCHW batches."""
from __future__ import annotations

import numpy as np


def load_digits_split(seed: int = 0):
    """(x_train, y_train, x_test, y_test); x in [0, 1], shape (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    idx = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.8 * len(x))
    return x[idx[:cut]], y[idx[:cut]], x[idx[cut:]], y[idx[cut:]]
