"""What the GPU's channel-blocked layouts change, side by side in one run and without a GPU: the integer-only INT8
and the FP16 cuda programs with assign_gpu_layouts (each conv reads and writes NCHW{16}c or NCHW{8}c, the
3-channel image NCHW{4}c: passes/layout.py) and without it (NCHW throughout), counted on what TVM compiles:

* the kernels one run launches (the built program's: a copy kernel TVM adds counts) and the MiB the kernels write
  per image (the layout conversions included);
* how each conv's gather loads the activation, read from the generated CUDA C: a thread's 4 (or a channel
  block's 8 or 16) reduction elements as one vector load ("vector": 32 or 128 bits of int8, 64 or 128 bits of
  float16), as 4 loads of one vector ("4 strided": NCHW's 4 channels H*W apart), or one by one in a loop
  ("loop": TVM could not vectorize them; the plain 3-channel image);
* how it writes its result: one vector store per 4 values, or element by element;
* the tensor cores' work over the convs' own multiply-adds ("MMA work"): a GEMM's rows and columns are padded
  to the block tile (choose_tiles', costmodel/gpu_tiles.py; without it 128, or 64, 32, 16 along an axis of at
  most that many: gpu_tile.block_tile), its reduction to 16;
* the conv kernels that spill registers, and the most bytes one spills (`ptxas -v`, sm_90);
* the instructions the conv GEMMs' main loops issue per tensor-core MMA (m16n8k16), over all of them weighted by
  their MMAs and the worst kernel's, read from the SASS (benchmarks/sass.py; nvdisasm from the dev extra): a
  warp scheduler issues one instruction a clock and an MMA keeps a tensor core about 2-4 clocks, so above that
  the loop is bound by the gather's address arithmetic, not the tensor cores.

    PYTHONPATH=. python benchmarks/gpu_layouts.py [--models cnn detector] [--modes int8 fp16] [--batch 1 32]

The models are benchmarks/gpu_prepare.py's (ResNet-18 224, YOLOv8n 320). Static counts, not times: the time on a
GPU comes from benchmarks/gpu_check.sh with an artifact set prepared with and without the pass
(docs/gpu_check.md, "Prepared").
"""
from __future__ import annotations

import argparse
import itertools
import re
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

