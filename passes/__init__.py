"""Graph -> Graph passes. Importing this package registers every pass in `passes.base.PASSES`."""
from passes import (  # noqa: F401  (registration)
    canonicalize,
    dyadic,
    einsum,
    fp16,
    fusion,
    gate,
    inplace,
    ivit,
    layout,
    lmul,
    lut,
    memory,
    qattention,
    qdq,
    quant_report,
    quantize,
    quantize_pipeline,
    range_analysis,
    recognize,
    select_masks,
    shiftadd,
    shiftadd_attention,
    table_islands,
    tabulate,
    tiles,
    verify_integer_only,
    weights,
)
from passes.base import PASSES, PassContext, run_pipeline

__all__ = ["PASSES", "PassContext", "run_pipeline"]
