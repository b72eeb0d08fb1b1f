"""The tensor-core GEMM (`GpuGemm`), its block tile and reduction step: the geometry the CUDA schedule builds
(compiler/backends/tvm_kernels/cuda_wmma.py) and the GPU tile model ranks (costmodel/gpu_tiles.py), written once
and free of any backend.

A block tile is (rows, cols) of the GEMM's outputs; each side is a number of warps times fragments of 16 per warp:
128 = 4 warps of 2 fragments (dlight's), 64 = 2 of 2, 32 = 1 of 2, 16 = 1 of 1. A warp's 32 x 32 outputs (2 x 2
fragments) make 4 MMAs per 4 fragment loads; a side of one fragment halves that reuse along it.

A fragment is 16 x 16 outputs by `fragment_k` of the reduction: 16 (float16; int8 on WMMA, where padding the
reduction to 32 would cost more than an eighth), or 32 for int8 (two mma.sync m16n8k32, one instruction per 4096
multiply-adds where WMMA's int8 issues two m16n8k16, and one ldmatrix per 16 x 32 operand fragment).
"""
from __future__ import annotations

from dataclasses import dataclass

MICRO = 16                               # a fragment's rows and columns (and WMMA's reduction)
MMA_K = 32                               # int8 on mma.sync m16n8k32
STEP = 64                                # reduction elements staged per step at most
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


def fragment_k(k: int, half: bool, mma: bool = True) -> int:
    """The reduction elements of one fragment for a GEMM reducing over `k`: 32 for int8 on mma.sync (`mma`)
    where padding k to 32 adds at most an eighth to padding it to 16 (ResNet's 7 x 7 stem of 4 channels: 196 ->
    224 against 208), else 16 (float16 always; int8 then on WMMA)."""
    if half or not mma:
        return MICRO
    return MMA_K if _up(k, MMA_K) * 8 <= _up(k, MICRO) * 9 else MICRO


def k_steps(kp: int, period: int = 0, fragment: int = MICRO) -> int:
    """Fragments of `fragment` elements per staged reduction step (at most STEP elements) for a reduction padded
    to kp elements. `period` > 0: the gathered operand's index math jumps every `period` elements (a conv's
    channels per tap); a step that divides it sees one tap, so TVM's vectorizer can prove a thread's 4 elements
    one vector (else it loads them one by one)."""
    fits = [s for s in (4, 2, 1) if fragment * s <= STEP and kp % (fragment * s) == 0]
    return next((s for s in fits if period and period % (fragment * s) == 0), fits[0])


def _up(v: int, m: int) -> int:
    return -(-v // m) * m


@dataclass(frozen=True)
class GpuGemm:
    """The tensor-core GEMM a fused int8 or float16 conv / constant-weight matmul is on the GPU (what the tile
    pass ranks tiles of): `batch` GEMMs of (rows x k) x (k x cols), int8 (int32 sums) or float16 (`half`);
    `period`: a conv's channels per tap (the reduction step divides it where it can: `k_steps`), 0 for a matmul;
    `mma`: the tensor cores through mma.sync (int8 fragments of 32 where `fragment_k` says) or WMMA (16)."""
    batch: int
    rows: int
    cols: int
    k: int
    half: bool
    period: int = 0
    mma: bool = True

    @property
    def fragment(self) -> int:
        return fragment_k(self.k, self.half, self.mma)

    @property
    def kp(self) -> int:
        """The reduction padded to whole fragments."""
        return _up(self.k, self.fragment)
