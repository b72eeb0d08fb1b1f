"""The context every ONNX converter works through: the current node's operands and attributes,
and `emit`, which appends an IR node or, when all operands are constants, folds it on the fly.

An operand is a `Value` (known at run time) or a numpy array (a constant). Constants stay
numpy arrays until a run-time node needs them, so shape arithmetic in any dtype (float64
included) folds away, and only constants that reach the compiled graph must have an IR dtype.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.diagnostics import InvalidModel, SourceLoc, Unsupported
from compiler.ir import Graph
from frontends.common import Emitter, Operand
from compiler.types import DType

Converter = Callable[["ConvertContext", onnx.NodeProto], Union[Operand, Sequence[Operand]]]

ONNX_DTYPES: dict[int, DType] = {
    TensorProto.FLOAT: DType.F32, TensorProto.FLOAT16: DType.F16, TensorProto.INT8: DType.I8,
    TensorProto.UINT8: DType.U8, TensorProto.INT16: DType.I16, TensorProto.INT32: DType.I32,
    TensorProto.INT64: DType.I64, TensorProto.BOOL: DType.BOOL, TensorProto.DOUBLE: DType.F64,
    TensorProto.UINT16: DType.U16, TensorProto.UINT32: DType.U32, TensorProto.UINT64: DType.U64,
    TensorProto.BFLOAT16: DType.BF16, TensorProto.FLOAT8E4M3FN: DType.F8E4M3FN,
    TensorProto.FLOAT8E4M3FNUZ: DType.F8E4M3FNUZ, TensorProto.FLOAT8E5M2: DType.F8E5M2,
    TensorProto.FLOAT8E5M2FNUZ: DType.F8E5M2FNUZ, TensorProto.FLOAT8E8M0: DType.F8E8M0,
    TensorProto.FLOAT4E2M1: DType.F4E2M1, TensorProto.INT4: DType.I4, TensorProto.UINT4: DType.U4,
    TensorProto.INT2: DType.I2, TensorProto.UINT2: DType.U2,
}


def onnx_dtype_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type).lower()


def to_ir_dtype(elem_type: int, what: str, loc: SourceLoc | None) -> DType:
    """The IR dtype of an ONNX element type; Unsupported for float64, strings, uint32 ..."""
    if elem_type not in ONNX_DTYPES:
        raise Unsupported(f"{what} has element type {onnx_dtype_name(elem_type)}, which the IR "
                          "does not have (supported: "
                          f"{', '.join(d.value for d in ONNX_DTYPES.values())})",
                          loc)
    return ONNX_DTYPES[elem_type]


def attribute_value(attr: onnx.AttributeProto) -> Any:
    """A Python value for an ONNX attribute: strings decoded, tensors as numpy arrays."""
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


class ConvertContext(Emitter):
    """State shared by the converters while one ONNX graph is imported."""

    def __init__(self, graph: Graph, opset: int, file: str, used: set[str]):
        super().__init__(graph)
        self.opset = opset
        self.file = file
        self.used = used                      # tensor names read by a node or a graph output
        self.env: dict[str, Operand] = {}
        self.node: onnx.NodeProto = onnx.NodeProto()
        self.node_name = ""
        self.loc = SourceLoc(file)
        self._attrs: dict[str, Any] = {}

    def begin(self, node: onnx.NodeProto, name: str) -> None:
        self.node, self.node_name = node, name
        self.loc = SourceLoc(self.file, name, node.op_type)
        self._attrs = {a.name: attribute_value(a) for a in node.attribute}

    # -- errors -----------------------------------------------------------------
    def unsupported(self, message: str, hint: str | None = None) -> Unsupported:
        return Unsupported(f"{self.node.op_type}: {message}", self.loc, hint)

    def invalid(self, message: str) -> InvalidModel:
        return InvalidModel(f"{self.node.op_type}: {message}", self.loc)

    # -- the current node -------------------------------------------------------
    def attr(self, name: str, default: Any = None) -> Any:
        return self._attrs.get(name, default)

    def has_attr(self, name: str) -> bool:
        return name in self._attrs

    def has_input(self, i: int) -> bool:
        return i < len(self.node.input) and self.node.input[i] != ""

    def num_inputs(self) -> int:
        return len(self.node.input)

    def input(self, i: int) -> Operand:
        if not self.has_input(i):
            raise self.invalid(f"input #{i} is missing")
        name = self.node.input[i]
        if name not in self.env:
            raise self.invalid(f"input '{name}' is not defined before its use")
        return self.env[name]

    def optional_input(self, i: int) -> Operand | None:
        return self.input(i) if self.has_input(i) else None

    def const_input(self, i: int, what: str) -> np.ndarray | None:
        """Input i as a constant array (None when absent); Unsupported when it is only known
        at run time, e.g. a shape computed from data."""
        x = self.optional_input(i)
        if x is None or isinstance(x, np.ndarray):
            return x
        raise self.unsupported(f"{what} (input '{self.node.input[i]}') must be a constant, but it "
                               "depends on run-time data (data-dependent shape)",
                               "fold the computation into a constant before export")

    def output_used(self, i: int) -> bool:
        return i < len(self.node.output) and self.node.output[i] in self.used

    # -- operands (shape, np_dtype, value, emit come from Emitter) -----------------
    def rank(self, x: Operand) -> int:
        return len(self.shape(x))

    def const(self, array: Any, like: Operand | None = None) -> np.ndarray:
        """A constant operand, in the dtype of `like` when given."""
        arr = np.asarray(array)
        return arr.astype(self.np_dtype(like)) if like is not None else arr
