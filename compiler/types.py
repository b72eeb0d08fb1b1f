"""Element types and tensor types of the IR. Types are values, never strings."""
from __future__ import annotations

import enum
from dataclasses import dataclass

import ml_dtypes
import numpy as np


class DType(enum.Enum):
    """Element type. bfloat16, the float8 / float4 formats and the sub-byte integers (int4, uint4,
    int2, uint2) are ml_dtypes' numpy types: one element per byte (bfloat16: two), so conversions
    are exact and round as ONNX says. The float8 / float4 formats are storage types (`is_narrow_float`):
    values are converted to and from them with `nn.cast`, never computed in."""

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
    BF16 = "bfloat16"
    F8E4M3FN = "float8_e4m3fn"
    F8E4M3FNUZ = "float8_e4m3fnuz"
    F8E5M2 = "float8_e5m2"
    F8E5M2FNUZ = "float8_e5m2fnuz"
    F8E8M0 = "float8_e8m0fnu"
    F4E2M1 = "float4_e2m1fn"
    U4 = "uint4"
    I2 = "int2"
    U2 = "uint2"

    @property
    def numpy(self) -> np.dtype:
        return _NUMPY[self]

    @property
    def is_float(self) -> bool:
        """A float type ops compute in: float16/32/64 and bfloat16 (not the float8 / float4 formats)."""
        return self in (DType.F32, DType.F16, DType.F64, DType.BF16)

    @property
    def is_narrow_float(self) -> bool:
        """A float8 / float4 storage format: only cast, bitcast, quantize and data movement take it."""
        return self in _NARROW_FLOATS

    @property
    def is_int(self) -> bool:
        return self in _INTS

    @property
    def bits(self) -> int:
        return _BITS.get(self, self.numpy.itemsize * 8)

    @property
    def mlir(self) -> str:
        """The MLIR spelling of the element type (`f32`, `bf16`, `f8E4M3FN`, `i8`, `ui4`, `i1`)."""
        if self in _MLIR_FLOATS:
            return _MLIR_FLOATS[self]
        if self.is_float:
            return f"f{self.bits}"
        if self is DType.BOOL:
            return "i1"
        return f"{'ui' if self.is_unsigned else 'i'}{self.bits}"

    @property
    def is_unsigned(self) -> bool:
        return self in (DType.U2, DType.U4, DType.U8, DType.U16, DType.U32, DType.U64)

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
            if d.value == name:
                return d
        raise ValueError(f"numpy dtype {name!r} has no IR element type")


_NARROW_FLOATS = frozenset({DType.F8E4M3FN, DType.F8E4M3FNUZ, DType.F8E5M2, DType.F8E5M2FNUZ,
                            DType.F8E8M0, DType.F4E2M1})
_INTS = frozenset({DType.I2, DType.U2, DType.I4, DType.U4, DType.I8, DType.U8, DType.I16, DType.U16,
                   DType.I32, DType.U32, DType.I64, DType.U64})
_BITS = {DType.I2: 2, DType.U2: 2, DType.I4: 4, DType.U4: 4, DType.F4E2M1: 4, DType.BOOL: 8}
_MLIR_FLOATS = {DType.BF16: "bf16", DType.F8E4M3FN: "f8E4M3FN", DType.F8E4M3FNUZ: "f8E4M3FNUZ",
                DType.F8E5M2: "f8E5M2", DType.F8E5M2FNUZ: "f8E5M2FNUZ", DType.F8E8M0: "f8E8M0FNU",
                DType.F4E2M1: "f4E2M1FN"}
_NUMPY = {d: np.dtype(getattr(ml_dtypes, d.value, None) or d.value) for d in DType}


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
