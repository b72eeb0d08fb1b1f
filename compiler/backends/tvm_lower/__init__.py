"""Graph -> Relax lowering for the TVM backend, split by op family (importing this package
fills `LOWERINGS`), plus the CPU schedules applied after fusion."""
from compiler.backends.tvm_lower import (  # noqa: F401  (registration)
    dtypes,
    elementwise,
    indexing,
    ivit,
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
from compiler.backends.tvm_lower.registry import LOWERINGS, LowerCtx, lowers

__all__ = ["LOWERINGS", "LowerCtx", "lowers"]
