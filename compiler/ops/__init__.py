"""The op set. Importing this package registers every op; `OPS` maps names to OpDefs."""
from compiler.ops import (  # noqa: F401  (registration)
    bitcast,
    bitwise,
    elementwise,
    indexing,
    ivit,
    kernel,
    layout,
    linalg,
    lmul,
    lut,
    mfree,
    nn,
    qattention,
    quant,
    recurrent,
    reduce,
    sampling,
    shape,
    signal,
    unary_math,
)
from compiler.ops.registry import Attr, OpDef, TypeRuleError, all_ops, get_op

__all__ = ["Attr", "OpDef", "TypeRuleError", "all_ops", "bitwise", "elementwise", "get_op",
           "indexing", "linalg", "lmul", "nn", "recurrent", "reduce", "shape", "unary_math"]
