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
  most that many: gpu_tile.block_tile), its reduction to a whole fragment's (16, or 32 for int8 on mma.sync
  m16n8k32: gpu_tile.fragment_k);
* the conv kernels that spill registers, and the most bytes one spills (`ptxas -v`, sm_90);
* the instructions a warp of the conv GEMM kernels issues per tensor-core MMA of m16n8k16 (an int8 m16n8k32,
  one instruction, counts two): the whole kernel (prologue, the main loop times its trips, epilogue; nvcc
  unrolls a short reduction whole), over all of them weighted by their MMAs and the worst kernel's, read from
  the SASS (benchmarks/sass.py; nvdisasm from the dev extra): a warp scheduler issues one instruction a clock
  and an MMA keeps a tensor core about 2-4 clocks, so above that a kernel is bound by its gather's address
  arithmetic, not the tensor cores.

    PYTHONPATH=. python benchmarks/gpu_layouts.py [--models cnn detector] [--modes int8 fp16] [--batch 1 32]
                                                  [--layouts blocked NCHW] [--mma sync wmma]

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


def conv_gemms(g, target: str = "cuda -arch=sm_90") -> list[tuple[int, int, float]]:
    """(padded, real multiply-adds, MMAs of m16n8k16 per warp) of each conv on tensor cores, in graph order: its
    GEMM as the emitter builds it (tvm_fused/cuda.gemm_spec: the blocked or per-image shape, a padded image's zero
    channels), rows and columns padded to the node's block tile (or gpu_tile.block_tile's), the reduction to
    whole fragments (16 or 32 for the target's -mma: GpuGemm.kp); a warp's share of a block tile."""
    from compiler.backends.tvm_fused import cuda
    from compiler.backends.tvm_fused.body import NotFusable, parse
    from compiler.gpu_tile import block_tile, warps_and_fragments
    from compiler.ops import kernel
    from compiler.target import Target
    up = (lambda v, t: -(-v // t) * t)
    t = Target.parse(target)
    out = []
    for node in g.nodes:
        if node.op is not kernel.fused or node.attrs["kernel"] not in ("qconv", "conv"):
            continue
        try:
            spec = cuda.gemm_spec(parse(node), t)
        except NotFusable:                                 # lowered op by op: no tensor-core GEMM
            continue
        a = kernel.anchor_of(node.attrs["body"])
        tile_r, tile_c = tuple(node.attrs["tile"]) or block_tile(spec.rows, spec.cols)
        kp = spec.kp
        warps = warps_and_fragments(tile_r)[0] * warps_and_fragments(tile_c)[0]
        out.append((spec.batch * up(spec.rows, tile_r) * up(spec.cols, tile_c) * kp,
                    int(np.prod(a.outputs[0].type.shape)) * int(np.prod(a.inputs[1].type.shape[1:])),
                    tile_r * tile_c * kp / warps / MMA_MACS))
    return out


def mma_work(g, target: str = "cuda -arch=sm_90") -> float:
    """Padded multiply-adds of the conv GEMMs on tensor cores over their real ones."""
    gemms = conv_gemms(g, target)
    return sum(p for p, _, _ in gemms) / sum(r for _, r, _ in gemms)


MMA_MACS = 16 * 8 * 16      # one IMMA / HMMA m16n8k16


def issued(g, exe, cubin: bytes, target: str = "cuda -arch=sm_90") -> tuple[float, float] | None:
    """(instructions a warp issues per MMA over every conv GEMM kernel, weighted by its MMAs; the worst kernel's)
    from the SASS of `cubin` (benchmarks/sass.py: the whole kernel, its main loop times its trips), or None
    without nvdisasm. A conv's kernel is the one the program launches for it, in order (identical convs share
    one)."""
    from benchmarks import sass
    if sass.nvdisasm() is None:
        return None
    bodies = sass.kernels(sass.disassemble(cubin))
    calls = [k for k in exe.launches() if "_conv2d_" in k]
    gemms = conv_gemms(g, target)
    if len(calls) != len(gemms):
        return None
    per = [(sass.issued_per_mma(bodies[name + "_kernel"], warp), padded)
           for name, (padded, _, warp) in zip(calls, gemms)]
    return sum(i * p for i, p in per) / sum(p for _, p in per), max(i for i, _ in per)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["cnn", "detector"], choices=["cnn", "detector"],
                    help="gpu_prepare's models to count (default: both)")
    ap.add_argument("--modes", nargs="+", default=["int8", "fp16"], choices=["int8", "fp16"],
                    help="integer-only INT8 and / or FP16 (default both; FP32 convs are not blocked)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32],
                    help="batch sizes the programs are compiled for (default 1 32)")
    ap.add_argument("--layouts", nargs="+", default=["blocked", "NCHW"], choices=["blocked", "NCHW"],
                    help="with assign_gpu_layouts (blocked) and / or without it (NCHW); default both")
    ap.add_argument("--mma", nargs="+", default=["sync"], choices=["sync", "wmma"],
                    help="the tensor cores through mma.sync and ldmatrix (sync, the default) and / or WMMA (wmma; the "
                         "cuda target's -mma=)")
    args = ap.parse_args()
    from benchmarks import sass
    from benchmarks.gpu_fusion import traffic
    from benchmarks.gpu_prepare import MODELS, _model, inputs
    from compiler.api import final_ir
    from compiler.backends.tvm import BACKEND
    from compiler.ops import layout as lay
    from compiler.target import Target
    print(f"{'model':28s} {'batch':>5s} {'mode':10s} {'layouts':8s} {'launches':>8s} {'MiB written':>11s} "
          f"{'conversions':>11s}  {'conv gathers (vector / 4 strided / loop)':41s} {'stores (vector / elements)':27s} "
          f"{'MMA work':8s}  {'spilling convs (bytes)':22s}  instructions / MMA (all, worst)")
    with tempfile.TemporaryDirectory() as d:
        for name, batch, mode, product in itertools.product(args.models, args.batch, args.modes, args.mma):
            model = _model(name, batch, Path(d))
            kw = (dict(quantize="int8", integer_only=True, calibration=[inputs(name, batch, 100 + i) for i in range(2)])
                  if mode == "int8" else dict(precision=mode))
            target = "cuda -arch=sm_90" + (f" -mma={product}" if product != "sync" else "")
            for label in args.layouts:
                disabled = [] if label == "blocked" else ["assign_gpu_layouts"]
                g = final_ir(model, target, disable_passes=disabled, **kw)[0]
                written = traffic(g)[1]
                conversions = sum(n.op in (lay.pack, lay.unpack) for n in g.nodes)
                exe = BACKEND.build(g, Target.parse(target))
                launches = len(exe.launches())
                loads, stores = gathers(exe.cuda_source())
                cubin, log = sass.assemble(exe.ptx())
                convs, spilling, most = spills(log)
                loop = issued(g, exe, cubin, target)
                print(f"{MODELS[name][0]:28s} {batch:>5d} {f'{mode}/{product}':10s} {label:8s} "
                      f"{launches:>8d} "
                      f"{written / 2**20 / batch:>11.2f} {conversions:>11d}  {loads['vector']:>6d} / "
                      f"{loads['4 strided']:>3d} / {loads['loop']:<25d} {stores['vector']:>3d} / "
                      f"{stores['elements']:<21d} {mma_work(g, target):.2f}x     {f'{spilling} of {convs} ({most})':22s}  "
                      + (f"{loop[0]:.2f}, {loop[1]:.2f}" if loop else "- (no nvdisasm)"), flush=True)

if __name__ == "__main__":
    main()
