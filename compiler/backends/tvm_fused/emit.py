"""Helpers of the fused-kernel emitters: the tile fallback and the composed epilogue's tensors."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tvm
from tvm import relax, te

from compiler.backends.tvm_fused.body import Composed, KernelBody, NotFusable
from compiler.backends.tvm_lower.registry import LowerCtx


def tiled(make: Callable[[tuple | None], tvm.tirx.PrimFunc], tile: tuple | None) -> tvm.tirx.PrimFunc:
    """make(tile), or make(None) (the kernel's own tile) when `tile` does not give the tiled schedule."""
    from compiler.backends.tvm_kernels.common import SCHEDULE_ATTR
    func = make(tile)
    if tile is not None and SCHEDULE_ATTR in func.attrs and str(func.attrs[SCHEDULE_ATTR]) not in ("tiled", "amx"):
        func = make(None)
    return func


def buffer_named(func: tvm.tirx.PrimFunc, name: str) -> tvm.tirx.Buffer:
    """The buffer `name` of `func`'s body (found through the IR's reflected fields)."""
    stack, seen, alive = [func.body], set(), []   # `alive`: the ids in `seen` stay those objects' ids
    while stack:
        obj = stack.pop()
        if isinstance(obj, tvm.tirx.Buffer):
            if obj.name == name:
                return obj
            continue
        if isinstance(obj, (list, tuple)) or type(obj).__name__ == "Array":
            stack.extend(obj)
            continue
        info = getattr(type(obj), "__tvm_ffi_type_info__", None)
        if info is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        alive.append(obj)
        while info is not None:
            stack.extend(getattr(obj, f.name, None) for f in info.fields)
            info = info.parent_type_info
    raise KeyError(f"no buffer {name!r} in the kernel")


def write_over(func: tvm.tirx.PrimFunc, operand: str, out: str = "out") -> tvm.tirx.PrimFunc:
    """`func` with its output parameter `out` bound to the buffer of its parameter `operand`: the kernel
    writes its result over that operand (for `relax.call_tir_inplace`). Right only where each output
    element is written after the operand's element at the same index is read, as in an epilogue."""
    param = next(p for p in func.params if p.name == out)
    return func.specialize({param: buffer_named(func, operand)})


def epilogue_params(ctx: LowerCtx, kb: KernelBody, comp: Composed, args: list[relax.Expr],
                    full_shape: Sequence[int], dtype: str) -> tuple[list[te.Tensor], list[relax.Expr]]:
    """Placeholders for the composed epilogue's tensors and the Relax values that feed them; full-shape
    operands are reshaped to the kernel's output shape `full_shape` (same element order)."""
    holders, values = [], []
    for i, p in enumerate(comp.params):
        if p.kind == "channel":
            holders.append(te.placeholder(p.const.shape, dtype, name=f"epi{i}"))
            values.append(relax.const(np.ascontiguousarray(p.const.astype(dtype)), dtype))
            continue
        if p.kind == "bcast":
            if tuple(full_shape) != kb.anchor.outputs[0].type.shape:
                raise NotFusable("a broadcast tensor in an epilogue whose kernel output is reshaped")
            holders.append(te.placeholder(p.shape, dtype, name=f"epi{i}"))
            values.append(relax.const(np.ascontiguousarray(p.const.astype(dtype)), dtype) if p.operand is None
                          else ctx.reshape(args[p.operand], p.shape))
            continue
        v = kb.body.inputs[p.operand]
        arg = args[p.operand]
        if p.kind == "full":
            shape = tuple(full_shape)
            if tuple(int(d) for d in arg.ty.shape) != shape:
                arg = ctx.reshape(arg, shape)
        else:
            shape = v.type.shape
        holders.append(te.placeholder(shape, dtype, name=f"epi{i}"))
        values.append(arg)
    return holders, values
