"""ResNet-18 for an NVIDIA GPU on tensor cores: FP16 (float16 fragments, float32 sums) and integer-only INT8
(int8 fragments, or dp4a with the target option -int8=dp4a), through mma.sync and ldmatrix (the default) or
WMMA (the target option -mma=wmma). Every conv is one implicit GEMM whose im2col never exists in memory
(compiler/backends/tvm_kernels/cuda_gemm.py). No GPU is needed to build.

    python examples/gpu_tensor_cores.py [sm_90|sm_80]

Prints, per build, how its kernels compute (tensor cores, dp4a or plain) and checks that ptxas
assembles its PTX when nvcc is there; on a machine with a GPU it also runs each build and compares it
with the reference interpreter (bit-exact for INT8). benchmarks/gpu_check.sh times them against PyTorch.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler  # noqa: E402
from compiler import interp  # noqa: E402
from compiler.api import final_ir  # noqa: E402
from compiler.backends import tvm_cuda  # noqa: E402


def kinds(src: str) -> dict[str, int]:
    """kernel name -> how it computes, counted."""
    out: dict[str, int] = {}
    for body in src.split('extern "C" __global__')[1:]:
        if "{" not in body.split("\n")[0]:
            continue                                   # a declaration
        kind = ("tensor cores (mma.sync)" if "mma.sync.aligned" in body else
                "tensor cores (WMMA)" if "wmma::mma_sync" in body else "dp4a" if "__dp4a(" in body else "plain")
        out[kind] = out.get(kind, 0) + 1
    return out


def ptxas_ok(ptx: str, arch: str) -> str:
    if shutil.which("ptxas") is None:
        return "ptxas not found"
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.ptx"
        path.write_text(ptx)
        r = subprocess.run(["ptxas", f"-arch={arch}", str(path), "-o", str(Path(d) / "m.cubin")],
                           capture_output=True, text=True)
    return "ptxas: ok" if r.returncode == 0 else f"ptxas failed: {r.stderr.strip().splitlines()[:1]}"


def main() -> None:
    import torch

    from benchmarks.gpu_prepare import inputs, torch_model
    from examples.zoo import export_onnx
    arch = sys.argv[1] if len(sys.argv) > 1 else "sm_90"
    x = inputs("cnn", 1, 0)[0]
    calibration = [inputs("cnn", 1, 100 + i) for i in range(2)]
    with tempfile.TemporaryDirectory() as d:
        path = export_onnx(torch_model("cnn"), torch.from_numpy(x), Path(d) / "resnet18.onnx")
        builds = {"FP16": ("", {"precision": "fp16"}),
                  "INT8 (tensor cores)": ("", {"quantize": "int8", "integer_only": True, "calibration": calibration}),
                  "INT8 (WMMA)": (" -mma=wmma", {"quantize": "int8", "integer_only": True,
                                                 "calibration": calibration}),
                  "INT8 (dp4a)": (" -int8=dp4a", {"quantize": "int8", "integer_only": True,
                                                  "calibration": calibration})}
        for name, (option, kw) in builds.items():
            target = f"cuda -arch={arch}{option}"
            cm = compiler.compile(str(path), target=target, **kw)
            src = cm.executable.cuda_source()
            convs = len(re.findall(r"__global__ void (?:__launch_bounds__\(\d+\) )?\w*conv2d\w*\(", src)) // 2
            line = f"{name:20s} {target}: {convs} conv kernels; kernels by kind {kinds(src)}"
            if shutil.which("nvcc"):
                line += f"; {ptxas_ok(cm.executable.source('ptx'), arch)}"
            print(line)
            if tvm_cuda.gpu_available():
                g, _ = final_ir(str(path), target, **kw)
                got, want = cm.run(x)[0], interp.run(g, x)[0]
                if "INT8" in name:
                    print(f"{'':20s} on the GPU: bit-exact with the interpreter: {np.array_equal(got, want)}")
                else:
                    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
                    print(f"{'':20s} on the GPU: relative error vs the interpreter {rel:.1e}")


if __name__ == "__main__":
    main()
