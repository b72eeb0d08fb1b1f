"""Shared helpers for type rules and references."""
from __future__ import annotations

import numpy as np

from compiler.ops.registry import TypeRuleError
from compiler.types import DType, TensorType


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise TypeRuleError(f"shapes {', '.join(map(str, shapes))} do not broadcast") from None


def norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise TypeRuleError(f"axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


def same_dtype(types: list[TensorType], what: str = "operands") -> DType:
    dts = {t.dtype for t in types}
    if len(dts) != 1:
        raise TypeRuleError(f"{what} must share one dtype, got {sorted(d.value for d in dts)}")
    return dts.pop()


def need_float(t: TensorType, op: str) -> None:
    if not t.dtype.is_float:
        raise TypeRuleError(f"{op} needs a float operand, got {t.dtype.value}")


def as_dtype(x: np.ndarray, like: np.ndarray | np.dtype) -> np.ndarray:
    dt = like.dtype if isinstance(like, np.ndarray) else like
    return np.asarray(x).astype(dt, copy=False)
