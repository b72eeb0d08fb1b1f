"""The tensor-core schedule of our implicit GEMM (cuda_gemm.py), int8 and float16, with its reduction step (and
the int8 pipeline) our own.

It is TVM dlight's `MatmulInt8Tensorization` / `MatmulTensorization` (tvm.s_tir.dlight.gpu.matmul,
Apache-2.0). For int8, two of dlight's settings cost the most on our GEMMs: it stages the reduction 16 bytes at
a time (ResNet-18's 3x3 convs of 64 channels: 36 steps, two barriers each, 4 MMAs between them), and its
software pipeline fails to lower for int8 fragments in TVM 0.27 (InferFragment finds no fragment info), so it
had to be removed and no load was in flight during the MMAs. Here:

* `k_steps` (compiler/gpu_tile.py) fragments per staged step (64 bytes: 4 of WMMA's 16 or 2 of mma's 32, as
  dlight's float16 schedule stages), the most that divide the padded reduction (and a conv's channel count,
  where that many do);
* the pipeline over the staged steps only (`PIPELINE`): the inner fragment loop is not pipelined, so the step
  loop's body is 5 statements (A and B each global -> registers and registers -> shared, then the fragment
  loads and MMAs); stage 1 for the MMAs double-buffers the shared tiles, and the order issues step k + 1's
  global loads, then step k's MMAs, then stores step k + 1 to shared, so the loads' latency overlaps the MMAs.

The fragments (`sync`): on mma.sync with TVM's ldmatrix / mma intrinsics (the default), in "warp" registers laid
out as ldmatrix loads them, or on WMMA (target option -mma=wmma, the baseline). Their reduction (`fragment_k`,
gpu_tile.fragment_k): float16 16 (two m16n8k16), int8 32 where the reduction pads to 32 cheaply (two m16n8k32:
one IMMA.16832 per 4096 multiply-adds and one ldmatrix.x4 per operand fragment, where WMMA's int8 m16n16k16
compiles to two IMMA.16816 and an ldmatrix.x2 per 2048), else 16 on WMMA (TVM has no int8 m16n8k16 intrinsic).

For float16 the step is `k_steps`' too (dlight: always 4 fragments of 16 elements, whose 64 elements straddle
two taps of a 16-, 32- or 48-channel conv, so the gather of a blocked input could not be vectorized); with a
step of 4 fragments the pipeline is dlight's own (`HALF_PIPELINES`: the fragment loop pipelined too), with a
shorter one the int8 one (dlight's fails to lower on a fragment loop of 1 or 2: InferFragment again).

The block tile is the tile pass's (the node's `tile`: costmodel/gpu_tiles.py ranks each side of 16, 32, 64 or
128), or without one the rule's (gpu_tile.block_tile): dlight's 128 x 128 outputs in 16 warps of 2 x 2
fragments, except along an axis of 64 or fewer: 64, 32 or 16 wide there (2 warps, 1 warp, 1 warp of one
fragment), so a conv of 16 output channels is not padded to 128.
"""
from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.dlight.gpu.matmul import (auto_inline_consumer_chain, auto_inline_producers, get_index_map,
                                         get_reduction_blocks)

from compiler.gpu_tile import FRAGMENTS, MICRO, MMA_K, block_tile, k_steps, warps_and_fragments

PIPELINE = {"software_pipeline_order": [0, 3, 1, 4, 2], "software_pipeline_stage": [0, 0, 0, 0, 1]}
HALF_PIPELINES = (                       # dlight's float16 pipelines of the step loop and the fragment loop
    {"software_pipeline_order": [0, 3, 1, 4, 5, 2, 6], "software_pipeline_stage": [0, 0, 0, 0, 0, 1, 1]},
    {"software_pipeline_order": [0, 1, 2], "software_pipeline_stage": [0, 0, 1]})
