"""What the GPU's fused kernels save, side by side in one run and without a GPU: kernel launches and bytes the
kernels write per inference of the cuda program, with the fused kernels (each int8 conv / matmul and each
float16 conv one GEMM that writes its final result, each attention one kernel: compiler/backends/tvm_fused/
cuda.py) and without them (fuse_kernels and fuse_attention off: every op lowered alone, the conv's int32 or
float16 sum and the attention's scores written and read back).

    PYTHONPATH=. python benchmarks/gpu_fusion.py [--models cnn encoder detector attention]
                                                 [--modes fp32 int8 fp16]

Counted on the Relax program TVM compiles (after its own FuseOps, reshapes as views): each call_tir is one
kernel launch, its output the bytes it writes. The models are benchmarks/gpu_prepare.py's (ResNet-18 224,
BERT-small seq 128, YOLOv8n 320, one attention of 12 heads x 4096 x 64: FP32 / FP16 only), batch 1. Time on
a GPU: benchmarks/gpu_check.sh.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def traffic(g) -> tuple[int, int]:
    """(kernel launches, bytes the kernels write) of `g`'s cuda program."""
    import tvm

    from compiler.backends.tvm import lower_to_relax
    from compiler.backends.tvm_cuda import cuda_target
    from compiler.backends.tvm_cuda_schedule import fuse_cuda
    from compiler.target import Target
    target = Target.parse("cuda -arch=sm_90")
    mod = fuse_cuda(lower_to_relax(g, target), cuda_target(target))
    mod = tvm.relax.transform.RewriteDataflowReshape()(mod)
    calls, written = 0, 0

    def visit(e):
        nonlocal calls, written
        if isinstance(e, tvm.relax.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name == "relax.call_tir":
            calls += 1
            ty = e.ty
            written += int(np.prod([int(s) for s in ty.shape.values])) * tvm.runtime.DataType(ty.dtype).bits // 8
    tvm.relax.analysis.post_order_visit(mod["main"].body, visit)
    return calls, written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["cnn", "encoder", "detector", "attention"],
                    choices=["cnn", "encoder", "detector", "attention"])
    ap.add_argument("--modes", nargs="+", default=["fp32", "int8", "fp16"], choices=["fp32", "int8", "fp16"])
    args = ap.parse_args()
    from benchmarks.gpu_prepare import MODELS, _model, inputs
    from compiler.api import final_ir
    print(f"{'model':44s} {'mode':5s} {'launches fused / unfused':>26s} {'MiB written fused / unfused':>30s}")
    with tempfile.TemporaryDirectory() as d:
        for name in args.models:
            model = _model(name, 1, Path(d))
            for mode in args.modes:
                if name == "attention" and mode == "int8":
                    continue
                kw = (dict(quantize="int8", integer_only=True, calibration=[inputs(name, 1, 100 + i) for i in range(2)])
                      if mode == "int8" else dict(precision=mode))
                fused = traffic(final_ir(model, "cuda -arch=sm_90", **kw)[0])
                alone = traffic(final_ir(model, "cuda -arch=sm_90", disable_passes=["fuse_kernels", "fuse_attention"],
                                         **kw)[0])
                print(f"{MODELS[name][0]:44s} {mode:5s} {fused[0]:>12d} / {alone[0]:<11d} "
                      f"{fused[1] / 2**20:>14.2f} / {alone[1] / 2**20:<13.2f}", flush=True)


if __name__ == "__main__":
    main()
