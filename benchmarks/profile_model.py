"""Where the time goes: every kernel of a compiled model timed inside the Relax VM, slowest first.

    python benchmarks/profile_model.py bert --quantize int8 --threads 1 [--top 25]
    python benchmarks/profile_model.py resnet50 --quantize int8
    python benchmarks/profile_model.py model.onnx

    python benchmarks/profile_model.py resnet50 --ort   # + onnxruntime's own per-node profile, same input

bert / resnet50 are the benchmark models of benchmarks/common.py (random weights); INT8 is integer-only,
calibrated on 4 random inputs (token ids for bert), as in benchmarks/e2e_int8*.py. Any other .onnx gets one
array per input (sample_input: an input named like a mask all ones, e.g. transformers' attention_mask).  The last lines compare
the sum of kernel times with the wall time: the difference is the VM's own work (allocation, calls).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import export_model  # noqa: E402


def sample_input(v, rng: np.random.Generator, calibrate: bool) -> np.ndarray:
    """An array for graph input v: N(0, 1) floats; an integer input named like a mask all ones; other integer
    inputs (token ids) zeros to profile, ids in [0, 100) to calibrate."""
    t = v.type
    if t.dtype.is_float:
        return rng.standard_normal(t.shape).astype(t.dtype.numpy)
    if "mask" in v.name.lower():
        return np.ones(t.shape, t.dtype.numpy)
    return rng.integers(0, 100, t.shape).astype(t.dtype.numpy) if calibrate else np.zeros(t.shape, t.dtype.numpy)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="resnet50, bert, or a path to an .onnx file")
    ap.add_argument("--quantize", choices=["int8"], default=None, help="integer-only INT8")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--ort", action="store_true",
                    help="also profile onnxruntime FP32 on the same input (its node times, summed per op type)")
    args = ap.parse_args()

    import compiler
    if args.model in ("resnet50", "bert"):
        path, x = export_model(args.model)
        xs = [x]
    else:
        path = Path(args.model)
        xs = None
    rng = np.random.default_rng(0)
    kw = {}
    g = compiler.import_model(str(path))
    if xs is None:
        xs = [sample_input(v, rng, calibrate=False) for v in g.inputs]
    if args.quantize:
        calib = [[sample_input(v, rng, calibrate=True) for v in g.inputs] for _ in range(4)]
        kw = {"quantize": "int8", "calibration": calib, "integer_only": True}
    cm = compiler.compile(str(path), target=f"llvm -num-threads={args.threads}", **kw)
    cm.run(*xs)
    p = cm.profile(*xs, runs=args.runs)
    rows, wall = p["kernels"], p["wall_ms"]
    total = sum(r[2] for r in rows)
    print(f"{path.name}{' int8 integer-only' if args.quantize else ''}, {args.threads} thread(s), "
          f"{args.runs} runs")
    print("| kernel | calls | ms | % |\n|---|---|---|---|")
    for name, calls, ms in rows[:args.top]:
        print(f"| {name} | {calls} | {ms:.3f} | {100 * ms / total:.1f} |")
    rest = rows[args.top:]
    if rest:
        print(f"| ({len(rest)} more) | {sum(r[1] for r in rest)} | {sum(r[2] for r in rest):.3f} | "
              f"{100 * sum(r[2] for r in rest) / total:.1f} |")
    print(f"\nsum of calls {total:.3f} ms; wall {wall:.3f} ms per run (instrumented)")
    if args.ort:
        ort_profile(path, xs, args.threads, args.runs)


def ort_profile(path: Path, xs: list[np.ndarray], threads: int, runs: int) -> None:
    """onnxruntime's node times (its profiler, median per node over `runs`), summed per op type."""
    import json
    import statistics
    import tempfile
    from collections import defaultdict

    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {i.name: x for i, x in zip(sess.get_inputs(), xs)}
    for _ in range(runs):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    per_node: dict[tuple[str, str], list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[(e["args"].get("op_name", "?"), e["name"])].append(e["dur"] / 1e3)
    per_op: dict[str, float] = defaultdict(float)
    for (op, _), ts in per_node.items():
        per_op[op] += statistics.median(ts)
    print(f"\nonnxruntime {ort.__version__} FP32, {threads} thread(s), node times (median per node):")
    for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1]):
        print(f"  {op:24s} {ms:8.3f} ms")
    print(f"  sum of nodes {sum(per_op.values()):.3f} ms")


if __name__ == "__main__":
    main()
