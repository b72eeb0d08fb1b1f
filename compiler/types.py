"""Element types and tensor types of the IR. Types are values, never strings."""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class DType(enum.Enum):
    """Element type. `int4` is stored in an int8 container."""

    F32 = "float32"
    F16 = "float16"
    F64 = "float64"
    I4 = "int4"
    I8 = "int8"
    U8 = "uint8"
    I16 = "int16"
    I32 = "int32"
    I64 = "int64"
    U16 = "uint16"
    U32 = "uint32"
    U64 = "uint64"
    BOOL = "bool"

    @property
    def numpy(self) -> np.dtype:
        return np.dtype("int8") if self is DType.I4 else np.dtype(self.value)

    @property
    def is_float(self) -> bool:
        return self in (DType.F32, DType.F16, DType.F64)

    @property
    def is_int(self) -> bool:
        return not self.is_float and self is not DType.BOOL

    @property
    def bits(self) -> int:
        return {DType.I4: 4, DType.BOOL: 8}.get(self, self.numpy.itemsize * 8)

    @property
    def mlir(self) -> str:
        """The MLIR spelling of the element type (`f32`, `i8`, `ui8`, `i1`)."""
        if self.is_float:
            return f"f{self.bits}"
        if self is DType.BOOL:
            return "i1"
        return f"{'ui' if self.is_unsigned else 'i'}{self.bits}"

    @property
    def is_unsigned(self) -> bool:
        return self in (DType.U8, DType.U16, DType.U32, DType.U64)

    @classmethod
    def parse(cls, text: str) -> DType:
        for d in cls:
            if text in (d.value, d.mlir, d.name.lower()):
                return d
        raise ValueError(f"unknown dtype {text!r}; expected one of: {', '.join(d.value for d in cls)}")

    @classmethod
    def from_numpy(cls, dt: np.dtype | type) -> DType:
        name = np.dtype(dt).name
        for d in cls:
            if d is not DType.I4 and d.value == name:
                return d
        raise ValueError(f"numpy dtype {name!r} has no IR element type")


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization of a tensor: x = scale * (q - zero_point), per tensor or per `axis`."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: DType
    quant: QuantParams | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.numpy.itemsize

    def with_shape(self, shape: tuple[int, ...]) -> TensorType:
        return TensorType(tuple(shape), self.dtype)

    def __str__(self) -> str:
        dims = "".join(f"{d}x" for d in self.shape)
        elem = self.dtype.mlir
        q = self.quant
        if q is not None:     # MLIR quant dialect spelling: !quant.uniform<i8:f32, 0.05:-3>
            params = ",".join(f"{s:.6g}:{z}" for s, z in zip(q.scale, q.zero_point))
            axis = f":{q.axis}" if q.axis is not None else ""
            params = f"{{{params}}}" if len(q.scale) > 1 else params
            elem = f"!quant.uniform<{elem}:f32{axis}, {params}>"
        return f"tensor<{dims}{elem}>"

    @classmethod
    def of(cls, array: np.ndarray) -> TensorType:
        return cls(array.shape, DType.from_numpy(array.dtype))
