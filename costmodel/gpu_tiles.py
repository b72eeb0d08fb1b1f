"""The GPU's tensor-core GEMM tiles: a feature set and an analytic cost model that ranks the block tiles of one
implicit GEMM (tvm_kernels/cuda_gemm.py, scheduled by cuda_wmma.py).

A task is a `GpuGemm` (compiler/gpu_tile.py: what a fused int8 or float16 conv / matmul is on the GPU, `batch`
GEMMs of rows x cols x k); a candidate is a block tile (rows, cols), each side 16, 32, 64 or 128 (1 warp of 1
fragment, 1 of 2, 2 of 2, 4 of 2: gpu_tile.warps_and_fragments). `features` names what decides its time on an
SM-based GPU:

* work:      padded multiply-adds over the real ones (the tile pads rows and columns, the fragment k:
             gpu_tile.fragment_k, 32 for most int8 GEMMs);
* blocks:    thread blocks, blocks resident per SM (warp slots and shared memory), the busiest SM's blocks and
             the rounds it runs them in, the SMs the GEMM fills; a GEMM of fewer blocks than SMs leaves SMs
             idle (ResNet-18's last stage at batch 32 with dlight's 128 x 128 tile: 52 blocks on 132 SMs);
* per SM:    warps resident (a tensor core per sub-partition: fewer than 4 leave tensor cores idle), each
             warp's MMAs and fragment loads per reduction step, the steps (a step waits for its loads);
* traffic:   bytes the blocks read from L2 (each operand once per block along the other axis).

`estimate` runs the busiest SM's blocks in rounds, each the reduction's steps, a step as long as the longer of
the loads' latency and its warps' MMAs and fragment loads on the SM's 4 tensor cores, against the L2 traffic at
the L2's bandwidth. The constants (`GPUS`) are the architectures' published figures and a latency, not fitted:
no GPU measurements of these tiles exist yet, so this is the model until they do (the features are what a
learned model would be trained on). Without a choice (an empty `tile` attribute) the schedule keeps its rule,
gpu_tile.block_tile.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from compiler.gpu_tile import MICRO as FRAGMENT
from compiler.gpu_tile import SIDES, GpuGemm, k_steps, warps_and_fragments


@dataclass(frozen=True)
class Gpu:
    """Figures of an SM architecture (the data-center part of that generation)."""
    name: str
    sms: int
    clock_ghz: float
    mma_per_sm: dict            # dense multiply-adds per SM per clock through mma.sync / wmma: {"int8", "float16"}
    l2_bytes_per_clock: int     # L2 -> SMs, bytes per clock, the whole GPU
    step_latency: int = 400     # clocks from a step's global loads to its tiles in shared memory (L2 hit, barrier)
    shared_bytes_per_clock: int = 128     # per SM: a warp's fragment loads
    warps_per_sm: int = 64
    blocks_per_sm: int = 32
    shared_per_sm: int = 227 * 1024


GPUS = {
    # A100: 108 SMs at 1.41 GHz, 312 dense FP16 TFLOPS (1024 FMA / SM / clock), INT8 twice that
    "sm_80": Gpu("A100", 108, 1.41, {"float16": 1024, "int8": 2048}, 5120, shared_per_sm=164 * 1024),
    # H100 SXM: 132 SMs at 1.83 GHz; mma.sync (what WMMA compiles to) reaches the A100-style rate per SM, not
    # wgmma's 2x
    "sm_90": Gpu("H100/H200", 132, 1.83, {"float16": 1024, "int8": 2048}, 5632),
}


def gpu_of(arch: str) -> Gpu:
    """The figures for `arch` (sm_XY): the architecture's own, or the nearest older one listed."""
    def number(a: str) -> int:
        return int(a.removeprefix("sm_"))
    older = [a for a in GPUS if number(a) <= number(arch)]
    return GPUS[max(older, key=number)] if older else GPUS["sm_80"]


def candidate_tiles(spec: GpuGemm) -> list[tuple[int, int]]:
    """The tiles worth ranking: each side up to the first that covers its axis (a wider one is only padding)."""
    def sides(extent: int) -> list[int]:
        out = []
        for s in SIDES:
            out.append(s)
            if s >= extent:
                break
        return out
    return [(r, c) for r in sides(spec.rows) for c in sides(spec.cols)]


def k_padded(spec: GpuGemm) -> int:
    return spec.kp


