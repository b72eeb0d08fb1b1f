"""Test helper: a graph through the kernel-level passes, and its fused kernels as (kind, ops, spec)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compiler.api import lower_kernels
from compiler.backends.tvm import BACKEND
from compiler.backends.tvm_fused import kernel_spec
from compiler.backends.tvm_fused.body import parse
from compiler.ir import Graph, Node
from compiler.ops import kernel, layout as lay, reduce as rd
from compiler.target import Target

TARGET = Target("llvm", num_threads=1)


@dataclass
class Kernel:
    kind: str              # conv, matmul, pool, qconv, qmatmul, qbmm, shiftmax, int_global_sum, quantize
    nodes: list[Node]      # prologue, anchor, epilogue (layout conversions left out)
    spec: Any


def _kind(n: Node, anchor: Node) -> str:
    k = n.attrs["kernel"]
    if k == "qmatmul" and not lay.is_const_weight(anchor.inputs[1]):
        return "qbmm"
    if k == "reduce":
        return "int_global_sum" if anchor.op is rd.reduce_sum else "pool"
    return k


def kernels(g: Graph, target: Target = TARGET, disable: tuple[str, ...] = ()) -> tuple[Graph, list[Kernel]]:
    fg = lower_kernels(g, target, disable_passes=disable)
    out = []
    for n in fg.nodes:
        if n.op is kernel.fused:
            kb = parse(n)
            out.append(Kernel(_kind(n, kb.anchor), kb.prologue + [kb.anchor] + kb.epilogue, kernel_spec(n)))
    return fg, out


def build(g: Graph, target: Target = TARGET, disable: tuple[str, ...] = ()):
    """The executable of g's final IR (what compiler.compile would build)."""
    return BACKEND.build(lower_kernels(g, target, disable_passes=disable), target)
