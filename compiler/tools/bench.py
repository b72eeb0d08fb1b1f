"""`compile bench MODEL.dyc`: latency of a compiled model (warmup, repeats, threads; median, min,
max, mean and percentiles), side by side with onnxruntime on the original model (`--compare`,
runs interleaved, same thread count, spinning off; plus onnxruntime's own INT8 from
`quantize_static` on `--data` for an integer artifact), and the per-kernel profile."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compiler.diagnostics import InvalidInput
from compiler.tools import ort
from compiler.tools.common import guarded, is_integer_graph, load_artifact, write_atomic
from compiler.tools.inputs import describe, gather_inputs
from compiler.tools.kernels import Roofline, match, roofline
from compiler.tools.progress import Progress
from compiler.tools.run import add_input_flags

EPILOG = """\
examples:
  compile bench model.dyc                                 random inputs, all cores
  compile bench model.dyc --compare model.onnx --threads 1
  compile bench model_int8.dyc --compare model.onnx --data calib.npz    also onnxruntime's INT8
  compile bench model.dyc --profile                       per kernel: IR op and node, time, rate, roofline

--data FILE.npz (one array per input, shaped (N, *input_shape), as for --calibration) supplies the
inputs (its first batch) and, for an integer artifact, onnxruntime's quantize_static calibration.
Times are wall-clock milliseconds per call of one batch. --profile rates are GFLOP/s (GOP/s for an
integer kernel; operations counted from the kernel's IR, a multiply-add is 2); "roof" is the share of
min(peak, bandwidth x ops/byte): the peak a stated per-CPU constant (compiler/tools/kernels.py) times
the clock in /proc/cpuinfo, the memory bandwidth measured here.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compile bench", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Time a compiled model (.dyc), optionally against onnxruntime.",
                                epilog=EPILOG)
    p.add_argument("model", help="the compiled model (.dyc)")
    add_input_flags(p)
    p.add_argument("--data", metavar="FILE.npz",
                   help="inputs (first batch) and onnxruntime INT8 calibration data")
    p.add_argument("--warmup", type=int, default=5, metavar="N", help="untimed calls first (default 5)")
    p.add_argument("--repeat", type=int, default=50, metavar="N", help="timed calls (default 50)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for both runtimes (default: the artifact's -num-threads, else all cores)")
    p.add_argument("--compare", metavar="MODEL.onnx",
                   help="also time onnxruntime on this ONNX model (the one the artifact was compiled from)")
    p.add_argument("--ort-format", choices=["qoperator", "qdq"], default="qoperator",
                   help="onnxruntime INT8 model format with --data (default qoperator)")
    p.add_argument("--profile", action="store_true", help="add the per-kernel table: IR op, time, GFLOP/s, roofline share (tvm backend)")
    p.add_argument("--profile-runs", type=int, default=5, metavar="N", help="runs profiled (default 5)")
    p.add_argument("--json", metavar="FILE.json", help="also write the results as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    return p


@dataclass
class Timing:
    """Latencies of one runtime, in milliseconds."""

    name: str
    times: list[float] = field(default_factory=list)

    def stats(self) -> dict[str, float]:
        t = np.asarray(self.times)
        return {"median_ms": float(np.median(t)), "min_ms": float(t.min()), "max_ms": float(t.max()),
                "mean_ms": float(t.mean()), "p90_ms": float(np.percentile(t, 90)),
                "p99_ms": float(np.percentile(t, 99)),
                "stdev_ms": float(statistics.stdev(self.times)) if len(self.times) > 1 else 0.0}


def time_interleaved(runners: dict[str, Callable[[], object]], warmup: int, repeat: int,
                     progress: Progress | None = None) -> list[Timing]:
    """Warm each runner up, then time them in turn, `repeat` rounds; the order rotates each
    round so no runtime always runs right after another (caches, clocks, thread wake-up)."""
    names = list(runners)
    for name in names:
        for _ in range(warmup):
            runners[name]()
    timings = {n: Timing(n) for n in names}
    for i in range(repeat):
        for k in range(len(names)):
            name = names[(i + k) % len(names)]
            t0 = time.perf_counter()
            runners[name]()
            timings[name].times.append((time.perf_counter() - t0) * 1e3)
        if progress is not None:
            progress.update(i + 1)
    return [timings[n] for n in names]


def format_table(timings: Sequence[Timing]) -> str:
    cols = ("median", "min", "max", "mean", "p90", "p99")
    width = max(24, *(len(t.name) + 2 for t in timings))
    lines = [f"{'':<{width}}" + "".join(f"{c:>10}" for c in cols) + "   (ms)"]
    for t in timings:
        s = t.stats()
        lines.append(f"{t.name:<{width}}" + "".join(f"{_ms(s[c + '_ms']):>10}" for c in cols))
    return "\n".join(lines)


def _ms(v: float) -> str:
    return f"{v:.4f}" if v < 1 else f"{v:.3f}" if v < 100 else f"{v:.1f}"


def max_abs_diff(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    return max((float(np.max(np.abs(x.astype(np.float64) - np.asarray(y, np.float64))))
                for x, y in zip(a, b) if x.size), default=0.0)


def profile_rows(prof: dict, facts: dict | None = None, roof: Roofline | None = None) -> list[dict]:
    """The profile's kernels (the VM's own builtin calls folded into one row), each with the IR node it
    runs, its op, and, where its operations are counted, its rate (GFLOP/s, or GOP/s for an integer
    kernel) and the share of the roofline that rate reaches."""
    kernels = [r for r in prof["kernels"] if not r[0].startswith("vm.builtin.")]
    builtins = [r for r in prof["kernels"] if r[0].startswith("vm.builtin.")]
    rows = []
    for name, calls, ms in kernels:
        f = match(name, facts)
        row = {"kernel": name, "calls": calls, "ms": ms, "share": ms / prof["wall_ms"],
               "op": f["op"] if f else None, "nodes": f.get("nodes", [f["node"]] if "node" in f else []) if f else []}
        if f and f["ops"] and ms > 0:
            rate = f["ops"] / (ms * 1e-3)
            row |= {"unit": "GOP/s" if f["integer"] else "GFLOP/s", "rate": rate / 1e9}
            if roof is not None:
                row["roof"] = rate / roof.roof(f["ops"], f["bytes"], f["integer"], amx="_amx" in name,
                                                 int16="vnni16" in name)
        rows.append(row)
    if builtins:          # the VM's own calls (allocation, reshape, checks): one row
        ms = sum(ms for _, _, ms in builtins)
        rows.append({"kernel": f"(vm builtins: {len(builtins)} kinds)", "calls": sum(c for _, c, _ in builtins),
                     "ms": ms, "share": ms / prof["wall_ms"], "op": None, "nodes": []})
    return rows


def format_profile(prof: dict, facts: dict | None = None, roof: Roofline | None = None) -> str:
    """Per-kernel table: kernel, the IR op and node it runs, calls per run, ms per run, share of the
    wall time, rate (GFLOP/s or GOP/s) and share of the roofline."""
    wall = prof["wall_ms"]
    rows = profile_rows(prof, facts, roof)
    width = max([24, *(len(r["kernel"]) + 2 for r in rows)])
    opw = max([10, *(len(r["op"] or "") + 2 for r in rows)])
    lines = [(f"per kernel ({prof.get('runs', '?')} instrumented runs, wall {_ms(wall)} ms per run; "
              "every VM call is timed, which inflates small kernels):"),
             f"  {'kernel':<{width}}{'op':<{opw}}{'calls':>6}{'ms':>10}{'share':>8}{'rate':>16}{'roof':>7}  node"]
    for r in rows:
        rate = f"{r['rate']:.2f} {r['unit']}" if "rate" in r else "-"
        rf = f"{r['roof']:.0%}" if "roof" in r else "-"
        node = (r["nodes"][0] + (f" (+{len(r['nodes']) - 1})" if len(r["nodes"]) > 1 else "")) if r["nodes"] else ""
        lines.append(f"  {r['kernel']:<{width}}{r['op'] or '-':<{opw}}{r['calls']:>6}{_ms(r['ms']):>10}"
                     f"{r['share']:>8.1%}{rate:>16}{rf:>7}  {node}")
    other = max(wall - sum(r["ms"] for r in rows), 0.0)
    lines.append(f"  {'(outside kernels)':<{width}}{'':<{opw}}{'':>6}{_ms(other):>10}{other / wall:>8.1%}")
    if roof is not None:
        lines.append(f"  roof: {roof.source}")
    return "\n".join(lines)


def bench(args: argparse.Namespace) -> int:
    if args.repeat < 1 or args.warmup < 0:
        raise InvalidInput(f"--repeat must be >= 1 and --warmup >= 0 (got {args.repeat}, {args.warmup})")
    if args.json and Path(args.json).suffix != ".json":
        raise InvalidInput(f"--json {args.json}: expected a file name ending in .json")
    say = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    if args.compare:
        ort.require("--compare")
        if not Path(args.compare).exists():
            raise InvalidInput(f"--compare: no such file {args.compare}")
    cm = load_artifact(args.model, args.threads)
    if args.profile and getattr(cm.executable, "profile", None) is None:
        cm.profile()                  # raises Unsupported naming the backend and target
    threads = cm.target.threads() if cm.target.kind == "llvm" else (args.threads or 1)
    integer = is_integer_graph(cm.graph_text)
    batches = ort.load_batches(args.data, cm.signature.inputs) if args.data else None
    if batches is not None and not args.input:
        inputs, sources = batches[0], [f"{args.data}, batch 0 of {len(batches)}"] * len(batches[0])
    else:
        inputs, sources = gather_inputs(cm.signature.inputs, args.input, True, args.seed)
    for (name, t), where in zip(cm.signature.inputs, sources):
        say(f"input '{name}' {describe(t)} ({where})")

    runners: dict[str, Callable[[], object]] = {"dyc": lambda: cm.executable.run(inputs)}
    reference: dict[str, list[np.ndarray]] = {}
    notes: list[str] = []
    if args.compare:
        fp32 = ort.session(args.compare, threads)
        feed = ort.feed(fp32, cm.signature.inputs, inputs)
        runners["onnxruntime FP32"] = lambda: fp32.run(None, feed)
        if integer and batches is not None:
            say(f"quantizing {args.compare} with onnxruntime quantize_static ({args.ort_format}, "
                f"{len(batches)} calibration batches)")
            q = ort.quantized_session(args.compare, batches, cm.signature.inputs, threads, args.ort_format)
            if isinstance(q, str):
                notes.append(f"onnxruntime INT8 skipped: {q}")
            else:
                qfeed = ort.feed(q, cm.signature.inputs, inputs)
                runners[f"onnxruntime INT8 {args.ort_format}"] = lambda: q.run(None, qfeed)
        elif integer:
            notes.append("add --data calib.npz to also time onnxruntime's INT8 (quantize_static)")
        elif batches is not None:
            notes.append("the artifact computes in float; --data only supplied its inputs")
        ours = cm.executable.run(inputs)
        for name, fn in list(runners.items())[1:]:
            reference[name] = fn()
    elif args.data and integer:
        notes.append("--data calibrates onnxruntime's INT8 only with --compare MODEL.onnx")

    say(f"timing: {args.warmup} warmup + {args.repeat} timed calls each, {threads} thread(s)"
        + (", interleaved" if len(runners) > 1 else ""))
    progress = None if args.quiet else Progress(args.repeat, "bench")
    timings = time_interleaved(runners, args.warmup, args.repeat, progress)
    if progress is not None:
        progress.close()

    kind = "integer" if integer else "float"
    print(f"model    {Path(args.model).name}: {cm.backend}, {cm.target}, {kind}")
    print("inputs   " + ", ".join(f"'{n}' {describe(t)}" for n, t in cm.signature.inputs))
    print(f"threads  {threads}   warmup {args.warmup}   repeat {args.repeat}"
          + ("   (runs interleaved)" if len(runners) > 1 else ""))
    print(format_table(timings))
    ours_med = timings[0].stats()["median_ms"]
    result = {"model": str(args.model), "target": str(cm.target), "backend": cm.backend,
              "integer": integer, "threads": threads, "warmup": args.warmup, "repeat": args.repeat,
              "runtimes": {t.name: t.stats() for t in timings}, "ratios": {}, "max_abs_diff": {}}
    for t in timings[1:]:
        med = t.stats()["median_ms"]
        diff = max_abs_diff(ours, reference[t.name])
        result["ratios"][t.name] = ours_med / med
        result["max_abs_diff"][t.name] = diff
        print(f"ratio    dyc / {t.name} = {ours_med / med:.2f}x  (median {_ms(ours_med)} vs "
              f"{_ms(med)} ms; {'faster' if ours_med < med else 'slower'}); outputs differ by at most {diff:.3g}")
    for note in notes:
        print(f"note     {note}")
    if args.profile:
        prof = cm.profile(*inputs, runs=args.profile_runs)
        prof["runs"] = args.profile_runs
        roof = roofline(cm.target.cpu, threads) if cm.target.kind == "llvm" else None
        print()
        print(format_profile(prof, cm.kernels, roof))
        result["profile"] = {"wall_ms": prof["wall_ms"], "kernels": profile_rows(prof, cm.kernels, roof),
                             **({"roof": roof.source} if roof is not None else {})}
    if args.json:
        text = json.dumps(result, indent=2).encode()
        write_atomic(args.json, lambda f: f.write(text))
        say(f"wrote {args.json}")
    return 0


def bench_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(lambda: bench(args), args.debug)
