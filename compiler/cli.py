"""The `compile` command line. Exit codes: 0 ok, 1 internal error, 2 invalid model or input,
3 unsupported, 4 backend tool failed, 5 numerics check failed."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from compiler.diagnostics import InvalidInput, InvalidModel

EMIT_CHOICES = ("ir", "einsum", "relax", "tir", "asm", "mlir", "cuda", "ptx")
VERBS = ("run", "bench", "report")    # `compile VERB --help` for each

EPILOG = """\
verbs (each has its own --help, e.g. `compile bench --help`):
  compile model.onnx --target llvm -o model.dyc          compile (the flags above)
  compile run model.dyc --input input=x.npy -o out.npz   run a compiled model (or --random inputs)
  compile bench model.dyc --compare model.onnx --profile latency vs onnxruntime; per kernel: IR op,
                                                         time, GFLOP/s (GOP/s), share of the roofline
  compile report model.onnx --quantize int8 --data calib.npz -o report/
                                                         HTML page with PNG plots, text and JSON report
  compile tune-costmodel --target llvm --budget 300      measure kernels here, retrain the tile cost model

more examples:
  compile model.onnx --emit ir                      print the optimized IR and stop
  compile model.onnx --target 'cuda -arch=sm_90' -o model.dyc    NVIDIA GPU (builds without one)
  compile model.onnx --target cuda --emit ptx       print the PTX (needs nvcc)
  compile model.onnx --input-shape input=1x3x224x224
  compile model.onnx --disable-pass fold_batch_norm --print-after fold_constants
  compile model.onnx --quantize int8 --calibration calib.npz --integer-only --report -o m.dyc
  compile model.onnx --quantize mixed --calibration calib.npz --size-budget 0.6 --accuracy-budget 0.01 --report
                                                    per layer int8 / int4 / LUT / shift-add by the ILP
  compile model.onnx --quantize mixed --calibration calib.npz --accuracy-budget 0.5pt --shiftadd-kernel shift
                                                    the fewest multiplies losing <= 0.5 top-1 points on the
                                                    calibration data (its `labels` array); or cos0.99

exit codes: 0 ok, 1 internal error, 2 invalid model or input (also a --*-budget no plan meets),
            3 unsupported op or feature, 4 a backend tool failed, 5 --check found a numerics mismatch
