"""What TVM Relax's own static memory planner allocates for a module: the baseline the arena plan
(passes/memory.py) is compared with.

`tvm.compile` on the CPU runs Relax's default build pipeline; its passes up to and including
StaticPlanBlockMemory are run here on the module the backend compiles, and the byte sizes of the
`R.memory.alloc_storage` calls it leaves are summed. That planner reuses whole storage blocks (offset
always 0) between tensors whose lifetimes do not overlap; function outputs are not planned (they stay
`R.builtin.alloc_tensor`), as graph outputs are not in our arena either.
"""
from __future__ import annotations

import tvm
from tvm import relax
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
