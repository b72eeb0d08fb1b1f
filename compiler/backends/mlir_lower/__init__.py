"""Graph -> MLIR lowering for the MLIR (IREE) backend, split by op family; importing this
package fills `LOWERINGS`."""
from compiler.backends.mlir_lower import (  # noqa: F401
    binary_attention,
    elementwise,
    indexing,
    ivit,
    kernel,
    linalg,
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
from compiler.backends.mlir_lower.registry import LOWERINGS, LowerCtx, lowers

__all__ = ["LOWERINGS", "LowerCtx", "lowers"]