KERNEL = re.compile(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\((.*?)\) \{(.*?)\n\}\n', re.S)


VECTOR = r"\*\((?:u?int[24]?|half4)\*\)\({}_ptr \+"   # 4 or 16 int8 as 32 or 128 bits, 4 or 8 float16


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


def spills(log: str) -> tuple[int, int, int]:
    """(conv GEMM kernels, how many of them spill registers, the most bytes one spills) from `ptxas -v`'s log."""
    stores = {name: int(b) for name, b in
              re.findall(r"Function properties for (\w+)\n\s*\d+ bytes stack frame, (\d+) bytes spill stores", log)}
    convs = [b for name, b in stores.items() if "8_conv2d" in name or "f16_conv2d" in name]
    return len(convs), sum(b > 0 for b in convs), max(convs, default=0)


def conv_gemms(g, target: str = "cuda -arch=sm_90") -> list[tuple[int, int]]:
    """(padded, real) multiply-adds of each conv on tensor cores, in graph order: its GEMM as the emitter builds it
    (tvm_fused/cuda.gemm_spec: the blocked or per-image shape, a padded image's zero channels), rows and columns
    padded to the node's block tile (or gpu_tile.block_tile's), the reduction to 16."""
    from compiler.backends.tvm_fused import cuda
    from compiler.backends.tvm_fused.body import NotFusable, parse
    from compiler.backends.tvm_kernels.cuda_gemm import MMA_K
    from compiler.gpu_tile import block_tile
    from compiler.ops import kernel
    from compiler.target import Target
    up = (lambda v, t: -(-v // t) * t)
    out = []
    for node in g.nodes:
        if node.op is not kernel.fused or node.attrs["kernel"] not in ("qconv", "conv"):
            continue
        try:
            spec = cuda.gemm_spec(parse(node), Target.parse(target))
        except NotFusable:                                 # lowered op by op: no tensor-core GEMM
            continue
        a = kernel.anchor_of(node.attrs["body"])
        tile_r, tile_c = tuple(node.attrs["tile"]) or block_tile(spec.rows, spec.cols)
        out.append((spec.batch * up(spec.rows, tile_r) * up(spec.cols, tile_c) * up(spec.k, MMA_K),
                    int(np.prod(a.outputs[0].type.shape)) * int(np.prod(a.inputs[1].type.shape[1:]))))
    return out


def mma_work(g) -> float:
    """Padded multiply-adds of the conv GEMMs on tensor cores over their real ones."""
    gemms = conv_gemms(g)
    return sum(p for p, _ in gemms) / sum(r for _, r in gemms)


MMA_MACS = 16 * 8 * 16      # one IMMA / HMMA m16n8k16


def loop_instructions(g, exe, cubin: bytes) -> tuple[float, float] | None:
    """(main-loop instructions per MMA over every conv GEMM weighted by its MMAs, the worst kernel's) from the SASS
    of `cubin` (benchmarks/sass.py), or None without nvdisasm. A conv's kernel is the one the program launches
    for it, in order (identical convs share one)."""
    from benchmarks import sass
    if sass.nvdisasm() is None:
        return None
    loops = sass.main_loops(cubin, lambda name: "_conv2d_" in name)
    calls = [k for k in exe.launches() if "_conv2d_" in k]
    gemms = conv_gemms(g)
    if len(calls) != len(gemms):
        return None
    issued = mmas = 0.0
    for name, (padded, _) in zip(calls, gemms):
        loop = loops.get(name + "_kernel")
        if loop is not None:                               # (a reduction unrolled whole has no loop)
            issued += loop[0] / loop[1] * padded / MMA_MACS
            mmas += padded / MMA_MACS
    return issued / mmas, max(i / m for i, m in loops.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["cnn", "detector"], choices=["cnn", "detector"],
                    help="gpu_prepare's models to count (default: both)")
    ap.add_argument("--modes", nargs="+", default=["int8", "fp16"], choices=["int8", "fp16"],
                    help="integer-only INT8 and / or FP16 (default both; FP32 convs are not blocked)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32],
                    help="batch sizes the programs are compiled for (default 1 32)")
    args = ap.parse_args()
    from benchmarks import sass
    from benchmarks.gpu_fusion import traffic
    from benchmarks.gpu_prepare import MODELS, _model, inputs
    from compiler.api import final_ir
    from compiler.backends.tvm import BACKEND
    from compiler.ops import layout as lay
    from compiler.target import Target
    target = "cuda -arch=sm_90"
    print(f"{'model':28s} {'batch':>5s} {'mode':5s} {'layouts':8s} {'launches':>8s} {'MiB written':>11s} "
          f"{'conversions':>11s}  {'conv gathers (vector / 4 strided / loop)':41s} {'stores (vector / elements)':27s} "
          f"{'MMA work':8s}  {'spilling convs (bytes)':22s}  loop instructions / MMA (all, worst)")
    with tempfile.TemporaryDirectory() as d:
        for name, batch, mode in itertools.product(args.models, args.batch, args.modes):
            model = _model(name, batch, Path(d))
            kw = (dict(quantize="int8", integer_only=True, calibration=[inputs(name, batch, 100 + i) for i in range(2)])
                  if mode == "int8" else dict(precision=mode))
            for label, disabled in (("blocked", []), ("NCHW", ["assign_gpu_layouts"])):
                g = final_ir(model, target, disable_passes=disabled, **kw)[0]
                written = traffic(g)[1]
                conversions = sum(n.op in (lay.pack, lay.unpack) for n in g.nodes)
                exe = BACKEND.build(g, Target.parse(target))
                launches = len(exe.launches())
                loads, stores = gathers(exe.cuda_source())
                cubin, log = sass.assemble(exe.ptx())
                convs, spilling, most = spills(log)
                loop = loop_instructions(g, exe, cubin)
                print(f"{MODELS[name][0]:28s} {batch:>5d} {mode:5s} {label:8s} {launches:>8d} "
                      f"{written / 2**20 / batch:>11.2f} {conversions:>11d}  {loads['vector']:>6d} / "
                      f"{loads['4 strided']:>3d} / {loads['loop']:<25d} {stores['vector']:>3d} / "
                      f"{stores['elements']:<21d} {mma_work(g):.2f}x     {f'{spilling} of {convs} ({most})':22s}  "
                      + (f"{loop[0]:.2f}, {loop[1]:.2f}" if loop else "- (no nvdisasm)"), flush=True)

if __name__ == "__main__":
    main()
