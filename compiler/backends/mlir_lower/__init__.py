"""Graph -> MLIR lowering for the MLIR (IREE) backend, split by op family; importing this
package fills `LOWERINGS`."""
from compiler.backends.mlir_lower import elementwise, ivit, kernel, linalg, nn, quant, reduce, shape, signal  # noqa: F401
from compiler.backends.mlir_lower.registry import LOWERINGS, LowerCtx, lowers

__all__ = ["LOWERINGS", "LowerCtx", "lowers"]