"""


def build_parser() -> argparse.ArgumentParser:
    from passes import PASSES
    p = argparse.ArgumentParser(
        prog="compile", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Compile an ONNX model into one executable file (.dyc) for CPU (llvm) or GPU.")
    p.add_argument("model", help="the ONNX model file (.onnx)")
    p.add_argument("--target", default="llvm", metavar="TARGET",
                   help="'llvm' (host CPU; options -mcpu=NAME, -num-threads=N, -fast-tier=off|l2|BYTES), e.g. "
                        "--target 'llvm -mcpu=znver4'; 'cuda -arch=sm_80|sm_86|sm_89|sm_90' (NVIDIA GPU, "
                        "default sm_80; builds without a GPU, runs only on one; option -int8=mma|dp4a: integer "
                        "convs / matmuls on int8 tensor cores, the default, or with dp4a; option -mma=sync|wmma: "
                        "tensor cores through mma.sync and ldmatrix, the default, or through WMMA). "
                        "Default: llvm")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write the compiled model. Default: MODEL's stem + .dyc in the "
                        "current directory")
    p.add_argument("--backend", default="tvm", choices=["tvm", "mlir"],
                   help="code generator: tvm, or mlir (linalg/arith through IREE). Default: tvm")
    p.add_argument("--emit", choices=EMIT_CHOICES,
                   help="print an intermediate form to stdout and stop: ir (the final IR, the program that "
                        "runs: every kernel (k.fused), its layout conversions and tile; MLIR generic "
                        "syntax), einsum (the attention cascades and their passes over "
                        "the keys, before and after fuse_attention), relax (the TVM Relax module), "
                        "tir (scheduled kernels), asm (machine code; the host code for --target cuda), "
                        "cuda (the CUDA C kernels, --target cuda); with --backend mlir: mlir (the linalg/arith module); "
                        "ptx (the GPU assembly, with --target cuda, either backend)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=DIMS",
                   help="fix an input's shape, e.g. input=1x3x224x224 (needed when the model has "
                        "symbolic dimensions). Repeatable")
    p.add_argument("--passes", metavar="P1,P2",
                   help="run exactly these graph-level passes instead of the target's canonicalize "
                        "pipeline (quantization and kernel-level passes still follow; edit those with "
                        "--disable-pass). Known: "
                        + ", ".join(sorted(PASSES)))
    p.add_argument("--disable-pass", action="append", default=[], metavar="PASS",
                   help="drop a pass from the pipeline (any stage's: quantization passes such as tabulate, "
                        "kernel-level passes such as fuse_kernels or assign_layouts). "
                        "Repeatable")
    p.add_argument("--print-after", action="append", default=[], metavar="PASS",
                   help="print the IR to stderr after PASS ('all' for every pass). Repeatable")
    p.add_argument("--dump-dir", metavar="DIR", help="write the IR after each pass to DIR/NN_pass.mlir")
    p.add_argument("--no-verify-each", action="store_true",
                   help="skip the IR verifier between passes (it runs by default)")
    p.add_argument("--quantize", choices=["int8", "mixed", "model"],
                   help="rewrite the model to integer arithmetic (int8 weights and activations, int32 "
                        "accumulators, dyadic requantization); needs --calibration. mixed: each layer's weights "
                        "chosen by the HAWQV3 ILP among int8, int4 (convs), 4- or 2-bit LUT (linear layers, "
                        "q.lut_matmul, packed) and 2- or 1-term shift/add, under --size-budget/--latency-budget/"
                        "--accuracy-budget (the plan is printed with --report). "
                        "model: the model's own quantization (onnxruntime QDQ / QOperator), no calibration")
    p.add_argument("--calibration", metavar="FILE.npz",
                   help="calibration inputs for --quantize: an .npz with one array per model input "
                        "(by input name), shaped (N, *input_shape)")
    p.add_argument("--observer", choices=["minmax", "percentile", "mse"], default="minmax",
                   help="how calibration ranges are chosen. Default: minmax")
    p.add_argument("--size-budget", type=float, metavar="F",
                   help="--quantize mixed: weight bytes at most F x the all-INT8 weight bytes (e.g. 0.7)")
    p.add_argument("--latency-budget", type=float, metavar="F",
                   help="--quantize mixed: estimated latency at most F x the all-INT8 latency (the cost "
                        "model's int8 prediction; LUT and shift kernels, which it lacks, proportionally to it)")
    p.add_argument("--accuracy-budget", metavar="F|Npt|cosC",
                   help="--quantize mixed: F: the summed output perturbation of the layers' weight choices "
                        "(each measured on the calibration data) at most F x the outputs' mean square "
                        "(e.g. 0.01); the ILP then minimizes the multiplies (LUT layers, and shift/add ones "
                        "on the shift kernel, have none) instead of the perturbation. Npt (e.g. 0.5pt): at most "
                        "N top-1 points lost against FP32 on the calibration data, which then needs a `labels` "
                        "array (one class index per sample); cosC (e.g. cos0.99): the final output's cosine "
                        "with FP32 there at least C; metricM (e.g. metric0.05): --accuracy-metric's loss at "
                        "most M on every calibration batch. All three search F, building and measuring candidate "
                        "plans")
    p.add_argument("--accuracy-metric", metavar="FILE.py:FUNCTION",
                   help="your accuracy metric, for the budgets metricM (--accuracy-budget, --keep-16bit "
                        "auto:metricM): FUNCTION(fp32_outputs, quantized_outputs) -> float, lower is better, each "
                        "argument the list of the model's outputs (numpy arrays) on one calibration batch. E.g. a "
                        "detector's largest class-score error, which an output cosine does not see")
    p.add_argument("--integer-only", action="store_true",
                   help="fail (exit 3, listing the nodes) unless every op between the input quantize "
                        "and the output dequantize is an integer op")
    p.add_argument("--report", action="store_true",
                   help="print the per-layer quantization report (scale, bits, SQNR vs float) to stderr")
    p.add_argument("--shiftadd", type=int, choices=[1, 2], default=None,
                   help="with --quantize int8: every conv/linear weight as per-channel sums of 1 or 2 signed "
                        "powers of two, fitted to each layer's output on the calibration data")
    p.add_argument("--shiftadd-kernel", choices=["auto", "vnni", "shift"], default="auto",
                   help="the kernel that runs the shift/add layers (--shiftadd, or those --quantize mixed chooses): "
                        "the shift-and-add kernel (no multiply), the VNNI kernel, or auto: per --shiftadd layer "
                        "the one the cost models predict faster (the shift kernel where the CPU has no VNNI; "
                        "--quantize mixed: VNNI where the CPU has it) [auto]")
    p.add_argument("--lut", type=int, choices=[1, 2, 3, 4], default=None,
                   help="with --quantize int8: every linear layer (q.matmul with a constant weight) as a "
                        "q.lut_matmul with b-bit group weights (groups of 128), computed by table lookup "
                        "(T-MAC, vpshufb)")
    p.add_argument("--weight-bits", type=int, choices=[8, 4], default=8,
                   help="with --quantize int8: 4-bit weights (symmetric per output channel); linear layers stored "
                        "two per byte and run on the int4 VNNI matmul (half the weight bytes), convs in int8 "
                        "containers [8]")
    p.add_argument("--keep-16bit", metavar="NAME[,NAME...]|auto[:BUDGET]", default=None,
                   help="with --quantize int8: keep these conv / matmul layers' input and output activations "
                        "(and an activation computed from such an output alone) at 16 bits (int16 symmetric "
                        "grids, still integer-only; HAWQV3's per-layer activation bits). NAME: an ONNX node name, "
                        "or first / last (the first / last conv or matmul), first:N / last:N (the first / last N), all; "
                        "the --report column 'lost dB' names the layers worth keeping. A value a long reduction reads takes fewer int16 levels, so "
                        "that range analysis proves the int32 accumulator. auto[:BUDGET]: the fewest layers that "
                        "meet BUDGET on the calibration data (cos0.99 by default: the worst sample's cosine; or Npt "
                        "with labels; or metricM with --accuracy-metric), each layer's effect measured (passes/keep_16bit_search.py; 2 builds per "
                        "layer); exit 2 when even every layer at 16 bits misses it. int16 convs take about "
                        "1.5-1.9x the int8 kernel's time on 1x1 convs (half the multiply-adds per instruction)")
    p.add_argument("--gelu-form", choices=["auto", "table", "shift"], default="auto",
                   help="with --integer-only: a GELU on an 8-bit input becomes the exact function tabulated on "
                        "that grid (table: 256 entries), I-ViT's ShiftGELU on a "
                        "finer int16 grid (shift), or whichever is as accurate and cheaper, measured per layer "
                        "on its calibrated range (auto) [auto]")
    p.add_argument("--lut-table", choices=["int8", "int16"], default="int8",
                   help="--lut tables (also the LUT layers --quantize mixed chooses): int8 (T-MAC's quantized "
                        "tables, ~1-2%% error) or int16 (exact) [int8]")
    p.add_argument("--lmul", choices=["attention"], default=None,
                   help="L-Mul: attention's matmuls (Q K^T, P V) multiply by one integer add of the float "
                        "bit patterns, 3-bit mantissa (passes/lmul.py); tvm and mlir backends, tested on llvm")
    p.add_argument("--shiftadd-attention", action="store_true",
                   help="ShiftAddViT's binary-code attention, post-training: each float softmax attention "
                        "becomes linear attention Q (K^T V) on the codes [Q > 0], [K > 0] with V in int8, "
                        "every product with a code a masked add (mfree.binary_attention; "
                        "passes/shiftadd_attention.py). Changes the output (no retraining); not with "
                        "--quantize or --lmul; the tvm and mlir backends, on llvm and cuda")
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                   help="float precision of a float (not --quantize) compile: fp16 stores the weights in "
                        "float16 and computes in it (on cuda the matmuls and convs can use tensor cores); "
                        "the inputs and outputs stay float32, and the ops whose numerics need float32 "
                        "(softmax, layer norm, sum / mean reductions, exp, log, pow; passes/fp16.py) run in "
                        "float32 between casts. Not with --quantize (exit 2). Default: fp32")
    p.add_argument("--integer-attention", action="store_true",
                   help="with --quantize int8 --integer-only: each attention in one pass over key blocks, "
                        "Shiftmax inside the running recurrence (passes/qattention.py); opt-in: within 4 LSB "
                        "of the unfused integer attention, not equal to it; llvm and cuda, both backends")
    p.add_argument("--check", action="store_true",
                   help="after compiling, run the executable and the reference interpreter on "
                        "random inputs and fail (exit 5) if they disagree")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress messages or bars on stderr (bars are drawn only on a terminal)")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    return p


def parse_shapes(items: list[str]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for item in items:
        name, sep, dims = item.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise InvalidModel(f"--input-shape {item!r}: expected NAME=D0xD1x..., e.g. input=1x3x224x224") \
                from None
    return shapes


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "tune-costmodel":     # a subcommand; `compile MODEL.onnx ...` is unchanged
        from costmodel.measure import tune_main
        return tune_main(argv[1:])
    if argv and argv[0] in VERBS:                # run / bench / report a compiled model: compiler/tools/
        from compiler.tools import dispatch
        return dispatch(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    from compiler.tools.common import guarded
    return guarded(lambda: _run(args), args.debug)


def _metric_budget_given(accuracy_budget: str | None, keep_16bit: str | None) -> bool:
    """Whether --accuracy-budget or --keep-16bit auto:BUDGET is a metricM budget (a layer merely named like one
    is not)."""
    autos = [k.strip().partition(":")[2] for k in (keep_16bit or "").split(",") if k.strip().startswith("auto:")]
    return any(b.strip().lower().startswith("metric") for b in [accuracy_budget or "", *autos])



def _run(args: argparse.Namespace) -> int:
    import compiler
    from compiler.api import stderr_progress
    from compiler.backends import get_backend
    say = (lambda _m: None) if args.quiet or args.emit else stderr_progress
    t0 = time.perf_counter()
    model = Path(args.model)
    if args.quantize in ("int8", "mixed") and not args.calibration:
        raise InvalidInput("--quantize needs --calibration FILE.npz",
                           hint="the compiler never calibrates on random data; save representative "
                                "inputs with np.savez('calib.npz', **{input_name: batches})")
    if args.integer_attention and not args.integer_only:
        raise InvalidInput("--integer-attention needs --quantize int8 --integer-only")
    if (args.integer_only or args.report or args.shiftadd or args.lut) and not args.quantize:
        raise InvalidInput("--integer-only, --report, --shiftadd and --lut need --quantize int8")
    budgets = (args.size_budget, args.latency_budget, args.accuracy_budget)
    if args.quantize == "mixed" and all(b is None for b in budgets):
        raise InvalidInput("--quantize mixed needs --size-budget F, --latency-budget F and/or --accuracy-budget F")
    if args.gelu_form != "auto" and not args.integer_only:
        raise InvalidInput("--gelu-form needs --quantize int8 --integer-only")
    if args.keep_16bit is not None and args.quantize != "int8":
        raise InvalidInput("--keep-16bit needs --quantize int8")
    if args.weight_bits != 8 and args.quantize != "int8":
        raise InvalidInput("--weight-bits 4 needs --quantize int8 (--quantize mixed chooses the bits per layer)")
    if any(b is not None for b in budgets) and args.quantize != "mixed":
        raise InvalidInput("--size-budget / --latency-budget / --accuracy-budget need --quantize mixed")
    metric = None
    if args.accuracy_metric:
        from passes.accuracy_budget import load_metric
        if not _metric_budget_given(args.accuracy_budget, args.keep_16bit):
            raise InvalidInput("--accuracy-metric is the loss of a metricM budget, and none was given",
                               hint="add --keep-16bit auto:metric0.05 or --accuracy-budget metric0.05")
        metric = load_metric(args.accuracy_metric)
    if args.accuracy_budget is not None:         # fail fast on a malformed value, or points without labels
        from compiler.calibration import labels_for
        from passes.accuracy_budget import parse_accuracy_budget
        parse_accuracy_budget(args.accuracy_budget, labels_for(args.calibration), flag="--accuracy-budget",
                              metric=metric)
    quant = dict(quantize=args.quantize, calibration=args.calibration, integer_only=args.integer_only,
                 observer=args.observer, size_budget=args.size_budget,
                 latency_budget=args.latency_budget, accuracy_budget=args.accuracy_budget, shiftadd=args.shiftadd,
                 shiftadd_kernel=args.shiftadd_kernel, lut=args.lut, lut_table=args.lut_table,
                 integer_attention=args.integer_attention, weight_bits=args.weight_bits,
                 keep_16bit=[x.strip() for x in (args.keep_16bit or "").split(",") if x.strip()],
                 gelu_form=args.gelu_form, accuracy_metric=metric) \
        if args.quantize else {}
    options = dict(input_shapes=parse_shapes(args.input_shape) or None,
                   passes=args.passes.split(",") if args.passes else None,
                   disable_passes=args.disable_pass, print_after=args.print_after,
                   verify_each=not args.no_verify_each, dump_dir=args.dump_dir, lmul=args.lmul,
                   shiftadd_attention=args.shiftadd_attention,
                   precision=args.precision)
    if args.emit == "einsum":
        from compiler.api import import_model, optimize
        from passes.einsum import report
        g = import_model(model, options["input_shapes"])
        sys.stdout.write(report(optimize(g, args.target, passes=options["passes"],
                                         disable_passes=args.disable_pass)))
        return 0
    if args.emit == "ir":
        from compiler.api import final_ir
        g, _ = final_ir(model, args.target, backend=args.backend, **options, **quant)
        sys.stdout.write(str(g))
        return 0
    get_backend(args.backend)          # fail fast on a missing toolchain
    say(f"compiling {model} for {args.target}")
    from compiler.tools.progress import PassBar
    from passes.base import observe_passes
    bar = PassBar(enabled=not (args.quiet or args.emit))        # a bar on a terminal only
    try:
        with observe_passes(bar):
            cm = compiler.compile(model, args.target, backend=args.backend, progress=say, **options, **quant)
    finally:
        bar.close()
    if args.report:
        print(cm.report, file=sys.stderr)
    if cm.report is not None and cm.report.keep_16bit is not None:
        say(str(cm.report.keep_16bit))
    if args.emit:
        sys.stdout.write(cm.executable.source(args.emit))
        return 0
    if args.check:
        _check(cm)
        say("check: executable agrees with the reference interpreter")
    out = Path(args.output) if args.output else Path(model.stem + ".dyc")
    cm.save(out)
    say(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f}s")
    return 0


def _check(cm) -> None:
    import numpy as np

    from compiler import interp
    from compiler.diagnostics import NumericsMismatch
    from compiler.types import DType
    rng = np.random.default_rng(0)
    inputs = []
    for _, t in cm.signature.inputs:
        if t.dtype.is_float:
            inputs.append(rng.standard_normal(t.shape).astype(t.dtype.numpy))
        else:
            inputs.append(rng.integers(0, 2, t.shape).astype(t.dtype.numpy))
    want = interp.run(cm.graph, *inputs)
    got = cm.run(*inputs)
    fp16 = any(v.type.dtype is DType.F16 for n in cm.graph.walk() for v in n.outputs)   # --precision fp16
    for i, (w, g) in enumerate(zip(want, got)):
        tol = (1e-2 if fp16 else 1e-4) if w.dtype.kind == "f" else 0
        if not np.allclose(g, w, rtol=tol, atol=tol, equal_nan=True):
            err = float(np.max(np.abs(g.astype(np.float64) - w)))
            raise NumericsMismatch(f"output {i} ({cm.signature.outputs[i][0]}) differs from the reference "
                                   f"interpreter: max abs error {err:.3g}")


if __name__ == "__main__":
    sys.exit(main())
