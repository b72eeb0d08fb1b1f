"""The grid of every kernel launch of the TVM backend's cuda programs, without a GPU: thread blocks and threads per
block, read from the scheduled TIR (each kernel's blockIdx / threadIdx extents), beside the elements the launch
writes. A launch whose blocks run to the hundreds of thousands, or whose threads outnumber what it writes many times
over, is a schedule to look at (dlight's GPU reduction rule gives every output row a block of 256 threads, however
short the row: it gave ResNet-18's blocked max pool 6.4 million blocks at batch 32, one per output).

    PYTHONPATH=. python benchmarks/gpu_grids.py [--models cnn encoder detector attention] [--modes fp32 int8 fp16]
                                                [--batch 32] [--all]

The models are benchmarks/gpu_prepare.py's. Without --all only the launches with at least 100,000 blocks or more than
4 threads per element written are listed. Static counts, not times: benchmarks/gpu_check.sh times them on a GPU.
"""
from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import numpy as np

MANY_BLOCKS = 100_000
IDLE = 4                    # threads per element written


def grid(tir: str, kernel: str) -> tuple[int, int]:
    """(thread blocks, threads per block) of PrimFunc `kernel` in a scheduled module's TIR script (the largest extent
    each blockIdx / threadIdx axis is bound to; 1 for an unbound axis)."""
    f = tir.split(f"def {kernel}(")[1].split("@T.prim_func")[0]
    extent: dict[str, int] = {}
    for n, tag in re.findall(r'T\.thread_binding\((?:T\.int64\()?(\d+)\)?, thread="((?:blockIdx|threadIdx)\.[xyz])"', f):
        extent[tag] = max(extent.get(tag, 1), int(n))
    for tag, n in re.findall(r'T\.launch_thread\("((?:blockIdx|threadIdx)\.[xyz])", (\d+)\)', f):
        extent[tag] = max(extent.get(tag, 1), int(n))
    blocks = int(np.prod([v for k, v in extent.items() if k.startswith("blockIdx")] or [1]))
    threads = int(np.prod([v for k, v in extent.items() if k.startswith("threadIdx")] or [1]))
    return blocks, threads


def written(tir: str, kernel: str) -> int:
    """Elements of the last buffer parameter of PrimFunc `kernel` (what it writes)."""
    signature = tir.split(f"def {kernel}(")[1].split("):")[0]
    shapes = re.findall(r"T\.Buffer\(\(([^)]*(?:\)[^)]*)*?)\), \"\w+\"", signature)
    dims = re.findall(r"\d+", shapes[-1].replace("T.int64", "")) if shapes else []
    return int(np.prod([int(d) for d in dims])) if dims else 0


def launches(exe) -> list[tuple[str, int, int, int]]:
    """(kernel, blocks, threads per block, elements written) of each launch of a built cuda program
    (compiler.backends.tvm_cuda.CudaExecutable)."""
    tir = exe._tir_text
    return [(name, *grid(tir, name), written(tir, name)) for name in exe.launches()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["cnn", "encoder", "detector"],
                    choices=["cnn", "encoder", "detector", "attention"])
    ap.add_argument("--modes", nargs="+", default=["fp32", "int8", "fp16"], choices=["fp32", "int8", "fp16"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--all", action="store_true", help="every launch, not only the suspicious ones")
    args = ap.parse_args()
    from benchmarks.gpu_prepare import MODELS, _model, inputs
    from compiler.api import final_ir
    from compiler.backends.tvm import BACKEND
    from compiler.target import Target
    target = "cuda -arch=sm_90"
    with tempfile.TemporaryDirectory() as d:
        for name in args.models:
            model = _model(name, args.batch, Path(d))
            for mode in args.modes:
                if name == "attention" and mode == "int8":
                    continue
                kw = (dict(quantize="int8", integer_only=True, calibration=[inputs(name, args.batch, 100)])
                      if mode == "int8" else dict(precision=mode))
                exe = BACKEND.build(final_ir(model, target, **kw)[0], Target.parse(target))
                rows = launches(exe)
                print(f"{MODELS[name][0]}, {mode}, batch {args.batch}: {len(rows)} launches", flush=True)
                for kernel, blocks, threads, written in rows:
                    if args.all or blocks >= MANY_BLOCKS or blocks * threads > IDLE * max(written, 1):
                        print(f"    {kernel:64s} {blocks:>9d} blocks x {threads:>4d} threads, "
                              f"{written:>10d} elements written")


if __name__ == "__main__":
    main()
