"""What the GPU's channel-blocked layouts change, side by side in one run and without a GPU: the integer-only INT8
and the FP16 cuda programs with assign_gpu_layouts (each conv reads and writes NCHW{16}c or NCHW{8}c,
passes/layout.py) and without it (NCHW throughout), counted on what TVM compiles:

* launches and MiB the kernels write per image (the layout conversions included);
* how each conv's gather loads the activation, read from the generated CUDA C: a thread's 4 reduction elements
  as one vector load ("vector": a 32-bit word of int8, 64 bits of float16), as 4 loads of one vector
  ("4 strided": NCHW's 4 channels H*W apart), or one by one in a loop ("loop": TVM could not vectorize them;
  the 3-channel stem image);
* how it writes its result: one vector store per 4 values, or element by element;
* the tensor cores' work over the convs' own multiply-adds ("MMA work"): a GEMM's rows and columns are padded
  to the block tile (choose_tiles', costmodel/gpu_tiles.py; without it 128, or 64, 32, 16 along an axis of at
  most that many: gpu_tile.block_tile), its reduction to 16;
* the conv kernels that spill registers, and the most bytes one spills (`ptxas -v`, sm_90).

    PYTHONPATH=. python benchmarks/gpu_layouts.py [--models cnn detector] [--modes int8 fp16] [--batch 1 32]

The models are benchmarks/gpu_prepare.py's (ResNet-18 224, YOLOv8n 320). Static counts, not times: the time on a
GPU comes from benchmarks/gpu_check.sh with an artifact set prepared with and without the pass
(docs/gpu_check.md, "Prepared").
"""
from __future__ import annotations

import argparse
import itertools
import re
import subprocess
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


def spills(ptx: str) -> tuple[int, int, int]:
    """(conv GEMM kernels, how many of them spill registers, the most bytes one spills) by `ptxas -v` for sm_90."""
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "m.ptx").write_text(ptx)
        log = subprocess.run(["ptxas", "-v", "-arch=sm_90", "m.ptx", "-o", "m.cubin"], cwd=d, check=True,
                             capture_output=True, text=True).stderr
    stores = {name: int(b) for name, b in
              re.findall(r"Function properties for (\w+)\n\s*\d+ bytes stack frame, (\d+) bytes spill stores", log)}
    convs = [b for name, b in stores.items() if "8_conv2d" in name or "f16_conv2d" in name]
    return len(convs), sum(b > 0 for b in convs), max(convs, default=0)


def mma_work(g) -> float:
    """Padded multiply-adds of the conv GEMMs on tensor cores over their real ones (cuda_gemm / cuda_wmma's
    padding: rows and columns to the block tile, gpu_tile.block_tile, the reduction to 16)."""
    from compiler.backends.tvm_kernels.cuda_gemm import MMA_K
    from compiler.gpu_tile import block_tile
    from compiler.ops import kernel
    padded = real = 0
    for node in g.nodes:
        if node.op is not kernel.fused or node.attrs["kernel"] not in ("qconv", "conv"):
            continue
        a = kernel.anchor_of(node.attrs["body"])
        if a.attrs["groups"] != 1 or a.inputs[0].type.rank != 4:
            continue
        (n, ci, _, _), (co, _, kh, kw) = a.inputs[0].type.shape, a.inputs[1].type.shape
        m, k = a.outputs[0].type.shape[2] * a.outputs[0].type.shape[3], ci * kh * kw
        kp = -(-k // MMA_K) * MMA_K
        up = (lambda v, t: -(-v // t) * t)
        if node.outputs[0].type.rank == 5:                  # blocked: rows = the batch's pixels, columns = co
            rows, cols, gemms = n * m, co, 1
        else:                                              # plain: rows = co, columns = one image's pixels
            rows, cols, gemms = co, m, n
        tile_r, tile_c = tuple(node.attrs["tile"]) or block_tile(rows, cols)     # the tile pass's, or the rule's
        padded += gemms * up(rows, tile_r) * up(cols, tile_c) * kp
        real += n * m * co * k
    return padded / real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["cnn", "detector"], choices=["cnn", "detector"],
                    help="gpu_prepare's models to count (default: both)")
    ap.add_argument("--modes", nargs="+", default=["int8", "fp16"], choices=["int8", "fp16"],
                    help="integer-only INT8 and / or FP16 (default both; FP32 convs are not blocked)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32],
                    help="batch sizes the programs are compiled for (default 1 32)")
    args = ap.parse_args()
    from benchmarks.gpu_fusion import traffic
    from benchmarks.gpu_prepare import MODELS, _model, inputs
    from compiler.api import final_ir
    from compiler.backends.tvm import BACKEND
    from compiler.ops import layout as lay
    from compiler.target import Target
    target = "cuda -arch=sm_90"
    print(f"{'model':28s} {'batch':>5s} {'mode':5s} {'layouts':8s} {'launches':>8s} {'MiB written':>11s} "
          f"{'conversions':>11s}  {'conv gathers (vector / 4 strided / loop)':41s} {'stores (vector / elements)':27s} "
          f"{'MMA work':8s}  spilling convs (bytes)")
    with tempfile.TemporaryDirectory() as d:
        for name, batch, mode in itertools.product(args.models, args.batch, args.modes):
            model = _model(name, batch, Path(d))
            kw = (dict(quantize="int8", integer_only=True, calibration=[inputs(name, batch, 100 + i) for i in range(2)])
                  if mode == "int8" else dict(precision=mode))
            for label, disabled in (("blocked", []), ("NCHW", ["assign_gpu_layouts"])):
                g = final_ir(model, target, disable_passes=disabled, **kw)[0]
                launches, written = traffic(g)
                conversions = sum(n.op in (lay.pack, lay.unpack) for n in g.nodes)
                exe = BACKEND.build(g, Target.parse(target))
                loads, stores = gathers(exe.cuda_source())
                convs, spilling, most = spills(exe.ptx())
                print(f"{MODELS[name][0]:28s} {batch:>5d} {mode:5s} {label:8s} {launches:>8d} "
                      f"{written / 2**20 / batch:>11.2f} {conversions:>11d}  {loads['vector']:>6d} / "
                      f"{loads['4 strided']:>3d} / {loads['loop']:<25d} {stores['vector']:>3d} / "
                      f"{stores['elements']:<21d} {mma_work(g):.2f}x     {spilling} of {convs} ({most})", flush=True)

if __name__ == "__main__":
    main()
