"""The Python API: compile(model) -> CompiledModel; import_model and optimize for finer control."""
from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from compiler.diagnostics import InvalidInput, InvalidModel, Unsupported
from compiler.ir import Graph
from compiler.pipeline import (kernel_pipeline_for, pipeline_for, quantized_pipeline_for, with_integer_attention,
                               with_lmul, with_shiftadd_attention)
from compiler.runtime import CompiledModel, Signature
from compiler.target import Target

Progress = Callable[[str], None]


def _is_torch_module(model: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def import_model(model: Any, input_shapes: dict[str, Sequence[int]] | None = None,
                 example_inputs: Any = None) -> Graph:
    """An ONNX path or ModelProto, or a torch.nn.Module with `example_inputs` (or an already
    imported Graph) -> Graph."""
    if isinstance(model, Graph):
        return model
    if _is_torch_module(model):
        if example_inputs is None:
            raise InvalidModel(f"compiling a {type(model).__name__} needs example_inputs=(tensor, ...)")
        from frontends.torch import load_torch
        return load_torch(model, example_inputs)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if path.suffix.lower() == ".dyc":
            raise InvalidModel(f"{path} is already compiled; load it with compiler.load()")
        from frontends.onnx import load_onnx
        return load_onnx(path, _shapes(input_shapes))
    if type(model).__name__ == "ModelProto":
        from frontends.onnx import load_onnx
        return load_onnx(model, _shapes(input_shapes))
    raise Unsupported(f"cannot compile a {type(model).__name__}; expected an ONNX file path, an "
                      "onnx.ModelProto or a torch.nn.Module")


def _shapes(shapes: dict[str, Sequence[int]] | None) -> dict[str, tuple[int, ...]] | None:
    return {k: tuple(int(d) for d in v) for k, v in shapes.items()} if shapes else None


def optimize(g: Graph, target: Target | str = "llvm", *, passes: Sequence[str] | None = None,
             disable_passes: Sequence[str] = (), print_after: Sequence[str] = (),
             verify_each: bool = True, dump_dir: str | os.PathLike | None = None) -> Graph:
    """Run the target's pass pipeline (edited by `passes` / `disable_passes`)."""
    from passes import PassContext, run_pipeline
    from passes.base import resolve
    target = Target.parse(target) if isinstance(target, str) else target
    names = resolve(pipeline_for(target), passes, disable_passes)
    resolve(names, list(print_after))      # validates the names
    ctx = PassContext(verify_each=verify_each, print_after=frozenset(print_after),
                      dump_dir=Path(dump_dir) if dump_dir else None)
    return run_pipeline(g, names, ctx)


def optimize_quantized(g: Graph, target: Target, *, disable_passes: Sequence[str] = (),
                       print_after: Sequence[str] = (), verify_each: bool = True) -> Graph:
    """The target's passes over the integer graph (tabulate), minus `disable_passes`."""
    from passes import PassContext, run_pipeline
    from passes.base import resolve
    names = resolve(quantized_pipeline_for(target), None, disable_passes)
    ctx = PassContext(verify_each=verify_each, print_after=frozenset(print_after))
    return run_pipeline(g, names, ctx)


def lower_kernels(g: Graph, target: Target | str = "llvm", backend: str = "tvm", *,
                  disable_passes: Sequence[str] = (), print_after: Sequence[str] = (),
                  verify_each: bool = True, dump_dir: str | os.PathLike | None = None,
                  results: dict[str, Any] | None = None, lmul: str | None = None,
                  integer_attention: bool = False, shiftadd_attention: bool = False) -> Graph:
    """The kernel-level passes (fusion, layouts, tiles, the memory plan) for `backend` on `target`: the
    final IR, the program the executable runs. What analysis passes found (`memory`: the arena plan)
    goes into `results` when given. lmul="attention" adds the L-Mul pass (compiler.pipeline.with_lmul),
    integer_attention=True the one-pass integer attention (compiler.pipeline.with_integer_attention),
    shiftadd_attention=True the binary-code attention (compiler.pipeline.with_shiftadd_attention)."""
    from passes import PassContext, run_pipeline
    from passes.base import resolve
    target = Target.parse(target) if isinstance(target, str) else target
    names = with_integer_attention(with_lmul(kernel_pipeline_for(target, backend), lmul), target,
                                   integer_attention)
    names = resolve(with_shiftadd_attention(names, target, backend, shiftadd_attention), None, disable_passes)
    kernel_spec = None
    if backend == "tvm" and target.kind in ("llvm", "cuda"):
        from compiler.backends.tvm_fused import kernel_spec as spec_for
        kernel_spec = functools.partial(spec_for, target=target)      # the target decides VNNI, AMX or the GPU
    ctx = PassContext(target=target, kernel_spec=kernel_spec, verify_each=verify_each,
                      print_after=frozenset(print_after), dump_dir=Path(dump_dir) if dump_dir else None)
    g = run_pipeline(g, names, ctx)
    if results is not None:
        results.update(ctx.results)
    return g


def final_ir(model: Any, target: Target | str = "llvm", *, backend: str = "tvm", example_inputs: Any = None,
             input_shapes: dict[str, Sequence[int]] | None = None, passes: Sequence[str] | None = None,
             disable_passes: Sequence[str] = (), print_after: Sequence[str] = (), verify_each: bool = True,
             dump_dir: str | os.PathLike | None = None, quantize: str | None = None, calibration: Any = None,
             integer_only: bool = False, observer: str = "minmax", size_budget: float | None = None,
             latency_budget: float | None = None, accuracy_budget: float | str | None = None,
             labels: Any = None, progress: Progress | None = None, results: dict[str, Any] | None = None,
             lmul: str | None = None,
             shiftadd: int | None = None, shiftadd_kernel: str = "auto", lut: int | None = None,
             lut_table: str = "int8", integer_attention: bool = False,
             precision: str = "fp32", weight_bits: int = 8,
             shiftadd_attention: bool = False, keep_16bit: Sequence[str] = (),
             gelu_form: str = "auto", accuracy_metric: Any = None) -> tuple[Graph, Any]:
    """Every pass of a compile, in order: (the final IR, the quantization report or None). The kernel
    passes' analyses (the memory plan) go into `results` when given."""
    say = progress or (lambda _msg: None)
    check_precision(precision, quantize)
    target = Target.parse(target) if isinstance(target, str) else target
    t0 = time.perf_counter()
    g = import_model(model, input_shapes, example_inputs)
    say(f"imported {len(g.nodes)} nodes in {time.perf_counter() - t0:.2f}s")
    if quantize == "model":     # the model's own grids, read before constant folding (passes/qdq.py)
        g = optimize(g, target, passes=["fold_qdq"], disable_passes=disable_passes, print_after=print_after,
                     verify_each=verify_each)
    t0 = time.perf_counter()
    g = optimize(g, target, passes=passes, disable_passes=disable_passes, print_after=print_after,
                 verify_each=verify_each, dump_dir=dump_dir)
    say(f"optimized to {len(g.nodes)} nodes in {time.perf_counter() - t0:.2f}s")
    report = None
    if integer_attention and not integer_only:
        raise InvalidInput("integer_attention needs quantize='int8' and integer_only=True",
                           hint="add --quantize int8 --integer-only")
    if shiftadd_attention and (quantize is not None or lmul is not None):
        raise InvalidInput("shiftadd_attention rewrites float softmax attention: not with "
                           f"{'quantize' if quantize is not None else 'lmul'}",
                           hint="drop --quantize / --lmul, or --shiftadd-attention")
    if quantize is not None:
        t0 = time.perf_counter()
        g, report = quantize_model(g, quantize, calibration, integer_only, observer,
                                   size_budget=size_budget, latency_budget=latency_budget,
                                   accuracy_budget=accuracy_budget, labels=labels, target=target,
                                   disable_passes=disable_passes, print_after=print_after,
                                   verify_each=verify_each, dump_dir=dump_dir, shiftadd=shiftadd,
                                   shiftadd_kernel=shiftadd_kernel, lut=lut, lut_table=lut_table,
                                   weight_bits=weight_bits, keep_16bit=keep_16bit, gelu_form=gelu_form,
                                   accuracy_metric=accuracy_metric)
        say(f"quantized ({quantize}{', integer-only' if integer_only else ''}) to {len(g.nodes)} nodes "
            f"in {time.perf_counter() - t0:.2f}s")
        g = optimize_quantized(g, target, disable_passes=disable_passes, print_after=print_after,
                               verify_each=verify_each)
    elif integer_only or shiftadd or lut or weight_bits != 8 or keep_16bit:
        what = 'shiftadd' if shiftadd else 'lut' if lut else 'weight_bits' if weight_bits != 8 else \
            'keep_16bit' if keep_16bit else 'integer_only'
        raise InvalidInput(f"{what} needs quantize='int8'",
                           hint="add --quantize int8")
    elif size_budget is not None or latency_budget is not None or accuracy_budget is not None:
        raise InvalidInput("size_budget / latency_budget / accuracy_budget need quantize='mixed'",
                           hint="add --quantize mixed")
    if precision == "fp16":     # float16 compute, passes/fp16.py's float32 ops kept, the signature float32
        g = optimize(g, target, passes=["convert_fp16"], disable_passes=disable_passes, print_after=print_after,
                     verify_each=verify_each)
    if shiftadd_attention:
        from passes.einsum import find_chains
        if not find_chains(g):
            raise Unsupported("shiftadd_attention: no float softmax attention chain found (passes/einsum.py's "
                              "form: matmul(q, k^T) -> [scale] -> softmax -> matmul(., v), the scores read by "
                              "the chain only)")
    t0 = time.perf_counter()
    g = lower_kernels(g, target, backend, disable_passes=disable_passes, print_after=print_after,
                      verify_each=verify_each, results=results, lmul=lmul,
                      integer_attention=integer_attention, shiftadd_attention=shiftadd_attention)
    kernels = sum(1 for n in g.nodes if n.op.name == "k.fused")
    say(f"{kernels} kernels, {len(g.nodes)} nodes after fusion and layouts in {time.perf_counter() - t0:.2f}s")
    return g, report


def compile(model: Any, target: Target | str = "llvm", *, backend: str = "tvm",
            example_inputs: Any = None, input_shapes: dict[str, Sequence[int]] | None = None,
            passes: Sequence[str] | None = None, disable_passes: Sequence[str] = (),
            print_after: Sequence[str] = (), verify_each: bool = True,
            dump_dir: str | os.PathLike | None = None,
            quantize: str | None = None, calibration: Any = None, integer_only: bool = False,
            observer: str = "minmax", size_budget: float | None = None,
            latency_budget: float | None = None, accuracy_budget: float | str | None = None,
            labels: Any = None, progress: Progress | None = None, lmul: str | None = None,
            shiftadd: int | None = None, shiftadd_kernel: str = "auto", lut: int | None = None,
            lut_table: str = "int8", integer_attention: bool = False, precision: str = "fp32",
            weight_bits: int = 8, shiftadd_attention: bool = False,
            keep_16bit: Sequence[str] = (), gelu_form: str = "auto",
            accuracy_metric: Any = None) -> CompiledModel:
    """Compile a model for `target` ("llvm", "llvm -mcpu=znver4 -num-threads=1") and return a
    CompiledModel. `model` is an ONNX path or ModelProto, or a torch.nn.Module traced on
    `example_inputs`.

    quantize="int8" rewrites the graph to integer arithmetic with dyadic requantization,
    calibrated on `calibration` (an iterable of input batches, or an .npz path); `observer` is
    minmax, percentile or mse; integer_only=True fails unless every op between the input
    quantize and the output dequantize is an integer op. The per-layer report is `cm.report`.
    quantize="mixed" is the same with each layer's weights chosen by the HAWQV3 ILP (passes.mixed_precision)
    among int8, int4 (convs), 4- or 2-bit LUT (linear layers: q.lut_matmul, packed) and 2- or 1-term shift/add,
    under size_budget and/or latency_budget, fractions of the all-INT8 weight bytes / latency (e.g. 0.7), and/or
    accuracy_budget, a fraction of the outputs' mean square that the summed per-layer output perturbation
    (measured on `calibration`) may reach (e.g. 0.01); with it the ILP minimizes the multiplies, else the
    perturbation. accuracy_budget="0.5pt" (top-1 points lost against FP32 on the calibration data, labelled
    by `labels`, one class index per calibration sample in order, or the .npz's `labels` array) or "cos0.99"
    (the final output's minimum cosine with FP32 there) searches that bound: candidate plans are built and
    measured (passes/accuracy_budget.py), and the one with the fewest multiplies within the budget is kept.
    lut_table and shiftadd_kernel apply to the chosen layers. The plan is `cm.report.plan`; a budget no plan
    meets raises InfeasibleBudget (an InvalidInput) naming it.
    quantize="model" takes the quantization the model already has (onnxruntime's QDQ or QOperator
    format: QuantizeLinear/DequantizeLinear, QLinearConv, QLinearMatMul, ...): its scales and zero points
    become the grids of the same integer rewrite (passes/qdq.py), no calibration needed; with
    integer_only=True the result is integer-only.
    lmul="attention" makes attention's matmuls (Q K^T, P V) L-Mul matmuls: each multiply one integer
    add of the float bits, 3-bit mantissa (passes/lmul.py).
    shiftadd_attention=True (float; the tvm and mlir backends, llvm and cuda) replaces each softmax attention by ShiftAddViT's
    binary-code linear attention, post-training: codes [Q > 0], [K > 0], out = Q (K^T V) normalized, V in
    int8, every product with a code a masked add (mfree.binary_attention; passes/shiftadd_attention.py).
    It changes the model's output (no retraining): measure it on your data.
    shiftadd=1|2 (with quantize="int8") re-expresses every conv / linear weight per output channel as
    sums of 1 or 2 signed powers of two fitted to the layer's output on the calibration data
    (passes/shiftadd.py); shiftadd_kernel "vnni" or "shift" picks the kernel that runs them, "auto" per
    layer the one predicted faster (the learned int8 VNNI model against the measured shift-kernel model,
    costmodel/shiftadd.py; the shift kernel on a CPU without VNNI). The per-layer fit, both predictions and
    the choice are `cm.report.shiftadd`.
    lut=1|2|3|4 (with quantize="int8") makes every linear layer (q.matmul with a constant weight) a
    q.lut_matmul: b-bit weights in groups of 128 rows with integer group scales, computed by table lookup
    (T-MAC; passes/lut.py); lut_table "int8" (T-MAC's quantized tables) or "int16" (exact tables). The
    per-layer requantization is `cm.report.lut`.
    weight_bits=4 (with quantize="int8") quantizes every conv / linear weight to 4 bits (symmetric per output
    channel): linear layers are stored two weights per byte and run the int4 VNNI matmul (half the weight
    bytes streamed; tvm_kernels/qmatmul_int4.py), convs keep int8 containers. Activations stay 8-bit.
    keep_16bit=["conv_0", "first", "last"] ("first:N", "last:N", "all"; with quantize="int8") keeps those conv /
    matmul layers' input and output activations (and an activation computed from such an output alone) on int16
    symmetric grids (HAWQV3's per-layer activation bits; the layers the report's "lost dB" column names):
    int16 x int8 -> int32 accumulation, q.requant into int16, 65536-entry tables, still integer-only; a value a
    long reduction reads takes as many int16 levels as keep its int32 accumulator provable.
    keep_16bit=["auto:cos0.99"] (or "auto", "auto:0.5pt" with labels) chooses the fewest layers that meet that
    budget on the calibration data (passes/keep_16bit_search.py; the result is cm.report.keep_16bit).
    "auto:metric0.05" bounds your own loss instead: accuracy_metric(fp32_outputs, quantized_outputs) -> float
    (lower is better; each a list of numpy arrays, the graph's outputs on one calibration batch), at most 0.05 on
    every batch (accuracy_budget takes it too). The TVM backend runs the int16 convs and linear layers on
    vpdpwssd kernels.
    integer_attention=True (with quantize="int8", integer_only=True; llvm and cuda) runs each integer attention in
    one pass over key blocks, Shiftmax inside the running recurrence (passes/qattention.py): off by
    default, its result is not the unfused integer attention's (within 4 LSB, closer to float).
    precision="fp16" (without quantize) computes in float16: weights stored as float16, inputs cast at
    entry and outputs back at exit (the signature stays float32), the ops whose numerics need float32
    (softmax, layer norm, sum / mean reductions, exp, log, pow...: passes/fp16.py lists them) kept in
    float32 between casts; on cuda the float16 matmuls and convs can use tensor cores.

    Raises InvalidModel (bad file), InvalidInput, Unsupported (op or feature), BackendToolError."""
    from compiler.backends import get_backend
    say = progress or (lambda _msg: None)
    target = Target.parse(target) if isinstance(target, str) else target
    be = get_backend(backend)
    results: dict[str, Any] = {}
    g, report = final_ir(model, target, backend=backend, example_inputs=example_inputs,
                         input_shapes=input_shapes, passes=passes, disable_passes=disable_passes,
                         print_after=print_after, verify_each=verify_each, dump_dir=dump_dir,
                         quantize=quantize, calibration=calibration, integer_only=integer_only,
                         observer=observer, size_budget=size_budget, latency_budget=latency_budget,
                         accuracy_budget=accuracy_budget, labels=labels,
                         progress=progress, results=results, lmul=lmul, shiftadd=shiftadd,
                         shiftadd_kernel=shiftadd_kernel, lut=lut, lut_table=lut_table,
                         integer_attention=integer_attention, precision=precision, weight_bits=weight_bits,
                         shiftadd_attention=shiftadd_attention, keep_16bit=keep_16bit, gelu_form=gelu_form,
                         accuracy_metric=accuracy_metric)
    missing = sorted({n.op.name for n in g.walk()} - {op.name for op in be.supported_ops()})
    if missing:
        raise Unsupported(f"backend {backend} cannot lower: {', '.join(missing)}")
    t0 = time.perf_counter()
    exe = be.build(g, target)
    say(f"generated code for {target} in {time.perf_counter() - t0:.2f}s")
    cm = CompiledModel(exe, Signature.of(g), target, backend, str(g), g)
    cm.report = report
    cm.memory_plan = results.get("memory")
    return cm


QUANTIZE_MODES = ("int8", "mixed", "model")
PRECISIONS = ("fp32", "fp16")


def check_precision(precision: str, quantize: str | None) -> None:
    """precision is fp32 or fp16, and fp16 goes without quantize (an integer graph has no float16 to
    compute in)."""
    if precision not in PRECISIONS:
        raise InvalidInput(f"precision={precision!r}; expected one of: {', '.join(PRECISIONS)}")
    if precision == "fp16" and quantize is not None:
        raise InvalidInput(f"precision='fp16' cannot be combined with quantize={quantize!r}",
                           hint="drop --precision fp16 (a quantized model computes in integers) or --quantize")


def quantize_model(g: Graph, mode: str, calibration: Any, integer_only: bool,
                   observer: str = "minmax", *, size_budget: float | None = None,
                   latency_budget: float | None = None, accuracy_budget: float | str | None = None,
                   labels: Any = None, target: Target | None = None,
                   disable_passes: Sequence[str] = (), print_after: Sequence[str] = (),
                   verify_each: bool = True, dump_dir: str | os.PathLike | None = None,
                   shiftadd: int | None = None, shiftadd_kernel: str = "auto", lut: int | None = None,
                   lut_table: str = "int8", weight_bits: int = 8,
                   keep_16bit: Sequence[str] = (), gelu_form: str = "auto",
                   accuracy_metric: Any = None) -> tuple[Graph, Any]:
    """The quantization passes (compiler.pipeline.QUANTIZE: calibrate and annotate, dyadic, ivit for
    integer-only, cleanup) over the canonicalized `g`; then the integer-only certificate and the
    overflow bounds. Returns the graph and a lazy per-layer report.
    mode "mixed": per-layer int8 / int4 / LUT / shift-add weights from the HAWQV3 ILP under the budgets
    (fractions of the all-INT8 weight bytes / latency, of the outputs' mean square for accuracy); the report
    then carries the plan; accuracy_budget may also be "0.5pt" (with `labels`) or "cos0.99"
    (passes.accuracy_budget). shiftadd=1|2: the
    shiftadd pass's power-of-two weights, run by `shiftadd_kernel` (the report carries its fit).
    keep_16bit: conv / matmul node names (or "first" / "last") whose activations stay int16, or "auto[:BUDGET]"
    (QuantConfig.keep_16bit; mode "int8" only). gelu_form: an integer-only GELU's form, "auto" (the exact
    8-bit table or ShiftGELU, whichever passes/activation_forms.py finds as accurate and cheaper), "table", "shift"."""
    from compiler.calibration import batches_for
    from compiler.pipeline import quantize_passes
    from passes import PassContext, run_pipeline
    from passes.base import resolve
    from passes.quantize import QuantConfig, QuantRequest
    from passes.range_analysis import check_ranges
    from passes.verify_integer_only import float_reason, verify_integer_only
    if mode not in QUANTIZE_MODES:
        raise Unsupported(f"quantize={mode!r}; supported: {', '.join(QUANTIZE_MODES)}")
    if mode != "mixed" and any(b is not None for b in (size_budget, latency_budget, accuracy_budget)):
        raise InvalidInput("size_budget / latency_budget / accuracy_budget need quantize='mixed'")
    if mode == "mixed" and (shiftadd or lut):
        raise InvalidInput(f"quantize='mixed' chooses LUT and shift/add weights per layer itself; "
                           f"{'shiftadd' if shiftadd else 'lut'}= would rewrite every layer",
                           hint="drop --shiftadd / --lut (--lut-table and --shiftadd-kernel still apply)")
    if shiftadd not in (None, 0, 1, 2) or shiftadd_kernel not in ("auto", "vnni", "shift"):
        raise InvalidInput(f"shiftadd={shiftadd!r}, shiftadd_kernel={shiftadd_kernel!r}",
                           hint="shiftadd takes 1 or 2 terms; shiftadd_kernel auto, vnni or shift")
    if lut not in (None, 0, 1, 2, 3, 4) or lut_table not in ("int8", "int16"):
        raise InvalidInput(f"lut={lut!r}, lut_table={lut_table!r}", hint="lut takes 1-4 bits; lut_table int8 or int16")
    if weight_bits not in (4, 8) or (weight_bits != 8 and mode != "int8"):
        raise InvalidInput(f"weight_bits={weight_bits!r} with quantize={mode!r}",
                           hint="weight_bits is 8 or 4, and 4 goes with quantize='int8' (mixed chooses per layer)")
    if isinstance(keep_16bit, str):         # "first,last" or "auto:cos0.99", as the CLI takes it
        keep_16bit = [x.strip() for x in keep_16bit.split(",") if x.strip()]
    keep_16bit = tuple(keep_16bit or ())
    if keep_16bit and mode != "int8":
        raise InvalidInput(f"keep_16bit with quantize={mode!r}", hint="--keep-16bit goes with --quantize int8")
    batches = [] if mode == "model" and calibration is None else batches_for(calibration, g)
    auto = None
    if keep_16bit:
        from compiler.calibration import labels_for
        from passes.keep_16bit_search import auto_budget
        auto = auto_budget(keep_16bit, labels_for(calibration, labels), accuracy_metric)
    if mode == "mixed" and accuracy_budget is not None:      # "0.5pt" / "cos0.99": an AccuracyTarget
        from compiler.calibration import labels_for
        from passes.accuracy_budget import parse_accuracy_budget
        accuracy_budget = parse_accuracy_budget(accuracy_budget, labels_for(calibration, labels),
                                                metric=accuracy_metric)
    budgets = {k: v for k, v in (("size", size_budget), ("latency", latency_budget),
                                 ("accuracy", accuracy_budget), ("keep_16bit", auto)) if v is not None}
    request = QuantRequest(mode, QuantConfig(observer=observer, integer_only=integer_only,
                                             weight_bits=None if weight_bits == 8 else weight_bits,
                                             keep_16bit=keep_16bit, gelu_form=gelu_form), shiftadd or 0,
                           shiftadd_kernel)
    if lut or mode == "mixed":          # a mixed plan's LUT layers take lut_table
        from passes.lut import LutRequest
        request = LutRequest(**vars(request), lut=lut or 0, lut_table=lut_table)
    ctx = PassContext(target=target, calibration=batches, budgets=budgets, quant=request,
                      verify_each=verify_each, print_after=frozenset(print_after),
                      dump_dir=Path(dump_dir) if dump_dir else None)
    names = resolve(quantize_passes(integer_only), None, disable_passes)
    qg = run_pipeline(g, names, ctx)
    plan = ctx.results.get("plan")
    if plan is not None:
        from passes.mixed_precision import check_bits
        check_bits(qg, plan)
    if integer_only:
        bad = verify_integer_only(qg)
        if bad:
            listed = "; ".join(f"{n.op.name} '{n.name}'" + (f" ({why})" if (why := float_reason(n)) else "")
                               for n in bad[:10])
            more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
            raise Unsupported(f"the graph is not integer-only: float ops remain at {listed}{more}",
                              hint="these ops have no integer form yet; drop --integer-only to keep "
                                   "them in float between dequantize/quantize")
    problems = check_ranges(qg)
    if problems:
        raise Unsupported("integer overflow is possible: " + "; ".join(problems[:5]))
    report = QuantReport(g, qg, batches, plan)
    report.keep_16bit = ctx.results.get("keep_16bit")
    report.shiftadd = ctx.results.get("shiftadd")
    report.lut = ctx.results.get("lut")
    return qg, report


class QuantReport:
    """Per-layer scale, bits and SQNR of the integer graph against the float one on the
    calibration data; computed on first use (it runs both graphs in the interpreter).
    `plan` is the mixed-precision plan (passes.mixed_precision.MixedPlan) or None."""

    def __init__(self, float_graph: Graph, int_graph: Graph, batches: list, plan: Any = None):
        self._args = (float_graph, int_graph, batches)
        self._rows: list[dict] | None = None
        self.plan = plan
        self.shiftadd: list[dict] | None = None     # per layer, when shift/add weights were fitted
        self.lut: list[dict] | None = None          # per layer, when LUT low-bit weights were made
        self.keep_16bit: Any = None                 # passes.keep_16bit_search.Keep16Search of --keep-16bit auto

    @property
    def rows(self) -> list[dict]:
        if self._rows is None:
            from passes.quant_report import report
            self._rows = report(*self._args)
        return self._rows

    def __str__(self) -> str:
        from passes.quant_report import format_report
        table = format_report(self.rows)
        return f"{self.plan}\n\n{table}" if self.plan is not None else table


def stderr_progress(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)