WARP, VECTOR = 32, 4
WMMA_FRAGMENTS = ("wmma.matrix_a", "wmma.matrix_b", "wmma.accumulator")
MMA_FRAGMENTS = ("warp",) * 3        # mma.sync's: a warp's registers, laid out as ldmatrix / mma.sync hold them


def load_vector(run: int, half: bool, elements: int, threads: int) -> int:
    """Elements a thread loads at once into an operand's shared tile of `elements` per step: the operand's
    contiguous `run`, at most 16 bytes (one 128-bit load: 16 int8, 8 float16; a 16-channel block of int8 in one
    load instead of four), at least VECTOR, and dividing the tile's elements among the block's `threads`."""
    v = min(run, 8 if half else 16)
    while v > VECTOR and elements % (threads * v):
        v //= 2
    return max(v, VECTOR)


def staging_scope(tile: tuple[int, int]) -> str:
    """Where the accumulators are staged on their way out: dynamic shared memory (dlight's) for the 128 x 128
    tile, static shared memory for a narrower one. TVM 0.27 fails to lower the 32-bit staging in the dynamic
    pool beside the 8- or 16-bit operand tiles there ("tvm_access_ptr element type must match the source
    buffer": float16 from 64-wide tiles on, int8 from 32-wide ones); at 128 x 128 the staging (64 KiB) would
    not fit static shared memory (48 KiB)."""
    return "shared" if tile != (4 * MICRO * FRAGMENTS,) * 2 else "shared.dyn"