def shared_bytes(spec: GpuGemm, tile: tuple[int, int], step: int | None = None) -> int:
    """Shared memory of one block: both operand tiles double-buffered at `step` fragments of k (None: the
    schedule's, gpu_tile.k_steps), and the 32-bit accumulators' staging (cuda_wmma.staging_scope)."""
    step = step or k_steps(spec.kp, spec.period, spec.fragment)
    elem = 2 if spec.half else 1
    return 2 * (tile[0] + tile[1]) * spec.fragment * step * elem + tile[0] * tile[1] * 4


FEATURE_NAMES = ("tile_rows", "tile_cols", "warps", "k_step", "steps", "log_blocks", "resident", "blocks_per_sm",
                 "rounds", "last_round_blocks", "sm_fill", "warp_step_clocks", "pad_work", "log_l2_bytes",
                 "log_macs")


def features(spec: GpuGemm, tile: tuple[int, int], gpu: Gpu) -> dict[str, float]:
    """The named features of `tile` for `spec` on `gpu` (FEATURE_NAMES)."""
    tr, tc = tile
    (wr, fr), (wc, fc) = warps_and_fragments(tr), warps_and_fragments(tc)
    warps = wr * wc
    kp, kf = k_padded(spec), spec.fragment
    step = k_steps(kp, spec.period, kf)
    row_tiles, col_tiles = -(-spec.rows // tr), -(-spec.cols // tc)
    blocks = spec.batch * row_tiles * col_tiles
    resident = max(1, min(gpu.warps_per_sm // warps, gpu.blocks_per_sm,
                          gpu.shared_per_sm // shared_bytes(spec, tile, step)))
    per_sm = -(-blocks // gpu.sms)                        # blocks the busiest SM runs in all
    together = min(resident, per_sm)                     # ... at once
    elem = 2 if spec.half else 1
    # a warp's step: fr x fc x step MMAs of 16 x 16 x kf on its sub-partition's tensor core (a quarter of the SM's
    # rate), and (fr + fc) x step fragment loads from shared memory (a quarter of its bandwidth)
    mma = FRAGMENT * FRAGMENT * kf / (gpu.mma_per_sm["float16" if spec.half else "int8"] / 4)
    load = FRAGMENT * kf * elem / (gpu.shared_bytes_per_clock / 4)
    warp_step = step * (fr * fc * mma + (fr + fc) * load)
    l2 = spec.batch * kp * elem * (row_tiles * tr * col_tiles + col_tiles * tc * row_tiles)
    padded = spec.batch * row_tiles * tr * col_tiles * tc * kp
    return {"tile_rows": tr, "tile_cols": tc, "warps": warps, "k_step": step, "steps": kp // (kf * step),
            "log_blocks": math.log2(blocks), "resident": resident, "blocks_per_sm": per_sm,
            "rounds": -(-per_sm // together), "last_round_blocks": per_sm - (-(-per_sm // together) - 1) * together,
            "sm_fill": min(1.0, blocks / gpu.sms), "warp_step_clocks": warp_step,
            "pad_work": padded / (spec.batch * spec.rows * spec.cols * spec.k), "log_l2_bytes": math.log2(l2),
            "log_macs": math.log2(padded)}


def estimate(spec: GpuGemm, tile: tuple[int, int], gpu: Gpu) -> float:
    """Seconds the GEMM takes with `tile` under the model: the busiest SM runs its blocks in rounds of those
    resident at once; a round is the reduction's steps, each as long as the longer of the loads' latency (the
    pipeline overlaps the next step's loads with this step's MMAs) and the MMAs of all its warps on the 4
    tensor cores; against the L2 traffic at the L2's bandwidth."""
    f = features(spec, tile, gpu)
    together = min(f["resident"], f["blocks_per_sm"])

    def round_clocks(blocks: int) -> float:       # the SM's 4 tensor cores shared by the round's warps
        return f["steps"] * max(gpu.step_latency, -(-blocks * f["warps"] // 4) * f["warp_step_clocks"])
    clocks = (f["rounds"] - 1) * round_clocks(together) + round_clocks(f["last_round_blocks"])
    memory = 2 ** f["log_l2_bytes"] / gpu.l2_bytes_per_clock
    return max(clocks, memory) / (gpu.clock_ghz * 1e9)


def arch_of(target) -> str:
    """The sm_XY of a target ("cuda -arch=sm_90", a compiler Target); sm_80 where none is named (Target's
    default)."""
    m = re.search(r"-arch=(sm_\d+)", str(target or ""))
    return m.group(1) if m else "sm_80"


def choose(spec: GpuGemm, arch: str = "sm_90") -> tuple[int, int]:
    """The candidate tile with the least estimate (ties: the larger tile, as dlight's)."""
    gpu = gpu_of(arch)
    return min(candidate_tiles(spec), key=lambda t: (estimate(spec, t, gpu), -t[0] * t[1]))
