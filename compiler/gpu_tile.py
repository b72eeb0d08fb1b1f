"""The tensor-core GEMM (`GpuGemm`), its block tile and reduction step: the geometry the CUDA schedule builds
(compiler/backends/tvm_kernels/cuda_wmma.py) and the GPU tile model ranks (costmodel/gpu_tiles.py), written once
and free of any backend.

A block tile is (rows, cols) of the GEMM's outputs; each side is a number of warps times fragments of 16 per warp:
128 = 4 warps of 2 fragments (dlight's), 64 = 2 of 2, 32 = 1 of 2, 16 = 1 of 1. A warp's 32 x 32 outputs (2 x 2
fragments) make 4 MMAs per 4 fragment loads; a side of one fragment halves that reuse along it.
"""
from __future__ import annotations

from dataclasses import dataclass

MICRO = 16                               # the WMMA fragment: 16 x 16 x 16
FRAGMENTS = 2                            # a warp's fragments along rows and along columns: 32 x 32 outputs
SIDES = (16, 32, 64, 128)


def warps_and_fragments(extent: int) -> tuple[int, int]:
    """Along a GEMM axis of `extent` (or a tile side of that size): (warps, fragments per warp). dlight's 4 warps
    of 2 fragments (128) on a long axis; on a short one (a conv's 64, 32 or 16 output channels, a 7 x 7 image's
    pixels) as few as cover it, so the tile pads it no further than the next 16."""
    if extent <= MICRO:
        return 1, 1
    if extent <= MICRO * FRAGMENTS:
        return 1, FRAGMENTS
    return (2 if extent <= 2 * MICRO * FRAGMENTS else 4), FRAGMENTS


def block_tile(rows: int, cols: int) -> tuple[int, int]:
    """The rule's block tile (rows, columns) of a GEMM of that many rows and columns: 128 along a long axis, 64,
    32 or 16 along one of at most that many (`warps_and_fragments`); the tile pass's choice replaces it."""
    return tuple(MICRO * w * f for w, f in map(warps_and_fragments, (rows, cols)))


def k_steps(kp: int, period: int = 0) -> int:
    """Fragments of 16 elements per staged reduction step for a reduction padded to kp elements. `period` > 0:
    the gathered operand's index math jumps every `period` elements (a conv's channels per tap); a step that
    divides it sees one tap, so TVM's vectorizer can prove a thread's 4 elements one vector (else it loads them
    one by one)."""
    fits = [s for s in (4, 2, 1) if kp % (MICRO * s) == 0]
    return next((s for s in fits if period and period % (MICRO * s) == 0), fits[0])


@dataclass(frozen=True)
class GpuGemm:
    """The tensor-core GEMM a fused int8 or float16 conv / constant-weight matmul is on the GPU (what the tile
    pass ranks tiles of): `batch` GEMMs of (rows x k) x (k x cols), int8 (int32 sums) or float16 (`half`);
    `period`: a conv's channels per tap (the reduction step divides it where it can: `k_steps`), 0 for a matmul."""
    batch: int
    rows: int
    cols: int
    k: int
    half: bool
    period: int = 0
