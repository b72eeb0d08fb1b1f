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


# quantization: additive attention masks as selects (passes/select_masks.py: a quantized mask would lose
# its "minus infinity"), calibrate and annotate, the integer rewrite (I-ViT's for the float islands of an
# integer-only graph; then every dequantize -> elementwise float -> quantize island left, SiLU,
# hardswish, sigmoid..., becomes one exact table lookup), shift/add weights (passes/shiftadd.py) and LUT low-bit weights (passes/lut.py; both
# no-ops unless asked for), one cleanup;
# then the integer graph's own passes per target (tabulate's decision needs measured elementwise costs,
# which exist for the CPU only)
QUANTIZE = ["select_masks", "annotate", "dyadic", "ivit", "table_islands", "shiftadd", "lut", "fold_constants", "dead_code"]
QUANTIZED_PIPELINES: dict[str, list[str]] = {
    "llvm": ["tabulate"],
    "cuda": [],
}


# the kernel-level passes, after quantization: what runs as one kernel, in which layout, with which
# tile. On the GPU the fused convs and matmuls are implicit GEMMs, its attention one kernel
# (backends/tvm_fused/cuda.py); assign_gpu_layouts gives the int8 and float16 convs NCHW{16}c (or {8}c; the
# 3-channel image {4}c) inputs and results (a pixel's channels one vector: passes/layout.py), the rest stays NCHW;
# choose_tiles then gives each tensor-core GEMM its block tile (costmodel/gpu_tiles.py: the rows x columns the layout
# made). fuse_attention comes
# first: its chain (matmul, scale, mask, softmax, matmul) holds matmuls that fuse_kernels would
# otherwise take one by one. pack_weights stores each conv and matmul kernel's constant weight in the
# packed form its kernel reads (assign_layouts chose the blocks a conv's form depends on). assign_inplace marks the kernels that
# may write over an operand that dies there (a conv's residual). fuse_gates, after the layouts, makes each squeeze-excite
# gate multiply on blocked data one kernel (passes/gate.py). plan_memory, last, is an analysis of the final IR: the arena offset of
# every intermediate buffer (passes/memory.py).
KERNEL_PIPELINES: dict[str, list[str]] = {
    "llvm": ["fuse_attention", "fuse_kernels", "assign_layouts", "fuse_gates", "pack_weights", "choose_tiles",
             "assign_inplace", "plan_memory"],
    "cuda": ["fuse_attention", "fuse_kernels", "assign_gpu_layouts", "choose_tiles", "plan_memory"],
}


# L-Mul (compile(..., lmul="attention")): attention's matmuls multiply by one integer add each. It runs
# right after fuse_attention, rewriting the fused kernels' bodies, or first where the pipeline has no
# fuse_attention, rewriting the chains in place (passes/lmul.py says why).
LMUL_PASSES: dict[str, str] = {"attention": "lmul_attention"}


def with_lmul(names: list[str], lmul: str | None) -> list[str]:
    """The kernel-level pass list `names` with the L-Mul pass of mode `lmul` (None: unchanged)."""
    if lmul is None:
        return list(names)
    if lmul not in LMUL_PASSES:
        from compiler.diagnostics import Unsupported
        raise Unsupported(f"lmul={lmul!r}; supported: {', '.join(LMUL_PASSES)}")
    at = names.index("fuse_attention") + 1 if "fuse_attention" in names else 0
    return names[:at] + [LMUL_PASSES[lmul]] + names[at:]


# The one-pass integer attention (compile(..., integer_attention=True), opt-in): the unfused integer
# attention chain of an integer-only graph becomes one q.attention (passes/qattention.py), first, before
# fuse_kernels takes its matmuls one by one. TVM kernels for llvm and cuda, an MLIR lowering for both.
INTEGER_ATTENTION = "fuse_integer_attention"


def with_integer_attention(names: list[str], target: Target, on: bool) -> list[str]:
    """The kernel-level pass list `names`, with the integer attention fusion first when `on`."""
    if not on:
        return list(names)
    if target.kind not in ("llvm", "cuda"):
        from compiler.diagnostics import Unsupported
        raise Unsupported(f"integer_attention: the one-pass integer attention kernel is for llvm and cuda "
                          f"targets, not {target.kind}")
    return [INTEGER_ATTENTION] + list(names)


# ShiftAddViT's binary-code attention (compile(..., shiftadd_attention=True), opt-in): each softmax
# attention chain becomes one mfree.binary_attention (passes/shiftadd_attention.py), first, before
# fuse_attention would take the chain. TVM kernels (llvm: tvm_kernels/binary_attention.py, cuda:
# tvm_kernels/cuda_binary_attention.py) and an MLIR lowering (llvm, cuda:
# compiler/backends/mlir_lower/binary_attention.py).
SHIFTADD_ATTENTION = "shiftadd_attention"


def with_shiftadd_attention(names: list[str], target: Target, backend: str, on: bool) -> list[str]:
    """The kernel-level pass list `names`, with the binary-code attention rewrite first when `on`."""
    if not on:
        return list(names)
    if not (backend in ("tvm", "mlir") and target.kind in ("llvm", "cuda")):
        from compiler.diagnostics import Unsupported
        raise Unsupported(f"shiftadd_attention: mfree.binary_attention has TVM kernels and an MLIR lowering for "
                          f"llvm and cuda, not one for the {backend} backend on {target.kind}")
    return [SHIFTADD_ATTENTION] + list(names)


def pipeline_for(target: Target) -> list[str]:
    return list(PIPELINES[target.kind])


def quantized_pipeline_for(target: Target) -> list[str]:
    return list(QUANTIZED_PIPELINES[target.kind])


def quantize_passes(integer_only: bool) -> list[str]:
    """The quantization passes; ivit only for an integer-only compile."""
    return [n for n in QUANTIZE if integer_only or n != "ivit"]


def kernel_pipeline_for(target: Target, backend: str = "tvm") -> list[str]:
    """The kernel-level passes for `backend`: the MLIR backend takes the fused kernels (an attention is one
    iree_linalg_ext.attention) and leaves layouts and tiles to IREE."""
    if backend == "mlir":
        return ["fuse_attention", "fuse_kernels", "plan_memory"]
    return list(KERNEL_PIPELINES[target.kind])
