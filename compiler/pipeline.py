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


# after quantization (integer graphs); tabulate's decision needs measured elementwise costs,
# which exist for the CPU only
QUANTIZED_PIPELINES: dict[str, list[str]] = {
    "llvm": ["tabulate"],
    "cuda": [],
}


def pipeline_for(target: Target) -> list[str]:
    return list(PIPELINES[target.kind])


def quantized_pipeline_for(target: Target) -> list[str]:
    return list(QUANTIZED_PIPELINES[target.kind])
