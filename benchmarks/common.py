"""What the end-to-end benchmarks share: the FP32 zoo models exported once to out/bench/, a
median timer, and an onnxruntime session pinned to a thread count (no spinning, so the other
runtime in the same process keeps its cores)."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
CACHE = ROOT / "out" / "bench"


def export_model(name: str) -> tuple[Path, np.ndarray]:
    """(onnx path, example input) of resnet50 (224x224, BN statistics randomized), bert
    (zoo.BertEncoder: 6 layers, hidden 384, seq 128) or bert512 (the same at seq 512), random weights,
    seed 0."""
    import torch

    from examples import zoo
    torch.manual_seed(0)
    if name == "resnet50":
        model, x = zoo.randomize_batch_norm(zoo.resnet50()), torch.randn(1, 3, 224, 224)
    elif name == "bert":
        model, x = zoo.BertEncoder().eval(), torch.randint(0, 1000, (1, 128))
    elif name == "bert512":
        model, x = zoo.BertEncoder(seq=512).eval(), torch.randint(0, 1000, (1, 512))
    else:
        raise SystemExit(f"unknown model {name}; choose resnet50, bert or bert512")
    path = CACHE / f"{name}.onnx"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        zoo.export_onnx(model, x, path)
    return path, x.numpy()


def time_ms(fn, warmup: int, repeat: int) -> float:
    """Median wall time of fn() in milliseconds after `warmup` calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def kernel_bench_args(doc: str):
    """The --threads / --repeat of a per-kernel benchmark, parsed, and TVM_NUM_THREADS set from --threads (before
    the caller imports tvm)."""
    import argparse
    import os
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=30, help="interleaved rounds per row")
    args = p.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    return args


def amx_host() -> str | None:
    """This host's CPU name where it has usable AMX-INT8 (and Linux gave the process its tile state), else None,
    after saying so."""
    from compiler.host import cpu_features, host_cpu_flags, host_cpu_name, request_amx
    cpu = host_cpu_name()
    if "amx_int8" not in host_cpu_flags() or "amx-int8" not in cpu_features(cpu) or not request_amx():
        print(f"this host ({cpu}) has no usable AMX-INT8: nothing to compare")
        return None
    return cpu


def interleaved_ms(fns: list, warmup: int, repeat: int) -> list[list[float]]:
    """Wall times in ms of every fn in `fns`, `repeat` rounds, each round calling all of them once,
    the order reversed every other round (so neither always runs right after the other)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeat):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            t0 = time.perf_counter()
            fns[i]()
            times[i].append((time.perf_counter() - t0) * 1e3)
    return times


def interleaved_medians(fns: dict, warmup: int, repeat: int) -> dict[str, float]:
    """{name: median ms} of the named callables, timed interleaved (interleaved_ms)."""
    times = interleaved_ms(list(fns.values()), warmup, repeat)
    return {k: statistics.median(t) for k, t in zip(fns, times)}


def ort_session(path: Path, threads: int):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def backends_vs_ort(path: Path, x: np.ndarray, backends: list[str], threads: int, warmup: int,
                    repeat: int) -> tuple[dict[str, float], float]:
    """A one-input ONNX model compiled by each backend (llvm) against onnxruntime FP32 on input "x", timed
    interleaved: ({"ort" or backend: median ms}, max |ours - onnxruntime| over the backends)."""
    import compiler
    cms = {b: compiler.compile(path, target=f"llvm -num-threads={threads}", backend=b) for b in backends}
    sess = ort_session(path, threads)
    want = sess.run(None, {"x": x})[0]
    diff = max(float(np.abs(cm.run(x)[0] - want).max()) for cm in cms.values())
    calls = {"ort": lambda: sess.run(None, {"x": x})}
    calls.update({b: (lambda cm=cm: cm.run(x)) for b, cm in cms.items()})
    lat = interleaved_medians(calls, warmup, repeat)
    print(", ".join(f"{k} {v:.3f} ms" for k, v in lat.items()), file=sys.stderr, flush=True)
    return lat, diff


def print_backend_table(first: str, rows: list[tuple[str, dict[str, float], float]], backends: list[str]) -> None:
    """The markdown table of backends_vs_ort's rows (label, medians, max diff): ms and ratio to onnxruntime."""
    names = {"tvm": "ours (TVM)", "mlir": "ours (MLIR)"}
    print(f"| {first} | onnxruntime FP32 ms | " + " | ".join(f"{names[b]} ms | / ORT" for b in backends)
          + " | max abs diff |")
    print("|---|---|" + "---|---|" * len(backends) + "---|")
    for label, lat, diff in rows:
        cells = " | ".join(f"{lat[b]:.3f} | {lat[b] / lat['ort']:.2f}x" for b in backends)
        print(f"| {label} | {lat['ort']:.3f} | {cells} | {diff:.1e} |")
