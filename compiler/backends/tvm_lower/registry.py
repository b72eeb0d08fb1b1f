"""The lowering table of the TVM backend: OpDef -> function (ctx, node, args) -> [relax.Expr].

Lowerings live in the op-family modules of this package and register themselves with
`@lowers(op)`; `compiler.backends.tvm` imports them all and owns the table's use.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from tvm import relax

from compiler.diagnostics import BackendToolError, SourceLoc, Unsupported
from compiler.ir import Graph, Node, Value
from compiler.ops.registry import OpDef
from compiler.runtime import to_container
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


def lowers_table(table: Mapping[OpDef, Callable[..., relax.Expr]]) -> None:
    """Register each op of `table` as the relax call table[op](*args)."""
    lowers(*table)(lambda ctx, node, args: [table[node.op](*args)])


@dataclass
class LowerCtx:
    """What a lowering may use: the block builder, the graph, the target."""

    bb: relax.BlockBuilder
    graph: Graph
    target: Target
    kernels: dict = field(default_factory=dict)     # our scheduled kernels already added, by spec
    node: Node | None = None                        # the top-level node being lowered
    symbols: dict[str, list[Node]] = field(default_factory=dict)   # kernel symbol -> the nodes calling it
    unscheduled: bool = False      # GPU kernels built without their GPU schedules: the GPU program for the CPU

    def emit(self, expr: relax.Expr) -> relax.Expr:
        return self.bb.emit(expr)

    def emit_te(self, fn: Callable[..., Any], *args: Any, name: str, **kwargs: Any) -> relax.Expr:
        """Emit a TE computation as a call_tir; `name` becomes the PrimFunc name hint."""
        return self.bb.emit_te(fn, *args, primfunc_name_hint=name, **kwargs)

    def kernel(self, key: tuple, make: Callable[[], tvm.tirx.PrimFunc], name: str) -> relax.GlobalVar:
        """The GlobalVar of our scheduled kernel `key`, built by `make` the first time."""
        if key not in self.kernels:
            func = make()
            sym = f"{name}_{len(self.kernels)}"
            self.kernels[key] = self.bb.add_func(func.with_attr("global_symbol", sym), sym)
        callers = self.symbols.setdefault(self.kernels[key].name_hint, [])
        if self.node is not None and self.node not in callers:     # what `profile` names a kernel by
            callers.append(self.node)
        return self.kernels[key]

    def call_kernel(self, gv: relax.GlobalVar, args: Sequence[relax.Expr], shape: Sequence[int],
                    dtype: str = "float32", inplace: int = -1) -> relax.Expr:
        """Call our kernel `gv`; with `inplace` >= 0 its result is written over args[inplace] (a kernel
        built for it, and an operand the IR says dies here)."""
        ty = relax.TensorType(tuple(int(d) for d in shape), dtype)
        if inplace >= 0:
            return self.bb.emit(relax.call_tir_inplace(gv, list(args), [inplace], ty))
        return self.bb.emit(relax.call_tir(gv, list(args), ty))

    def reshape(self, x: relax.Expr, shape: Sequence[int]) -> relax.Expr:
        return self.bb.emit(relax.op.reshape(x, tuple(int(d) for d in shape)))


_BOUND = (tvm.ir.expr.Var, tvm.ir.expr.Constant)   # already bound: emitting again would copy


def first_lines(e: BaseException, n: int = 6) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return "\n".join(lines[:n]) if lines else type(e).__name__


def lower_nodes(ctx: LowerCtx, nodes: Sequence[Node], env: dict[int, relax.Expr]) -> None:
    """Lower `nodes` in order through their registered lowerings, binding each result in `env`
    (id(value) -> expr; constants are added on first read). A lowering that fails is reported
    naming the node and its op. At the top level (not inside a kernel's body) each node becomes
    `ctx.node`, so the kernels it adds are recorded as its."""
    top = ctx.node is None
    for node in nodes:
        if top:
            ctx.node = node
        try:
            outs = LOWERINGS[node.op](ctx, node, [read(env, v) for v in node.inputs])
            outs = [o if isinstance(o, _BOUND) else ctx.bb.emit(o) for o in outs]
        except (Unsupported, BackendToolError):
            raise
        except Exception as e:  # noqa: BLE001  (TVM errors carry C++ text)
            loc = node.loc or SourceLoc(ctx.graph.source, node.name, node.op.name)
            raise BackendToolError(f"tvm could not lower {node.op.name}: {first_lines(e)}", loc) from None
        for v, o in zip(node.outputs, outs):
            env[id(v)] = o
    if top:
        ctx.node = None


def read(env: dict[int, relax.Expr], v: Value) -> relax.Expr:
    """v's expr in `env`; a constant becomes a relax constant of its IR dtype on first read."""
    if v.is_const and id(v) not in env:
        arr = to_container(np.asarray(v.const), v.type.dtype)
        env[id(v)] = const(arr, tvm_dtype(v.type.dtype))   # relax.const(int64) alone gives int32
    return env[id(v)]


def tvm_dtype(dt: DType) -> str:
    """TVM's spelling of an IR element type: int4 / int2 live in int8 (their value), uint4 / uint2 in
    uint8, the float8 / float4 formats in uint8 (their bits; tvm_lower/dtypes.py)."""
    if dt.is_narrow_float or dt.is_unsigned and dt.bits < 8:
        return "uint8"
    return "int8" if dt.is_int and dt.bits < 8 else dt.value


def const(value: Any, dtype: str) -> relax.Expr:
    """A relax constant of `dtype` (numpy conversion, so bool and float16 behave)."""
    return relax.const(np.asarray(value).astype(dtype), dtype)


def shape_of(expr: relax.Expr) -> tuple[int, ...]:
    return tuple(int(d) for d in expr.ty.shape)


def dtype_of(expr: relax.Expr) -> str:
    return str(expr.ty.dtype)
