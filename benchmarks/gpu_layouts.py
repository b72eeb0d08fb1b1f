"""What the GPU's channel-blocked layouts change, side by side in one run and without a GPU: the integer-only INT8
and the FP16 cuda programs with assign_gpu_layouts (each conv reads and writes NCHW{16}c or NCHW{8}c,
passes/layout.py) and without it (NCHW throughout), counted on what TVM compiles:

* launches and MiB the kernels write per inference (the layout conversions included);
* how each conv's gather loads the activation, read from the generated CUDA C: a thread's 4 reduction elements
  as one vector load ("vector": a 32-bit word of int8, 64 bits of float16), as 4 loads of one vector
  ("4 strided": NCHW's 4 channels H*W apart), or one by one in a loop ("loop": TVM could not vectorize them;
  the 3-channel stem image);
* how it writes its result: one vector store per 4 values, or element by element.

    PYTHONPATH=. python benchmarks/gpu_layouts.py [--models cnn detector] [--modes int8 fp16] [--batch 1]

The models are benchmarks/gpu_prepare.py's (ResNet-18 224, YOLOv8n 320). Static counts, not times: the time on a
GPU comes from benchmarks/gpu_check.sh with an artifact set prepared with and without the pass
(docs/gpu_check.md, "Prepared").
"""
from __future__ import annotations

import argparse
import re
import tempfile
from collections import Counter
from pathlib import Path

KERNEL = re.compile(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\((.*?)\) \{(.*?)\n\}\n', re.S)


VECTOR = r"\*\((?:u?int|half4|uint2)\*\)\({}_ptr \+"        # 4 int8 as a word, 4 float16 as 64 bits


def _form(body: str, ptr: str) -> str:
    if re.search(VECTOR.format(ptr), body):
        return "vector"
    return "4 strided" if re.search(rf"{ptr}_ptr\[v_", body) else "loop"


def gathers(src: str) -> tuple[Counter, Counter]:
    """(gather forms, store forms) over the conv GEMM kernels (int8_conv2d, f16_conv2d) of CUDA source `src`. The
    packed weight (r_src or c_src) is always read as vectors, so a kernel's gather form is its other operand's:
    the one that is not a vector, or a vector where both are."""
    loads, stores = Counter(), Counter()
    for name, _, body in KERNEL.findall(src):
        if "8_conv2d" not in name and "f16_conv2d" not in name:
            continue
        forms = [_form(body, p) for p in ("r_src", "c_src")]
        loads[next((f for f in forms if f != "vector"), "vector")] += 1
        stores["vector" if re.search(VECTOR.format("out"), body) else "elements"] += 1
    return loads, stores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["cnn", "detector"], choices=["cnn", "detector"],
                    help="gpu_prepare's models to count (default: both)")
    ap.add_argument("--modes", nargs="+", default=["int8", "fp16"], choices=["int8", "fp16"],
                    help="integer-only INT8 and / or FP16 (default both; FP32 convs are not blocked)")
    ap.add_argument("--batch", type=int, default=1, help="batch size the programs are compiled for (default 1)")
    args = ap.parse_args()
    from benchmarks.gpu_fusion import traffic
    from benchmarks.gpu_prepare import MODELS, _model, inputs
    from compiler.api import final_ir
    from compiler.backends.tvm import BACKEND
    from compiler.ops import layout as lay
    from compiler.target import Target
    target = "cuda -arch=sm_90"
    print(f"{'model':28s} {'mode':5s} {'layouts':8s} {'launches':>8s} {'MiB written':>11s} {'conversions':>11s}  "
          f"{'conv gathers (vector / 4 strided / loop)':41s} {'stores (vector / elements)'}")
    with tempfile.TemporaryDirectory() as d:
        for name in args.models:
            model = _model(name, args.batch, Path(d))
            for mode in args.modes:
                kw = (dict(quantize="int8", integer_only=True,
                           calibration=[inputs(name, args.batch, 100 + i) for i in range(2)])
                      if mode == "int8" else dict(precision=mode))
                for label, disabled in (("blocked", []), ("NCHW", ["assign_gpu_layouts"])):
                    g = final_ir(model, target, disable_passes=disabled, **kw)[0]
                    launches, written = traffic(g)
                    conversions = sum(n.op in (lay.pack, lay.unpack) for n in g.nodes)
                    loads, stores = gathers(BACKEND.build(g, Target.parse(target)).cuda_source())
                    print(f"{MODELS[name][0]:28s} {mode:5s} {label:8s} {launches:>8d} {written / 2**20:>11.2f} "
                          f"{conversions:>11d}  {loads['vector']:>6d} / {loads['4 strided']:>3d} / "
                          f"{loads['loop']:<25d} {stores['vector']:>3d} / {stores['elements']}", flush=True)


if __name__ == "__main__":
    main()
