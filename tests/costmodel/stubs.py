"""Stand-in cost models for the policy tests (anything with ``feature_names`` and ``predict`` is a model)."""
from __future__ import annotations

import numpy as np


class WantTile:
    """Scores = distance of (tile_a, tile_b) to a wanted pair (lower = better): the policy must pick exactly it.
    ``identity`` keys the disk decision cache (None: in-process only); ``calls`` counts predict() calls."""

    def __init__(self, want, identity=None):
        from costmodel import features as F
        self.feature_names = F.FEATURE_NAMES
        self.want = want
        self.identity = identity
        self.calls = 0

    def predict(self, X):
        from costmodel import features as F
        self.calls += 1
        ia, ib = F.FEATURE_NAMES.index("tile_a"), F.FEATURE_NAMES.index("tile_b")
        return np.abs(X[:, ia] - self.want[0]) + np.abs(X[:, ib] - self.want[1])


class EveryKernel1ms:
    """A stand-in learned model: every int8 kernel (VNNI conv / matmul) takes 1 ms."""
    objective = "reg"

    def __init__(self):
        from costmodel import features as F
        self.feature_names = F.FEATURE_NAMES

    def predict(self, X):
        return np.full(len(X), np.log(1e-3))


class ShiftPerTerm:
    """A stand-in shift-kernel model (costmodel.shiftadd.use_model): `per_term[kind]` seconds per term, kind
    "conv" or "matmul"."""

    def __init__(self, **per_term):
        self.per_term = per_term

    def predict(self, kind, spec, tile, terms):
        return self.per_term[kind] * terms
