"""CPU schedules for the PrimFuncs left after fusion.

dlight's CPU rules (GEMV, Reduction) go first; every PrimFunc they do not take gets a
fallback: inline what can be inlined, then per block parallelize the fused outer spatial
loops and vectorize the innermost spatial loop when its extent is a multiple of the vector
width. Injective blocks whose axes pick a branch or a gathered index (concat, nearest resize)
keep their loop nest instead and vectorize the innermost axis alone (`_schedule_rows`).
Any schedule failure leaves that PrimFunc unscheduled (correct, only slower).
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
_LOAD = tvm.ir.expr.TensorLoad    # what a buffer read is in TVM 0.27 (tirx.BufferLoad is its constructor)


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


def _children(e: object) -> list:
    """The sub-expressions of a TIR store or expression (what a block body is made of)."""
    if isinstance(e, tirx.BufferStore):
        return [e.value, *e.indices]
    if isinstance(e, _LOAD):
        return list(e.indices)
    if isinstance(e, tvm.ir.Call):
        return list(e.args)
    if isinstance(e, tirx.Select):
        return [e.condition, e.true_value, e.false_value]
    if isinstance(e, (tirx.Cast, tirx.Broadcast)):
        return [e.value]
    if isinstance(e, tirx.Let):
        return [e.value, e.body]
    if isinstance(e, tirx.Not):
        return [e.a]
    return [e.a, e.b] if hasattr(e, "a") and hasattr(e, "b") else []


def _vars(e: object) -> set:
    out, todo = set(), [e]
    while todo:
        n = todo.pop()
        if isinstance(n, tirx.Var):
            out.add(n)
        todo.extend(_children(n))
    return out


def _loads(e: object) -> list:
    out, todo = [], [e]
    while todo:
        n = todo.pop()
        if isinstance(n, _LOAD):
            out.append(n)
        todo.extend(_children(n))
    return out


def _lane_bound(body: object) -> set:
    """Variables of `body` that vector lanes should not run along: those of a branch condition
    (a concat picks its source by the index) and those inside an index that is itself loaded (a
    gather through a table, as nearest resize's). Across lanes both become per-lane selects and
    gathers; left outside the vector, each lane group reads one source contiguously."""
    bound, todo = set(), [body]
    while todo:
        n = todo.pop()
        if isinstance(n, tvm.ir.Call) and n.op.name.endswith("if_then_else"):
            bound |= _vars(n.args[0])
        elif isinstance(n, tirx.Select):
            bound |= _vars(n.condition)
        elif isinstance(n, _LOAD):
            inner = [m for i in n.indices for m in _loads(i)]
            for ld in inner:
                bound |= {v for i in ld.indices for v in _vars(i)}
        todo.extend(_children(n))
    return bound


def _schedule_rows(sch: s_tir.Schedule, block, s_loops, s_doms, lanes: int, work: int) -> bool:
    """An injective block some of whose axes pick a branch or a gathered index (concat, nearest
    resize): the loop nest is kept, the innermost axis vectorized on its own and the outermost one
    parallel. Vectorizing the flat fused index puts the branch and the gather inside the lanes
    (per-lane selects and gathers: 20-40x slower on a blocked concat or upsample), and a fused
    parallel loop re-derives every index per vector (~10x). False (nothing done) when no axis or
    the innermost one is such an axis, or no vector width divides the innermost extent."""
    blk = sch.get(block)
    bound = _lane_bound(blk.body)
    n = len(s_loops)
    free = 0
    while free < n and blk.iter_vars[n - 1 - free].var not in bound:
        free += 1
    width = next((w for w in (lanes, lanes // 2, lanes // 4, lanes // 8) if w > 1 and s_doms[-1] % w == 0), 0)
    if not 0 < free < n or not width:
        return False
    if width < s_doms[-1]:
        _, inner = sch.split(s_loops[-1], factors=[None, width])
        sch.vectorize(inner)
    else:
        sch.vectorize(s_loops[-1])
    if work >= PARALLEL_MIN_WORK:
        sch.parallel(s_loops[0])
    return True


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
    if not r_loops and _schedule_rows(sch, block, s_loops, s_doms, lanes, work):
        return
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
