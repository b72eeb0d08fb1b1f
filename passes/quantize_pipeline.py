"""The quantization passes and drivers: the `annotate` pass of the compile pipeline (calibration and
annotation; with --quantize mixed, the ILP's per-layer weight realizations first: the int4 grids here, the LUT
and shift/add layers by the `lut` and `shiftadd` passes, which read the plan), and `quantize_graph` /
`quantize_mixed`, the same steps as one call (canonicalize -> calibrate -> annotate -> dyadic -> ivit ->
cleanup -> checks) for scripts and tests. The primitives live in passes/quantize.py (calibration,
annotation) and passes/mixed_precision.py (the plan)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from compiler.diagnostics import InvalidInput
from compiler.ir import Graph
from passes.accuracy_budget import AccuracyTarget, parse_accuracy_budget, search_plan
from passes.base import PassContext, register_pass, run_pipeline
from passes.canonicalize import dead_code, fold_constants
from passes.dyadic import dyadic_rewrite
from passes.ivit import GELU_CHOOSERS, rewrite_islands
from passes.mixed_precision import (
    REALIZATIONS,
    Choice,
    LatencyFn,
    MixedPlan,
    check_bits,
    plan_mixed,
    with_weight_bits,
)
from passes.qdq import require_model_grids
from passes.keep_16bit_search import search_keep_16bit
from passes.quantize import QuantConfig, QuantRequest, Stats, annotate, batch_args, calibrate, integer_layers
from passes.range_analysis import overflowing_nodes, range_analysis
from passes.table_islands import table_islands
from passes.verify_integer_only import verify_integer_only_pass


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
    stats = None
    if req.mode == "mixed":
        accuracy = ctx.budgets.get("accuracy")
        kw = dict(size_budget=ctx.budgets.get("size"), latency_budget=ctx.budgets.get("latency"),
                  realizations=REALIZATIONS, target=None if ctx.target is None else str(ctx.target),
                  lut_group=getattr(req, "lut_group", 128), pow2_kernel=pow2_kernel(req.shift_kernel, ctx.target))
        if isinstance(accuracy, AccuracyTarget):
            # points / cosine: candidate plans are built and measured; weight grids leave the activations' stats
            stats = calibrate(g, batches, req.config.observer, req.config.percentile, req.config.bits)
            plan = search_plan(g, batches, accuracy, lambda p: integer_graph(g, p, stats, ctx), **kw)
        else:
            plan = plan_mixed(g, batches, accuracy_budget=accuracy, **kw)
        ctx.results["plan"] = plan
        g = with_weight_bits(g, plan, req.config)
    if stats is None:
        stats = calibrate(g, batches, req.config.observer, req.config.percentile, req.config.bits)
    ctx.results["stats"] = stats
    config = req.config
    if isinstance(ctx.budgets.get("keep_16bit"), AccuracyTarget):      # --keep-16bit auto[:BUDGET]
        search = search_keep_16bit(g, batches, ctx.budgets["keep_16bit"], [n.name for n in integer_layers(g)],
                                   lambda keep: integer_graph(g, None, stats, ctx, replace(config, keep_16bit=keep)),
                                   lambda ig: {n.name for n in overflowing_nodes(ig)})
        ctx.results["keep_16bit"] = search
        config = replace(config, keep_16bit=search.layers)
    return annotate(g, stats, config)


def integer_graph(g: Graph, plan: MixedPlan | None, stats: Stats, ctx: PassContext,
                  config: QuantConfig | None = None) -> Graph:
    """The integer graph a compile makes of the float `g` under `plan` (None: no mixed plan) and `config` (default
    the request's): its weight grids, annotate with `stats`, then the quantization passes after annotate (dyadic,
    ivit when integer-only, table_islands, shiftadd, lut, cleanup), run directly (no pass observers, no
    verification) with the plan in a context of their own."""
    from compiler.pipeline import quantize_passes
    from passes.base import PASSES
    req: QuantRequest = ctx.quant
    config = config or req.config
    sub = PassContext(target=ctx.target, calibration=ctx.calibration, quant=replace(req, config=config),
                      results={"plan": plan} if plan is not None else {})
    ig = annotate(with_weight_bits(g, plan, config) if plan is not None else g, stats, config)
    names = quantize_passes(config.integer_only)
    for name in names[names.index("annotate") + 1:]:
        p = PASSES[name]
        ig = p.fn(ig, sub) if p.wants_context else p.fn(ig)
    return ig


def pow2_kernel(shift_kernel: str, target: Any) -> str:
    """The kernel that runs shift/add weights: `shift_kernel` unless "auto", else the target's rule
    (passes.shiftadd.choose_realization; no target: this host)."""
    if shift_kernel != "auto":
        return shift_kernel
    from compiler.target import Target
    from passes.shiftadd import choose_realization
    return choose_realization(target if isinstance(target, Target) else Target.parse(str(target or "llvm")))


# -- the driver -----------------------------------------------------------------------------
def quantize_graph(g: Graph, batches: Iterable[Any], config: QuantConfig | None = None,
                   rewrite: Callable[[Graph], Graph] | None = None) -> tuple[Graph, Stats]:
    """calibrate -> annotate -> dyadic -> [rewrite] -> fold_constants, dead_code. `g` is canonicalized first
    (BatchNorm folded). With config.integer_only, raises Unsupported naming every float node
    left, or any accumulator that range analysis cannot prove free of overflow."""
    from compiler.pipeline import CANONICALIZE
    config = config or QuantConfig()
    g = run_pipeline(g, CANONICALIZE)
    stats = calibrate(g, batches, config.observer, config.percentile, config.bits)
    ig = dyadic_rewrite(annotate(g, stats, config))
    if config.integer_only:
        ig = rewrite_islands(ig, GELU_CHOOSERS[config.gelu_form])   # softmax / gelu / layer_norm / tanh -> I-ViT ops
    ig = table_islands(ig)
    if rewrite is not None:
        ig = rewrite(ig)
    ig = dead_code(fold_constants(ig))
    if config.integer_only:
        verify_integer_only_pass(ig)
    range_analysis(ig)
    return ig, stats


def quantize_mixed(g: Graph, batches: Iterable[Any], size_budget: float | None = None,
                   latency_budget: float | None = None, bops_budget: float | None = None, *,
                   accuracy_budget: float | str | AccuracyTarget | None = None, realizations: Iterable[Choice] = (),
                   config: QuantConfig | None = None, latency: LatencyFn | None = None,
                   sensitivity: Mapping[str, float] | None = None,
                   ties: Iterable[Sequence[str]] | None = None, keep_8bit: Iterable[str] = (),
                   sensitivity_batches: int = 4, target: Any = None, shift_kernel: str = "auto",
                   lut_table: str = "int8") -> tuple[Graph, MixedPlan]:
    """canonicalize -> plan (sensitivity, costs, ILP) -> per-layer weight grids (4-bit: DType.I4,
    symmetric per channel in [-7, 7], stored in int8) -> `quantize_graph` (calibrate, annotate,
    dyadic, the `shiftadd` and `lut` passes for the plan's pow2x<t> / lut<b> layers, cleanup, range
    analysis). Returns the integer graph and the plan. `realizations` (e.g. REALIZATIONS) adds those choices.
    Budgets are fractions of the all-INT8 cost (size: weight bytes; latency: seconds from
    `latency`, default the cost model's prediction for `target`; bops: MACs * b_w * b_a); accuracy_budget of
    the outputs' mean square (passes/mixed_precision.py), or an AccuracyTarget (top-1 points lost, cosine with
    FP32: `passes.accuracy_budget.parse_accuracy_budget`), met by `search_plan` over built plans."""
    from compiler.pipeline import CANONICALIZE
    from passes.lut import LutRequest
    config = config or QuantConfig()
    batches = list(batches)
    accuracy_budget = parse_accuracy_budget(accuracy_budget)     # "0.01", "cos0.99" or an AccuracyTarget
    fg = run_pipeline(g, CANONICALIZE)

    def build(plan: MixedPlan) -> Graph:
        ctx = PassContext(calibration=[batch_args(fg, b) for b in batches], results={"plan": plan},
                          quant=LutRequest("mixed", config, shift_kernel=shift_kernel, lut_table=lut_table))
        ig, _stats = quantize_graph(with_weight_bits(fg, plan, config), batches, config,
                                    rewrite=lambda ig: run_pipeline(ig, ["shiftadd", "lut"], ctx))
        return ig

    kw = dict(size_budget=size_budget, latency_budget=latency_budget, bops_budget=bops_budget,
              realizations=realizations, latency=latency, sensitivity=sensitivity, ties=ties, keep_8bit=keep_8bit,
              sensitivity_batches=sensitivity_batches, target=target, pow2_kernel=pow2_kernel(shift_kernel, target))
    if isinstance(accuracy_budget, AccuracyTarget):
        plan = search_plan(fg, batches, accuracy_budget, build, **kw)
    else:
        plan = plan_mixed(fg, batches, accuracy_budget=accuracy_budget, **kw)
    ig = build(plan)
    check_bits(ig, plan)
    return ig, plan
