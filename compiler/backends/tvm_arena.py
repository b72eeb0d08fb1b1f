"""One arena per executable: every intermediate tensor of the compiled Relax program at an offset that
our planner (passes/memory.py, passes/memory_search.py) chose, in place of Relax's StaticPlanBlockMemory.

The planner runs on the buffers the executable really has: the `R.builtin.alloc_tensor` calls that
CallTIRRewrite leaves in `main`, one per kernel output. Liveness is over the binding order; a binding
whose value reads a tensor may alias it (a reshape view, the in-place kernel's result, a tuple), so
every such binding extends the lifetime of all the allocations its operands may point to (a safe
over-approximation). The allocations the function returns stay Relax's: they outlive the call.

The rewritten `main` allocates one storage of `arena_bytes` first and creates each planned tensor in
it with `R.memory.alloc_tensor(arena, offset, shape, dtype)`. The VM's pooled allocator hands the same
storage back on every later call, so the arena is allocated once per executable.

The planned tensors reach `main` as parameters after the inputs, views the executable made once from the layout
table (`Arena`), right by construction. `relax_pipeline` is the default one without the VM's per-call checks
of those parameters (a dtype / rank check and a shape match each: 2 x 109 builtin calls per run of YOLOv8n);
the inputs keep theirs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax import backend, transform

from passes.memory import ALIGNMENT, Buffer, MemoryPlan, plan_buffers
from passes.memory_search import SearchLimits

_ALLOC = "relax.builtin.alloc_tensor"
_ARENA_PARAMS = "dyc.arena_params"            # main's attribute: how many of its last parameters are planned
_PARAM_CHECKS = ("vm.builtin.check_tensor_info", "vm.builtin.match_shape")


@dataclass
class _Alloc:
    """One `R.builtin.alloc_tensor` binding of main: its var, index in the binding order and bytes."""

    var: relax.Var
    time: int
    nbytes: int
    last: int
    touches: int = 0    # kernel calls that read or write it


def lower_calls(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """`mod` after the default build pipeline's passes up to CallTIRRewrite: every kernel call now
    writes into an explicit `R.builtin.alloc_tensor` (the buffers to plan)."""
    seq = tvm.transform.Sequential([
        backend.DispatchSampling(), backend.DispatchSortScan(), transform.LegalizeOps(),
        transform.RewriteDataflowReshape(), transform.ToNonDataflow(), transform.RemovePurityChecking(),
        transform.CallTIRRewrite(),
    ])
    with target:
        return seq(mod)


def _const_alloc_bytes(call: relax.Call) -> int | None:
    """Bytes of an alloc_tensor with a constant shape, else None."""
    shape = call.args[0]
    if not isinstance(shape, relax.ShapeExpr) or not all(isinstance(d, tvm.tirx.IntImm) for d in shape.values):
        return None
    dtype = np.dtype(call.args[1].value)
    return int(np.prod([int(d) for d in shape.values], dtype=np.int64)) * dtype.itemsize


def _bindings(func: relax.Function) -> list[relax.Binding] | None:
    body = func.body
    if not isinstance(body, relax.SeqExpr):
        return None
    out = [b for block in body.blocks for b in block.bindings]
    return out if all(isinstance(b, (relax.VarBinding, relax.MatchCast)) for b in out) else None


def find_buffers(func: relax.Function) -> list[_Alloc]:
    """The planned allocations of `func` with their live ranges (see the module docstring); empty when
    the function is not a flat sequence of bindings."""
    bindings = _bindings(func)
    if bindings is None:
        return []
    alloc_op = tvm.ir.Op.get(_ALLOC)
    allocs: list[_Alloc] = []
    points: dict[relax.Var, set[int]] = {}
    for t, b in enumerate(bindings):
        value = b.value
        reads = [v for v in relax.analysis.free_vars(value) if v in points]
        kernel_call = isinstance(value, relax.Call) and isinstance(value.op, (relax.GlobalVar, relax.ExternFunc))
        for a in set().union(*(points[v] for v in reads)) if reads else ():
            allocs[a].last = max(allocs[a].last, t)
            allocs[a].touches += kernel_call
        if isinstance(value, relax.Call) and value.op.same_as(alloc_op):
            nbytes = _const_alloc_bytes(value)
            if nbytes is not None:
                points[b.var] = {len(allocs)}
                allocs.append(_Alloc(b.var, t, nbytes, t))
                continue
        points[b.var] = set().union(*(points[v] for v in reads)) if reads else set()
    returned = set().union(*(points.get(v, set()) for v in relax.analysis.free_vars(func.body.body)))
    return [a for i, a in enumerate(allocs) if i not in returned]


def plan_executable(allocs: list[_Alloc], alignment: int, limits: SearchLimits = SearchLimits(),
                    fast_bytes: int | None = None) -> MemoryPlan:
    """Our planner's offsets for the executable's allocations (sizes rounded up to `alignment`); with
    `fast_bytes`, also the two-level mapping (passes.memory.fast_tier), each buffer's benefit the bytes
    its kernels move: its size times the kernel calls that write or read it."""
    bufs = [Buffer((a.var.name,), -(-a.nbytes // alignment) * alignment, a.time, a.last) for a in allocs]
    benefit = [float(a.nbytes * a.touches) for a in allocs] if fast_bytes else None
    return plan_buffers(bufs, alignment, limits, benefit=benefit, fast_bytes=fast_bytes)


# the element types a planned buffer may have, by index in the layout table
_DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
           "uint64", "bool", "bfloat16")
_MAX_RANK = 8


def place_in_arena(mod: tvm.IRModule, target: tvm.target.Target, kind: str = "llvm",
                   limits: SearchLimits = SearchLimits(), fast_bytes: int | None = None,
                   ) -> tuple[tvm.IRModule, MemoryPlan | None]:
    """`mod` lowered to explicit allocations (lower_calls) with main's planned intermediates turned into
    parameters after the inputs, and a function `arena_layout` returning their table (arena_table).
    With `fast_bytes`, the offsets are the two-level mapping's: the chosen buffers in [0, fast_bytes),
    every other one around them. (module, plan); the plan is None when main has nothing to place."""
    mod = lower_calls(mod, target)
    func = mod["main"]
    allocs = [a for a in find_buffers(func)
              if str(a.var.ty.dtype) in _DTYPES and len(a.var.ty.shape) <= _MAX_RANK]
    if not allocs:
        return mod, None
    plan = plan_executable(allocs, ALIGNMENT.get(kind, 64), limits, fast_bytes)
    offsets = plan.fast_tier.offsets if plan.fast_tier else plan.offsets
    planned = {a.var for a in allocs}
    blocks = [relax.BindingBlock([b for b in block.bindings if b.var not in planned])
              for block in func.body.blocks]
    main = relax.Function(list(func.params) + [a.var for a in allocs], relax.SeqExpr(blocks, func.body.body),
                          func.ret_ty, func.is_pure, func.attrs).with_attr(_ARENA_PARAMS, len(allocs))
    table = arena_table([(off, [int(d) for d in a.var.ty.shape], str(a.var.ty.dtype))
                         for a, off in zip(allocs, offsets)])
    layout = relax.Function([], relax.SeqExpr([], relax.const(table, "int64")), relax.TensorType(table.shape, "int64"),
                            True).with_attr("global_symbol", "arena_layout")
    mod["main"] = main
    mod["arena_layout"] = layout
    return mod, plan


def arena_table(rows: list[tuple[int, list[int], str]]) -> np.ndarray:
    """(offset, shape, dtype) per planned buffer as an int64 table: offset, dtype index, rank, dims."""
    table = np.zeros((len(rows), 3 + _MAX_RANK), np.int64)
    for i, (off, shape, dtype) in enumerate(rows):
        table[i, :3] = off, _DTYPES.index(dtype), len(shape)
        table[i, 3:3 + len(shape)] = shape
    return table


class Arena:
    """The executable's arena: one 64-byte-aligned allocation and a tensor at each planned offset (each
    with its own data pointer, as the kernels expect no byte offset), made once from the table."""

    def __init__(self, table: np.ndarray, alignment: int = 64):
        table = np.asarray(table, np.int64).reshape(-1, 3 + _MAX_RANK)
        sizes = [int(np.prod(r[3:3 + r[2]], dtype=np.int64)) * np.dtype(_DTYPES[r[1]]).itemsize for r in table]
        self.nbytes = max((int(r[0]) + n for r, n in zip(table, sizes)), default=0)
        raw = np.empty(self.nbytes + alignment, np.uint8)
        start = -raw.ctypes.data % alignment
        self._raw = raw
        self.bytes = raw[start:start + self.nbytes]
        self.tensors = []
        for r, n in zip(table, sizes):
            off, dtype, shape = int(r[0]), _DTYPES[r[1]], tuple(int(d) for d in r[3:3 + r[2]])
            flat = tvm.runtime.from_dlpack(self.bytes[off:off + n])
            self.tensors.append(flat._create_view(shape, dtype))


def _is_param_check(value: relax.Expr, planned: list[relax.Var]) -> bool:
    return isinstance(value, relax.Call) and isinstance(value.op, relax.ExternFunc) \
        and value.op.global_symbol in _PARAM_CHECKS and any(value.args[0].same_as(p) for p in planned)


@tvm.transform.module_pass(opt_level=0, name="DropArenaParamChecks")
def drop_arena_param_checks(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """After VMShapeLower: main without the checks of its planned parameters (`_ARENA_PARAMS`)."""
    func = mod["main"]
    count = int(func.attrs[_ARENA_PARAMS]) if func.attrs is not None and _ARENA_PARAMS in func.attrs else 0
    if not count:
        return mod
    planned = list(func.params[-count:])
    blocks = [relax.BindingBlock([b for b in block.bindings if not _is_param_check(b.value, planned)])
              for block in func.body.blocks]
    mod["main"] = relax.Function(func.params, relax.SeqExpr(blocks, func.body.body), func.ret_ty, func.is_pure,
                                 func.attrs)
    return mod


def relax_pipeline() -> tvm.transform.Pass:
    """tvm.compile's default Relax pipeline, then `drop_arena_param_checks`."""
    return tvm.transform.Sequential([relax.pipeline.default_build_pipeline(), drop_arena_param_checks])