def schedule(func: tirx.PrimFunc, target: tvm.target.Target, kp: int, period: int = 0,
             half: bool = False, tile: tuple[int, int] | None = None,
             runs: tuple[int, int] = (VECTOR, VECTOR), fragment_k: int = MICRO,
             sync: bool = True) -> tirx.PrimFunc | None:
    """The scheduled PrimFunc (int8 x int8 -> int32, or `half`: float16 x float16 -> float32), or None where the
    GEMM is not a matmul this schedule takes or its tensorization fails. `tile`: the block tile (rows, cols),
    each side 16, 32, 64 or 128 (the tile pass's choice, costmodel/gpu_tiles.py); None: `block_tile`'s. `runs`:
    how many consecutive reduction elements of each operand lie contiguous in memory (`load_vector`).
    `fragment_k`: a fragment's reduction, 16 or, int8 only, 32 (kp a multiple); `sync`: the fragments on
    mma.sync and ldmatrix (float16, and int8 of 32), else WMMA's (16 only)."""
    sch = s_tir.Schedule(func)
    reduction = get_reduction_blocks(sch, sch.get_child_blocks(get_root_block(sch)))
    if reduction is None:
        return None
    assert kp % fragment_k == 0 and (fragment_k == MICRO or sync and not half)
    k_factors = [None, k_steps(kp, period, fragment_k)]

    # C[S, I, J] += A[S, I, K] * B[S, J, K], padded to the block tile
    main = reduction[0]
    reindex_a, reindex_b = sch.reindex(main, ("read", 0)), sch.reindex(main, ("read", 1))
    reindex_c = sch.reindex(main, ("write", 0))
    maps = get_index_map(sch.get(main))
    if maps is None:
        return None
    matmul_map, a_map, b_map, c_map = maps
    sch.transform_layout(reindex_a, ("write", 0), a_map)
    sch.transform_layout(reindex_b, ("write", 0), b_map)
    sch.transform_layout(reindex_c, ("read", 0), c_map)
    sch.transform_block_layout(main, matmul_map)
    rows, cols = (int(sch.get(loop).extent) for loop in sch.get_loops(main)[1:3])
    tile = tuple(tile) if tile else block_tile(rows, cols)
    (warps_i, frags_i), (warps_j, frags_j) = warps_and_fragments(tile[0]), warps_and_fragments(tile[1])
    i_factors, j_factors = [None, 1, warps_i, frags_i], [1, None, warps_j, frags_j]
    num_ty = i_factors[2] * j_factors[2]
    sch.pad_einsum(main, [1, *tile, fragment_k * k_factors[1]])

    batch, i, j, k = sch.get_loops(main)
    i, i_inner = sch.split(i, factors=[None, MICRO])
    j, j_inner = sch.split(j, factors=[None, MICRO])
    k, k_inner = sch.split(k, factors=[None, fragment_k])
    sch.reorder(i, j, k, i_inner, j_inner, k_inner)
    block_inner = main
    block_outer = sch.blockize(i_inner)
    i0, i1, i2, i3 = sch.split(i, factors=i_factors)
    j0, j1, j2, j3 = sch.split(j, factors=j_factors)
    k0, k1 = sch.split(k, k_factors)
    for loop, pipeline in zip((k0, k1), HALF_PIPELINES if half and k_factors[1] == 4 else (PIPELINE,)):
        for key, value in pipeline.items():
            sch.annotate(loop, key, value)
    sch.reorder(i0, j0, i1, j1, j2, i2, k0, k1, i3, j3)
    sch.bind(batch, "blockIdx.z")
    sch.bind(sch.fuse(i0, j0), "blockIdx.x")
    sch.bind(sch.fuse(i1, j1), "blockIdx.y")
    thread_idy = sch.fuse(j2, i2)
    sch.bind(thread_idy, "threadIdx.y")

    def fetch_to_shared(block, idx):
        read = sch.cache_read(block, idx, "shared.dyn")
        sch.compute_at(read, k0)
        fused = sch.fuse(*sch.get_loops(read)[-2:])
        vector = load_vector(runs[idx], half, tile[idx] * fragment_k * k_factors[1], num_ty * WARP)
        _, f_1, f_2, f_3 = sch.split(fused, factors=[None, num_ty, WARP, vector])
        sch.bind(f_2, "threadIdx.x")
        sch.bind(f_1, "threadIdx.y")
        sch.vectorize(f_3)
        sch.storage_align(read, 0, axis=-2, factor=16 if half else 32, offset=8 if half else 16)
        sch.annotate(read, "tirx.manifest_shared_memory_local_stage", 1)
        sch.annotate(read, "double_buffer_scope", 0)
        return read

    auto_inline_producers(sch, fetch_to_shared(block_outer, 0))
    auto_inline_producers(sch, fetch_to_shared(block_outer, 1))

    frags = MMA_FRAGMENTS if sync else WMMA_FRAGMENTS
    a_frag = sch.cache_read(block_outer, 0, frags[0])
    b_frag = sch.cache_read(block_outer, 1, frags[1])
    sch.compute_at(a_frag, k1)
    sch.compute_at(b_frag, k1)
    staging = staging_scope(tile)
    to_global = sch.cache_write(block_outer, 0, staging)
    sch.storage_align(to_global, 0, -2, 16, 4)
    store = sch.cache_write(block_outer, 0, frags[2])
    sch.reverse_compute_at(store, thread_idy)
    sch.reverse_compute_at(to_global, thread_idy)
    _split_fragment(sch, store)
    init = sch.get_child_blocks(sch.decompose_reduction(block_outer, k0))[0]
    loads = []
    for frag in (a_frag, b_frag):
        i0_, j0_ = _split_fragment(sch, frag, fragment_k)
        sch.unroll(i0_)
        sch.unroll(j0_)
        loads.append(sch.get_loops(frag)[-2])
    try:
        if sync:
            intrin = _mma_intrinsics(sch, a_frag, b_frag, store, staging, half)
        else:
            from tvm.s_tir.tensor_intrin.cuda import get_wmma_intrin_group
            intrin = get_wmma_intrin_group(load_scope="shared.dyn", store_scope=staging,
                                           in_dtype="float16" if half else "int8",
                                           out_dtype="float32" if half else "int32", trans_b=True)
        sch.tensorize(loads[0], intrin["load_a"])
        sch.tensorize(loads[1], intrin["load_b"])
        sch.tensorize(sch.get_loops(init)[-2], intrin["init"])
        sch.tensorize(sch.get_loops(store)[-2], intrin["store"])
        sch.tensorize(sch.get_loops(block_inner)[-3], intrin["compute"])
    except Exception:  # noqa: BLE001  (a GEMM the intrinsics do not match: the caller's other schedule)
        return None
    auto_inline_consumer_chain(sch, to_global)
    _, f1, f2 = sch.split(sch.fuse(*sch.get_loops(to_global)[-2:]), factors=[None, WARP, VECTOR])
    sch.bind(f1, "threadIdx.x")
    sch.vectorize(f2)
    return sch.mod["main"]


