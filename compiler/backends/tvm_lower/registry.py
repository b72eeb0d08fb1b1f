"""The lowering table of the TVM backend: OpDef -> function (ctx, node, args) -> [relax.Expr].

Lowerings live in the op-family modules of this package and register themselves with
`@lowers(op)`; `compiler.backends.tvm` imports them all and owns the table's use.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tvm import relax

from compiler.ir import Graph, Node
from compiler.ops.registry import OpDef
from compiler.target import Target
from compiler.types import DType

LowerFn = Callable[["LowerCtx", Node, list[relax.Expr]], list[relax.Expr]]
LOWERINGS: dict[OpDef, LowerFn] = {}


def lowers(*ops: OpDef) -> Callable[[LowerFn], LowerFn]:
    """Register `fn` as the lowering of each op in `ops` (the OpDef object is the key)."""
    def deco(fn: LowerFn) -> LowerFn:
        for op in ops:
            if op in LOWERINGS:
                raise ValueError(f"{op.name} has two tvm lowerings")
            LOWERINGS[op] = fn
        return fn
    return deco


@dataclass
class LowerCtx:
    """What a lowering may use: the block builder, the graph, the target."""

    bb: relax.BlockBuilder
    graph: Graph
    target: Target
    kernels: dict = field(default_factory=dict)     # our scheduled kernels already added, by spec

    def emit(self, expr: relax.Expr) -> relax.Expr:
        return self.bb.emit(expr)

    def emit_te(self, fn: Callable[..., Any], *args: Any, name: str, **kwargs: Any) -> relax.Expr:
        """Emit a TE computation as a call_tir; `name` becomes the PrimFunc name hint."""
        return self.bb.emit_te(fn, *args, primfunc_name_hint=name, **kwargs)


def tvm_dtype(dt: DType) -> str:
    """TVM's spelling of an IR element type (int4 lives in int8)."""
    return "int8" if dt is DType.I4 else dt.value


def const(value: Any, dtype: str) -> relax.Expr:
    """A relax constant of `dtype` (numpy conversion, so bool and float16 behave)."""
    return relax.const(np.asarray(value).astype(dtype), dtype)


def shape_of(expr: relax.Expr) -> tuple[int, ...]:
    return tuple(int(d) for d in expr.ty.shape)


def dtype_of(expr: relax.Expr) -> str:
    return str(expr.ty.dtype)
