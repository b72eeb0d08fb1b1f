"""What every frontend shares: operands that are run-time Values or numpy constants, and
`emit`, which appends an IR node or, when every operand is a constant, folds it on the fly
with the op's reference (so shape arithmetic never reaches the graph)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import numpy as np

from compiler.diagnostics import SourceLoc, Unsupported
from compiler.interp import evaluate
from compiler.ir import Graph, Value
from compiler.ops.registry import OpDef
from compiler.types import DType, TensorType

Operand = Union[Value, np.ndarray]


class Emitter:
    """Builds one Graph; subclasses set `node_name` and `loc` for the node being converted."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.node_name = ""
        self.loc: SourceLoc | None = None
        self._const_values: dict[int, tuple[np.ndarray, Value]] = {}

    @staticmethod
    def shape(x: Operand) -> tuple[int, ...]:
        return tuple(x.shape) if isinstance(x, np.ndarray) else x.type.shape

    @staticmethod
    def np_dtype(x: Operand) -> np.dtype:
        return x.dtype if isinstance(x, np.ndarray) else x.type.dtype.numpy

    @staticmethod
    def type_of(x: Operand) -> TensorType:
        return TensorType.of(x) if isinstance(x, np.ndarray) else x.type

    def value(self, x: Operand, name: str = "c") -> Value:
        """A graph Value for an operand; constants become (cached) constant Values."""
        if isinstance(x, Value):
            return x
        key = id(x)
        if key in self._const_values:
            return self._const_values[key][1]
        try:
            DType.from_numpy(x.dtype)
        except ValueError:
            raise Unsupported(f"a {x.dtype} constant of shape {list(x.shape)} is used at run time, "
                              f"and the IR has no {x.dtype} type", self.loc) from None
        v = self.graph.const(x, name)
        self._const_values[key] = (x, v)      # keep x alive so its id stays unique
        return v

    def emit_multi(self, op: OpDef, operands: Sequence[Operand], **attrs: Any) -> list[Operand]:
        """Append `op`, or fold it with its reference when every operand is a constant."""
        if all(isinstance(x, np.ndarray) for x in operands):
            op.check_arity(len(operands))
            outs = evaluate(op, operands, op.complete_attrs(attrs))
            return [np.asarray(o) for o in outs]
        values = [self.value(x) for x in operands]
        return list(self.graph.add(op, values, name=self.node_name, loc=self.loc, **attrs))

    def emit(self, op: OpDef, operands: Sequence[Operand], **attrs: Any) -> Operand:
        outs = self.emit_multi(op, operands, **attrs)
        assert len(outs) == 1, f"{op.name} has {len(outs)} outputs"
        return outs[0]
