"""What TVM Relax's own static memory planner allocates for a module: the baseline the arena plan
(passes/memory.py) is compared with.

`tvm.compile` on the CPU runs Relax's default build pipeline; its passes up to and including
StaticPlanBlockMemory are run here on the module the backend compiles, and the byte sizes of the
`R.memory.alloc_storage` calls it leaves are summed. That planner reuses whole storage blocks (offset
always 0) between tensors whose lifetimes do not overlap; function outputs are not planned (they stay
`R.builtin.alloc_tensor`), as graph outputs are not in our arena either.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, s_tir, tirx
from tvm.relax import backend, transform


def plan_like_relax(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """`mod` after the default build pipeline's passes up to StaticPlanBlockMemory."""
    seq = tvm.transform.Sequential([
        backend.DispatchSampling(), backend.DispatchSortScan(), transform.LegalizeOps(),
        transform.RewriteDataflowReshape(), transform.ToNonDataflow(), transform.RemovePurityChecking(),
        transform.CallTIRRewrite(), transform.StaticPlanBlockMemory(),
    ])
    with target:
        return seq(mod)


def _storage_bytes(call: relax.Call) -> int:
    """The bytes of one `R.memory.alloc_storage(R.shape([n]), device, scope, dtype)`: the planner
    gives the size in bytes whatever the dtype (that of the first tensor stored there)."""
    shape = call.args[0]
    if not isinstance(shape, relax.ShapeExpr):
        raise ValueError(f"alloc_storage with a non-constant size: {shape}")
    n = 1
    for d in shape.values:
        n *= int(d)
    return n


def storage_allocations(mod: tvm.IRModule) -> list[int]:
    """Byte sizes of every `R.memory.alloc_storage` in the Relax functions of a planned module."""
    alloc = tvm.ir.Op.get("relax.memory.alloc_storage")
    sizes: list[int] = []

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and expr.op.same_as(alloc):
            sizes.append(_storage_bytes(expr))

    for _, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return sizes


def tvm_planner_bytes(mod: tvm.IRModule, target: tvm.target.Target) -> int:
    """Total bytes of the storage Relax's StaticPlanBlockMemory allocates for `mod` (what the compiled
    module would allocate for its intermediates without our arena)."""
    return sum(storage_allocations(plan_like_relax(mod, target)))


def _stmts(s: tirx.Stmt):
    """Every statement under `s` (blocks, loops, sequences, branches)."""
    yield s
    for attr in ("body", "block", "then_case", "else_case", "init"):
        child = getattr(s, attr, None)
        if isinstance(child, tirx.Stmt):
            yield from _stmts(child)
    for child in getattr(s, "seq", None) or []:
        yield from _stmts(child)


def _compacted(mod: tvm.IRModule) -> tvm.IRModule:
    """The PrimFuncs of `mod` with each intermediate buffer shrunk to the region one iteration of its
    enclosing loops touches (TVM's own CompactBufferAllocation, as the build does): a register tile
    computed at an inner loop is its tile, not the full output."""
    funcs = tvm.IRModule({gv: f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)})
    seq = tvm.transform.Sequential([
        s_tir.transform.LowerInitBlock(), s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        s_tir.transform.ConvertBlocksToOpaque(), s_tir.transform.CompactBufferAllocation()])
    return seq(funcs)


def kernel_workspace_bytes(mod: tvm.IRModule) -> dict[str, int]:
    """Per PrimFunc, the bytes of its global-scope intermediate buffers (a conv's padded input, a
    softmax's row statistics) after compaction (_compacted): the workspace the kernel takes from TVM's
    pool, or its stack, while it runs, outside the arena."""
    out: dict[str, int] = {}
    for gv, func in _compacted(mod).functions.items():
        total = 0
        for s in _stmts(func.body):
            bufs = list(getattr(s, "alloc_buffers", None) or [])
            if isinstance(s, tirx.AllocBuffer):
                bufs.append(s.buffer)
            for b in bufs:
                if b.scope() == "global":
                    total += int(np.prod([int(d) for d in b.shape], dtype=np.int64)) * max(1, b.dtype.bits // 8)
        out[gv.name_hint] = total
    return out
