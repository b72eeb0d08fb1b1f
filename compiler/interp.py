"""The reference interpreter: runs a Graph with each op's numpy reference. It defines what
every graph means; backends are tested against it."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from compiler.diagnostics import InvalidInput, SourceLoc
from compiler.ir import Graph, Value
from compiler.ops.registry import OpDef
from compiler.types import DType, TensorType


def bind_inputs(g: Graph, args: Sequence[np.ndarray], kwargs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Match positional or by-name arrays to the graph inputs; check shapes and dtypes."""
    if args and kwargs:
        raise InvalidInput("pass inputs either positionally or by name, not both")
    if kwargs:
        names = [v.name for v in g.inputs]
        unknown = sorted(set(kwargs) - set(names))
        missing = [n for n in names if n not in kwargs]
        if unknown or missing:
            raise InvalidInput(f"inputs by name: unknown {unknown}, missing {missing}; "
                               f"the model takes {names}")
        args = [kwargs[n] for n in names]
    if len(args) != len(g.inputs):
        raise InvalidInput(f"the model takes {len(g.inputs)} input(s) "
                           f"({', '.join(v.name for v in g.inputs)}), got {len(args)}")
    out = []
    for v, a in zip(g.inputs, args):
        a = np.asarray(a)
        want = v.type
        if a.shape != want.shape or a.dtype != want.dtype.numpy:
            raise InvalidInput(f"input '{v.name}' must be {want.dtype.value}{list(want.shape)}, "
                               f"got {a.dtype}{list(a.shape)}", SourceLoc(g.source, v.name))
        out.append(np.require(a, requirements="C"))     # ascontiguousarray makes 0-d 1-d
    return out


_BF16 = DType.BF16.numpy


def evaluate(op: OpDef, ins: Sequence[np.ndarray], attrs: dict[str, Any]) -> list[np.ndarray]:
    """op's reference on `ins`. An op on bfloat16 operands computes in float32 and rounds its bfloat16
    results (what a backend's bfloat16 legalization does; ml_dtypes has no bfloat16 matmul, einsum or
    iinfo), unless it is `native_bf16`: then its reference gets the bfloat16 arrays as they are
    (nn.bitcast reads their bits; nn.softmax rounds each step as numpy does on ml_dtypes arrays).
    Interpreting and constant folding both go through here."""
    ins = [np.asarray(a) for a in ins]
    if op.native_bf16 or not any(a.dtype == _BF16 for a in ins):
        return op.reference(ins, attrs)
    types = op.infer([TensorType(a.shape, DType.from_numpy(a.dtype)) for a in ins], attrs)
    outs = op.reference([a.astype(np.float32) if a.dtype == _BF16 else a for a in ins], attrs)
    return [np.asarray(o).astype(_BF16) if t.dtype is DType.BF16 else o for o, t in zip(outs, types)]


def run(g: Graph, *args: np.ndarray, **kwargs: np.ndarray) -> list[np.ndarray]:
    env: dict[int, np.ndarray] = {}

    def read(v: Value) -> np.ndarray:
        return v.const if v.is_const else env[id(v)]

    for v, a in zip(g.inputs, bind_inputs(g, args, kwargs)):
        env[id(v)] = a
    for n in g.nodes:
        outs = evaluate(n.op, [read(v) for v in n.inputs], n.attrs)
        for v, o in zip(n.outputs, outs):
            o = np.asarray(o)
            if o.shape != v.type.shape or o.dtype != v.type.dtype.numpy:
                raise AssertionError(f"reference of {n.op.name} ({n.name}) returned {o.dtype}{o.shape}, "
                                     f"type says {v.type}")
            env[id(v)] = o
    return [np.array(read(v)) for v in g.outputs]
