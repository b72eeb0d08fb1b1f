"""The op set. Importing this package registers every op; `OPS` maps names to OpDefs."""
from compiler.ops import (elementwise, ivit, kernel, layout, linalg, nn, quant, reduce,  # noqa: F401
                          shape)
from compiler.ops.registry import Attr, OpDef, TypeRuleError, all_ops, get_op

__all__ = ["Attr", "OpDef", "TypeRuleError", "all_ops", "get_op", "elementwise", "linalg", "nn",
           "reduce", "shape"]