def _mma_intrinsics(sch: s_tir.Schedule, a_frag, b_frag, store, staging: str, half: bool) -> dict[str, str]:
    """Lay the mma.sync fragments out as ldmatrix and mma.sync hold them in a warp's registers (TVM's index maps:
    an int8 operand fragment of 16 x 32 is 32 threads x 16, a float16 one of 16 x 16 and an accumulator of 16 x
    16 are 32 x 8; leading axes (image, fragment row, fragment column)), and name TVM's intrinsics for them
    (mma.sync m16n16k32 int8 / m16n16k16 float16: two m16n8k32 / m16n8k16; those TVM 0.27 lacks are registered by
    `register_intrinsics`)."""
    from tvm.s_tir.tensor_intrin import cuda as intrinsics
    result = intrinsics.shared_16x16_to_ldmatrix_32x8_layout
    kf = MICRO if half else MMA_K
    operand = result if half else intrinsics.shared_16x32_to_ldmatrix_32x16_layout
    for frag in (a_frag, b_frag):
        sch.transform_layout(frag, ("write", 0),
                             lambda b, i, k: (b, i // MICRO, k // kf, *operand(i % MICRO, k % kf)))
    sch.transform_layout(store, ("read", 0),
                         lambda b, i, j: (b, i // MICRO, j // MICRO, *result(i % MICRO, j % MICRO)))
    return intrinsics.get_mma_intrin_group(load_scope="shared.dyn", store_scope=staging,
                                           in_dtype="float16" if half else "int8",
                                           out_dtype="float32" if half else "int32", trans_a=False, trans_b=True)


def register_intrinsics() -> None:
    """Register, under TVM's own names and from its own generators, the mma.sync intrinsics this schedule uses
    that TVM 0.27 registers for other scopes only: the int8 ldmatrix from dynamic shared memory and the
    accumulators' plain stores to the staging in static (and, int32, dynamic) shared memory. Called by
    tvm_cuda_schedule.preload_cuda_intrinsics, under its lock."""
    from tvm.s_tir.tensor_intrin import cuda as intrinsics
    missing = {
        "mma_ldmatrix_i8_a_dyn": lambda: intrinsics.get_ldmatrix_intrin(MMA_K, "int8", "A", False, "shared.dyn"),
        "mma_ldmatrix_i8_b_trans_dyn": lambda: intrinsics.get_ldmatrix_intrin(MMA_K, "int8", "B", True,
                                                                              "shared.dyn"),
        **{f"mma_store_16x16_{short}_{scope.replace('.', '_')}_simple_":
           (lambda acc=acc, scope=scope: intrinsics.get_mma_store_intrin(acc, 8, scope, False))
           for short, acc in (("i32", "int32"), ("f32", "float32")) for scope in ("shared", "shared.dyn")}}
    for name, make in missing.items():
        if s_tir.TensorIntrin.get(name, allow_missing=True) is None:
            s_tir.TensorIntrin.register(name, *make())


def _split_fragment(sch: s_tir.Schedule, block, width: int = MICRO) -> tuple:
    """The block's last two loops split into fragments of 16 x `width`, the fragment loops innermost: (i0, j0)."""
    i, j = sch.get_loops(block)[-2:]
    i0, i1 = sch.split(i, factors=[None, MICRO])
    j0, j1 = sch.split(j, factors=[None, width])
    sch.reorder(i0, j0, i1, j1)
    return i0, j0
