"""OpDef: every op is defined once, with its attribute schema, type rule and numpy reference.

The OpDef object is the registry key. Backends register lowerings against it in their own
files; `compiler.interp` runs `reference`, which defines what the op means.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compiler.types import DType, TensorType

REQUIRED = object()

InferFn = Callable[[list[TensorType], dict[str, Any]], list[TensorType]]
RefFn = Callable[[list[np.ndarray], dict[str, Any]], list[np.ndarray]]


class TypeRuleError(ValueError):
    """Raised by a type rule: the inputs or attributes are not valid for the op."""


@dataclass(frozen=True)
class Attr:
    """One attribute: its kind (int, float, str, bool, ints, floats, dtype, graph) and default.
    A `graph` attribute is a region: a small Graph the op owns (a fused kernel's body)."""

    kind: str
    default: Any = REQUIRED

    def check(self, name: str, value: Any) -> Any:
        ok = {
            "int": lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool),
            "float": lambda v: isinstance(v, (int, float, np.floating)) and not isinstance(v, bool),
            "str": lambda v: isinstance(v, str),
            "bool": lambda v: isinstance(v, (bool, np.bool_)),
            "ints": lambda v: isinstance(v, (tuple, list)) and all(isinstance(x, (int, np.integer)) for x in v),
            "floats": lambda v: isinstance(v, (tuple, list)),
            "dtype": lambda v: isinstance(v, DType),
            "graph": lambda v: type(v).__name__ == "Graph",
        }[self.kind]
        if not ok(value):
            raise TypeRuleError(f"attribute '{name}' must be {self.kind}, got {value!r}")
        if self.kind == "ints":
            return tuple(int(x) for x in value)
        if self.kind == "floats":
            return tuple(float(x) for x in value)
        if self.kind == "int":
            return int(value)
        if self.kind == "float":
            return float(value)
        return value


@dataclass(frozen=True, eq=False)
class OpDef:
    name: str                               # "dialect.op", as printed
    doc: str
    infer: InferFn
    reference: RefFn
    num_inputs: tuple[int, int] = (1, 1)    # (min, max); max -1 = variadic
    attrs: Mapping[str, Attr] = field(default_factory=dict)
    native_bf16: bool = False               # the reference takes bfloat16 arrays as they are (interp.evaluate)

    @property
    def short_name(self) -> str:
        return self.name.split(".", 1)[-1]

    def complete_attrs(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise TypeRuleError(f"{self.name} has no attribute(s) {sorted(unknown)}")
        out = {}
        for name, spec in self.attrs.items():
            if name in attrs:
                out[name] = spec.check(name, attrs[name])
            elif spec.default is REQUIRED:
                raise TypeRuleError(f"{self.name} needs attribute '{name}'")
            else:
                out[name] = spec.default
        return out

    def check_arity(self, n: int) -> None:
        lo, hi = self.num_inputs
        if n < lo or (hi >= 0 and n > hi):
            raise TypeRuleError(f"{self.name} takes {lo}..{hi if hi >= 0 else 'n'} inputs, got {n}")

    def __repr__(self) -> str:
        return f"OpDef({self.name})"


_REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in _REGISTRY:
        raise ValueError(f"op {op.name} registered twice")
    _REGISTRY[op.name] = op
    return op


def define(name: str, doc: str, infer: InferFn, reference: RefFn,
           num_inputs: int | tuple[int, int] = 1, *, native_bf16: bool = False, **attrs: Attr) -> OpDef:
    arity = (num_inputs, num_inputs) if isinstance(num_inputs, int) else num_inputs
    return register(OpDef(name, doc, infer, reference, arity, attrs, native_bf16))


def get_op(name: str) -> OpDef:
    return _REGISTRY[name]


def all_ops() -> list[OpDef]:
    return list(_REGISTRY.values())
