"""Fused kernels on an NVIDIA GPU, checked without one.

    python examples/gpu_fused.py [sm_90|sm_80]

Two programs for `cuda -arch=...`: a residual CNN with SiLU in integer-only INT8, where every fused conv is one
tensor-core GEMM that writes its requantized (and table-activated, residual-added) 8-bit result, and an
attention (12 heads, 512 queries and keys, causal), which is one kernel with an online softmax. The CNN's convs
read and write channel blocks, NCHW{16}c (passes/layout.py, assign_gpu_layouts: a thread's 4 channels one word in
the gather); it prints each kernel's layouts. For each program it prints the kernels the GPU launches, then runs the same kernels built for the CPU without their GPU schedules
(`compiler.backends.tvm_cuda.build_for_cpu`) against the reference interpreter: bit-exact for the integer CNN,
float32 rounding for the attention. On a machine with a GPU it also runs the cuda build there and compares.
Through the MLIR backend the attention is one `iree_linalg_ext.attention`, which IREE tiles for the GPU; its
lowering is built for the CPU too and compared with the interpreter.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compiler import interp  # noqa: E402
from compiler.api import final_ir  # noqa: E402
from compiler.backends import tvm_cuda  # noqa: E402
from compiler.backends.mlir import BACKEND as MLIR  # noqa: E402
from compiler.backends.mlir_lower import attention as mlir_attention  # noqa: E402
from compiler.backends.tvm import BACKEND  # noqa: E402
from compiler.ops import kernel, layout as lay  # noqa: E402
from compiler.target import Target  # noqa: E402

nn = torch.nn


class ResidualSiLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.SiLU())
        self.a = nn.Sequential(nn.Conv2d(32, 32, 3, 1, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(32, 32, 3, 1, 1), nn.BatchNorm2d(32))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        y = self.stem(x)
        y = torch.relu(y + self.b(self.a(y)))
        return self.head(y.mean(dim=(2, 3)))


class Attention(nn.Module):
    def forward(self, q, k, v):
        return nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)


def show(name: str, g, target: str, xs: list[np.ndarray], exact: bool) -> None:
    exe = BACKEND.build(g, Target.parse(target))
    kernels = re.findall(r"R\.call_tir\(cls\.(\w+)", exe.source("relax"))
    print(f"{name}: our kernels {kernels}")
    want = interp.run(g, *xs)[0]
    got = tvm_cuda.build_for_cpu(g, Target.parse(target))(*xs)[0]
    err = np.abs(got.astype(np.float64) - want).max()
    verdict = "bit-exact" if np.array_equal(got, want) else f"max abs error {err:.2e}"
    print(f"{'':4s}the GPU program built for the CPU vs the interpreter: {verdict}")
    assert np.array_equal(got, want) if exact else err <= 1e-4 * np.abs(want).max()
    if tvm_cuda.gpu_available():
        out = exe.run(xs)[0]
        print(f"{'':4s}on the GPU: {'bit-exact' if np.array_equal(out, want) else np.abs(out - want).max()}")


def show_layouts(g) -> None:
    """Each fused conv and pool with the shapes it reads and writes (rank 5: NCHW{b}c), and the conversions."""
    print("integer-only CNN, what each conv kernel reads and writes (rank 5: NCHW{b}c):")
    for n in g.nodes:
        if n.op is kernel.fused and n.attrs["kernel"] in ("qconv", "conv", "pool"):
            print(f"{'':4s}{n.attrs['kernel']:6s} {str(n.inputs[0].type.shape):22s} -> {n.outputs[0].type.shape}")
    conversions = [n.op.name for n in g.nodes if n.op in (lay.pack, lay.unpack)]
    print(f"{'':4s}layout conversions: {conversions or 'none'}")


def show_mlir(model, target: str, xs: list[np.ndarray]) -> None:
    example = tuple(torch.from_numpy(x) for x in xs)
    for precision in ("fp32", "fp16"):
        g, _ = final_ir(model, target, backend="mlir", example_inputs=example, precision=precision)
        exe = MLIR.build(g, Target.parse(target))
        ptx = exe.source("ptx")
        print(f"causal attention through MLIR, {precision}: {exe.source('mlir').count('iree_linalg_ext.attention')} "
              f"iree_linalg_ext.attention, {ptx.count('.entry')} PTX kernels, {ptx.count('mma.sync')} mma.sync")
    mlir_attention.ON_TARGETS = frozenset({"cuda", "llvm"})    # the same lowering, built for the CPU to run it
    g, _ = final_ir(model, "llvm", backend="mlir", example_inputs=example)
    want, got = interp.run(g, *xs)[0], MLIR.build(g, Target.parse("llvm")).run(xs)[0]
    err = np.abs(got - want).max()
    print(f"{'':4s}the op built for the CPU vs the interpreter: max abs error {err:.2e}")
    assert err <= 1e-4 * np.abs(want).max()


def main() -> None:
    arch = sys.argv[1] if len(sys.argv) > 1 else "sm_90"
    target = f"cuda -arch={arch}"
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cnn = ResidualSiLU().eval()
    images = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(3)]
    g, _ = final_ir(cnn, target, example_inputs=(torch.from_numpy(images[0]),), quantize="int8", integer_only=True,
                    calibration=[[x] for x in images[1:]])
    show_layouts(g)
    show("integer-only CNN", g, target, images[:1], exact=True)
    qkv = [rng.standard_normal((1, 12, 512, 64)).astype(np.float32) for _ in range(3)]
    g, _ = final_ir(Attention(), target, example_inputs=tuple(torch.from_numpy(x) for x in qkv))
    show("causal attention", g, target, qkv, exact=False)
    show_mlir(Attention(), target, qkv)


if __name__ == "__main__":
    main()
