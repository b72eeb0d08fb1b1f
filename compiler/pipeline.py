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


# the kernel-level passes, after quantization: what runs as one kernel, in which layout, with which
# tile. The GPU lowers fused nodes op by op for now, so it keeps plain layouts.
KERNEL_PIPELINES: dict[str, list[str]] = {
    "llvm": ["fuse_kernels", "assign_layouts", "choose_tiles"],
    "cuda": ["fuse_kernels"],
}


def pipeline_for(target: Target) -> list[str]:
    return list(PIPELINES[target.kind])


def quantized_pipeline_for(target: Target) -> list[str]:
    return list(QUANTIZED_PIPELINES[target.kind])


def kernel_pipeline_for(target: Target, backend: str = "tvm") -> list[str]:
    """The kernel-level passes for `backend`: the MLIR backend takes the fused kernels and leaves layouts
    and tiles to IREE."""
    if backend == "mlir":
        return ["fuse_kernels"]
    return list(KERNEL_PIPELINES[target.kind])
