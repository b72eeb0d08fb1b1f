"""Concatenation as one contiguous copy per input: with every tensor viewed as (outer, inner), outer the
product of the dims before the axis, input k's rows land at column offset sum(inner_j, j < k) of the output's.
TVM's generic concat computes every output element with a branch over the inputs and a division to find
its source; here each input is a plain row copy LLVM vectorizes. The PrimFunc is TVMScript written for the
number of inputs at hand."""
from __future__ import annotations

from typing import Sequence, Tuple

from tvm import tirx
from tvm.script import parser
from tvm.script import tirx as T

from .common import finalize

__all__ = ["make_concat_rows", "rows"]


def make_concat_rows(outer: int, inners: Sequence[int], dtype: str) -> tirx.PrimFunc:
    """PrimFunc (x_0 (outer, inner_0), ..., out (outer, sum inner)): parallel over rows."""
    params = [f'x{k}: T.Buffer(({outer}, {inner}), "{dtype}")' for k, inner in enumerate(inners)]
    params.append(f'out: T.Buffer(({outer}, {sum(inners)}), "{dtype}")')
    lines = ["@T.prim_func(private=True)", f"def concat({', '.join(params)}):",
             '    T.func_attr({"tirx.noalias": True})', f"    for o in T.parallel({outer}):"]
    off = 0
    for k, inner in enumerate(inners):
        lines += [f"        for i in range({inner}):", f"            out[o, {off} + i] = x{k}[o, i]"]
        off += inner
    return finalize(parser.parse("\n".join(lines) + "\n", extra_vars={"T": T}))


def rows(shape: Sequence[int], axis: int) -> Tuple[int, int]:
    """(outer, inner) of `shape` split before `axis`."""
    outer = 1
    for d in shape[:axis]:
        outer *= int(d)
    inner = 1
    for d in shape[axis:]:
        inner *= int(d)
    return outer, inner
