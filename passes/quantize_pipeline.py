"""The quantization passes and drivers: the `annotate` pass of the compile pipeline (calibration and
annotation; with --quantize mixed, the ILP's per-layer weight bits first), and `quantize_graph` /
`quantize_mixed`, the same steps as one call (canonicalize -> calibrate -> annotate -> dyadic -> ivit ->
cleanup -> checks) for scripts and tests. The primitives live in passes/quantize.py (calibration,
annotation) and passes/mixed_precision.py (the plan)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compiler.diagnostics import InvalidInput
from compiler.ir import Graph
from passes.base import register_pass, run_pipeline
from passes.canonicalize import dead_code, fold_constants
from passes.dyadic import dyadic_rewrite
from passes.ivit import ivit_rewrite
from passes.mixed_precision import LatencyFn, MixedPlan, check_bits, plan_mixed, with_weight_bits
from passes.qdq import require_model_grids
from passes.quantize import QuantConfig, Stats, annotate, calibrate
from passes.range_analysis import range_analysis
from passes.table_islands import table_islands
from passes.verify_integer_only import verify_integer_only_pass


@dataclass(frozen=True)
class QuantRequest:
    """What a quantizing compile asked for: "int8", "mixed" (4/8-bit weights from the HAWQV3 ILP under
    PassContext.budgets) or "model" (the model's own QDQ grids, passes/qdq.py; no calibration), and the
    calibration config. shiftadd: 0, or 1 / 2 power-of-two terms per weight
    (passes/shiftadd.py); shift_kernel: which kernel runs those layers ("auto": the target's rule, "vnni",
    "shift")."""

    mode: str
    config: QuantConfig
    shiftadd: int = 0
    shift_kernel: str = "auto"


@register_pass("annotate")
def annotate_pass(g: Graph, ctx) -> Graph:
    """Calibrate on the context's batches and annotate every value that becomes integer (with
    --quantize mixed, the ILP's per-layer weight bits first); a no-op without --quantize."""
    req: QuantRequest | None = ctx.quant
    if req is None:
        return g
    if req.mode == "model":                 # the model's own grids, read by fold_qdq (passes/qdq.py)
        return require_model_grids(g)
    if ctx.calibration is None:
        raise InvalidInput("quantizing needs calibration batches")
    batches = list(ctx.calibration)
    if req.mode == "mixed":
        plan = plan_mixed(g, batches, ctx.budgets.get("size"), ctx.budgets.get("latency"),
                          target=None if ctx.target is None else str(ctx.target))
        ctx.results["plan"] = plan
        g = with_weight_bits(g, plan, req.config)
    stats = calibrate(g, batches, req.config.observer, req.config.percentile, req.config.bits)
    ctx.results["stats"] = stats
    return annotate(g, stats, req.config)


# -- the driver -----------------------------------------------------------------------------
def quantize_graph(g: Graph, batches: Iterable[Any], config: QuantConfig | None = None) -> tuple[Graph, Stats]:
    """calibrate -> annotate -> dyadic -> fold_constants, dead_code. `g` is canonicalized first
    (BatchNorm folded). With config.integer_only, raises Unsupported naming every float node
    left, or any accumulator that range analysis cannot prove free of overflow."""
    from compiler.pipeline import CANONICALIZE
    config = config or QuantConfig()
    g = run_pipeline(g, CANONICALIZE)
    stats = calibrate(g, batches, config.observer, config.percentile, config.bits)
    ig = dyadic_rewrite(annotate(g, stats, config))
    if config.integer_only:
        ig = ivit_rewrite(ig)       # softmax / gelu / layer_norm / tanh islands -> I-ViT integer ops
    ig = dead_code(fold_constants(table_islands(ig)))
    if config.integer_only:
        verify_integer_only_pass(ig)
    range_analysis(ig)
    return ig, stats


def quantize_mixed(g: Graph, batches: Iterable[Any], size_budget: float | None = None,
                   latency_budget: float | None = None, bops_budget: float | None = None, *,
                   config: QuantConfig | None = None, latency: LatencyFn | None = None,
                   sensitivity: Mapping[str, float] | None = None,
                   ties: Iterable[Sequence[str]] | None = None, keep_8bit: Iterable[str] = (),
                   sensitivity_batches: int = 4, target: Any = None) -> tuple[Graph, MixedPlan]:
    """canonicalize -> plan (sensitivity, costs, ILP) -> per-layer weight grids (4-bit: DType.I4,
    symmetric per channel in [-7, 7], stored in int8) -> `quantize_graph` (calibrate, annotate,
    dyadic, cleanup, range analysis). Returns the integer graph and the plan.
    Budgets are fractions of the all-INT8 cost (size: weight bytes; latency: seconds from
    `latency`, default the cost model's prediction for `target`; bops: MACs * b_w * b_a)."""
    from compiler.pipeline import CANONICALIZE
    config = config or QuantConfig()
    batches = list(batches)
    fg = run_pipeline(g, CANONICALIZE)
    plan = plan_mixed(fg, batches, size_budget, latency_budget, bops_budget, latency=latency,
                      sensitivity=sensitivity, ties=ties, keep_8bit=keep_8bit,
                      sensitivity_batches=sensitivity_batches, target=target)
    ig, _stats = quantize_graph(with_weight_bits(fg, plan, config), batches, config)
    check_bits(ig, plan)
    return ig, plan
