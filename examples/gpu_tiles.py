"""The GPU's tensor-core block tiles, as the tile pass chooses them, without a GPU.

    python examples/gpu_tiles.py [--batch 32] [--arch sm_90] [--mode int8|fp16]

Compiles a ResNet-18 (random weights) for `cuda -arch=...` in integer-only INT8 or FP16 and prints, for every conv
that is one tensor-core GEMM, what `choose_tiles` wrote into the final IR: the GEMM (its rows, columns and
reduction), the rule's tile (gpu_tile.block_tile) and the model's (costmodel/gpu_tiles.py), each with its thread
blocks, the share of SMs they fill and the model's estimate. The estimates are the analytic model's, not
measurements: benchmarks/gpu_check.sh times the artifacts on a GPU (docs/gpu_check.md).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.gpu_prepare import _model, inputs  # noqa: E402
from compiler.api import final_ir  # noqa: E402
from compiler.backends.tvm_fused import cuda  # noqa: E402
from compiler.backends.tvm_fused.body import parse  # noqa: E402
from compiler.gpu_tile import block_tile  # noqa: E402
from compiler.ops import kernel  # noqa: E402
from compiler.target import Target  # noqa: E402
from costmodel import gpu_tiles  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32, help="batch size compiled for (default 32)")
    ap.add_argument("--arch", default="sm_90", help="the GPU architecture (default sm_90: H100 / H200)")
    ap.add_argument("--mode", choices=["int8", "fp16"], default="int8", help="integer-only INT8 (default) or FP16")
    args = ap.parse_args()
    target = Target.parse(f"cuda -arch={args.arch}")
    gpu = gpu_tiles.gpu_of(args.arch)
    with tempfile.TemporaryDirectory() as d:
        model = _model("cnn", args.batch, Path(d))
        kw = (dict(quantize="int8", integer_only=True, calibration=[inputs("cnn", args.batch, 100 + i) for i in range(2)])
              if args.mode == "int8" else dict(precision="fp16"))
        g = final_ir(model, str(target), **kw)[0]
    print(f"ResNet-18 {args.mode.upper()}, batch {args.batch}, {gpu.name} model ({gpu.sms} SMs)")
    print(f"{'GEMM (batch x rows x cols x k)':32s} {'rule tile':>10s} {'blocks':>7s} {'SMs':>5s} {'est us':>7s}   "
          f"{'chosen':>10s} {'blocks':>7s} {'SMs':>5s} {'est us':>7s}")
    total = [0.0, 0.0]
    for n in g.nodes:
        if n.op is not kernel.fused or not n.attrs["tile"]:
            continue
        spec = cuda.gemm_spec(parse(n), target)
        row = f"{spec.batch} x {spec.rows} x {spec.cols} x {spec.k}"
        for i, tile in enumerate((block_tile(spec.rows, spec.cols), tuple(n.attrs["tile"]))):
            f = gpu_tiles.features(spec, tile, gpu)
            est = gpu_tiles.estimate(spec, tile, gpu) * 1e6
            total[i] += est
            row += f" {str(tile):>10s} {round(2 ** f['log_blocks']):>7d} {f['sm_fill']:>5.2f} {est:>7.1f}" + \
                ("   " if i == 0 else "")
        print(f"{row:s}")
    print(f"sum of the model's estimates: rule {total[0]:.1f} us, chosen {total[1]:.1f} us (not measured)")


if __name__ == "__main__":
    main()
