"""The pass pipeline per target, written out flat."""
from __future__ import annotations

from compiler.target import Target

CANONICALIZE = [
    "fold_constants",
    "remove_identity",
    "fold_batch_norm",
    "fold_constants",
    "recognize_gelu",
    "recognize_gelu_tanh",
    "recognize_layer_norm",
    "remove_identity",
    "dead_code",
]

PIPELINES: dict[str, list[str]] = {
    "llvm": CANONICALIZE,
    "cuda": CANONICALIZE,
}


def pipeline_for(target: Target) -> list[str]:
    return list(PIPELINES[target.kind])
