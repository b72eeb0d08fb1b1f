"""CPU schedules for the PrimFuncs left after fusion.

dlight's CPU rules (GEMV, Reduction) go first; every PrimFunc they do not take gets a
fallback: inline what can be inlined, then per block parallelize the fused outer spatial
loops and vectorize the innermost spatial loop when its extent is a multiple of the vector
width. Any schedule failure leaves that PrimFunc unscheduled (correct, only slower).
"""
from __future__ import annotations

import math
import os
import re

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import try_inline

_AVX512_CPUS = ("znver4", "znver5", "skylake-avx512", "cascadelake", "cooperlake", "cannonlake",
                "icelake-client", "icelake-server", "tigerlake", "rocketlake", "sapphirerapids",
                "emeraldrapids", "graniterapids", "x86-64-v4")
PARALLEL_MIN_WORK = 4096          # fewer element-steps than this: a parallel region costs more


def vector_bits(cpu: str) -> int:
    return 512 if cpu in _AVX512_CPUS else 256


def _is_scheduled(func: tirx.PrimFunc) -> bool:
    return bool(func.attrs is not None and func.attrs.get("tirx.is_scheduled", False))


def _apply_dlight(func: tirx.PrimFunc, target: tvm.target.Target) -> tirx.PrimFunc | None:
    for rule in (dl.cpu.GEMV(), dl.cpu.Reduction()):
        try:
            sch = rule.apply(func, target, False)
        except Exception:  # noqa: BLE001  (a rule that fails simply does not apply)
            continue
        if isinstance(sch, list):
            sch = sch[0] if sch else None
        if sch is not None:
            return sch.mod["main"]
    return None


def _const_int(e: object) -> int | None:
    if isinstance(e, int):           # the analysis hands back Python ints for static extents
        return e
    return int(e.value) if isinstance(e, tirx.IntImm) else None


def _elem_bits(region: object) -> int:
    buf = getattr(region, "buffer", None) or region.source     # TensorRegion in TVM 0.27
    digits = re.search(r"\d+", str(buf.dtype))
    return max(int(digits.group()), 8) if digits else 8


def _schedule_block(sch: s_tir.Schedule, info, bits: int) -> None:
    block = info.block_rv
    kinds = info.dom_kind()
    loops = sch.get_loops(block)
    if len(loops) != len(kinds) or "O" in kinds or "S" not in kinds:
        return
    doms = [_const_int(it.dom) for it in info.iters]
    if any(d is None for d in doms):
        return
    s_loops = [lp for lp, k in zip(loops, kinds) if k == "S"]
    r_loops = [lp for lp, k in zip(loops, kinds) if k == "R"]
    s_doms = [d for d, k in zip(doms, kinds) if k == "S"]
    extent = math.prod(s_doms)
    work = extent * math.prod(d for d, k in zip(doms, kinds) if k == "R")
    lanes = max(1, min(bits // _elem_bits(sch.get(block).writes[0]), 64))
    if r_loops:
        sch.reorder(*s_loops, *r_loops)
    fused = sch.fuse(*s_loops) if len(s_loops) > 1 else s_loops[0]
    inner = None
    # Without reductions the fused loop is one flat index: vectorize it when the whole extent
    # divides; with reductions only the innermost spatial axis is contiguous. Half-width
    # vectors are as fast as full ones on Zen4 and divide more shapes.
    span = s_doms[-1] if r_loops else extent
    lanes = next((n for n in (lanes, lanes // 2) if n > 1 and span % n == 0), lanes)
    if span % lanes == 0 and extent > lanes:
        fused, inner = sch.split(fused, factors=[None, lanes])
        if r_loops:
            sch.reorder(fused, *r_loops, inner)
        sch.vectorize(inner)
    if work >= PARALLEL_MIN_WORK and extent // (lanes if inner is not None else 1) > 1:
        sch.parallel(fused)
    if r_loops and inner is not None:
        sch.decompose_reduction(block, r_loops[0])


def _fallback(func: tirx.PrimFunc, bits: int) -> tirx.PrimFunc | None:
    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    if infos is None:
        return None
    try:
        infos = try_inline(sch, infos)
    except Exception:  # noqa: BLE001
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
    for info in infos:
        trial = sch.copy()
        try:
            _schedule_block(trial, info, bits)
        except Exception:  # noqa: BLE001  (keep the block as it was)
            continue
        sch = trial
    return sch.mod["main"]


def schedule_module(mod: tvm.IRModule, target: tvm.target.Target, cpu: str) -> tvm.IRModule:
    """Schedule every PrimFunc of `mod` that is not scheduled yet."""
    bits = vector_bits(cpu)
    if os.environ.get("DYC_TVM_NO_SCHEDULE"):
        return mod
    updates = {}
    with target:
        for gv, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
                continue
            new = _apply_dlight(func, target)
            if new is None:
                try:
                    new = _fallback(func, bits)
                except Exception:  # noqa: BLE001  (correctness first: leave it unscheduled)
                    new = None
            if new is not None:
                updates[gv] = new.with_attr("tirx.is_scheduled", True)
    for gv, func in updates.items():
        mod[gv] = func
    return mod
