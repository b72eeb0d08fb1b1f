"""The optimized IR is the program that runs: a small detector-style CNN (conv + SiLU, a C2f-like split
and concat, a squeeze-excite gate) through the kernel-level passes, printed, explained, and compiled.

    python examples/kernel_ir.py

Prints one fused kernel (its body: the conv, the SiLU DAG, the layout it writes), the kernels and
conversions of the whole program, why each unfused node stayed out of its producer's kernel, and the
compiled model's agreement with the reference interpreter on the final IR.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compiler  # noqa: E402
from compiler import interp  # noqa: E402
from compiler.api import final_ir  # noqa: E402
from compiler.ops import kernel  # noqa: E402
from examples.zoo import export_onnx  # noqa: E402
from passes.fusion import explain_fusion  # noqa: E402


class Block(nn.Module):
    """conv + SiLU, split into halves, one half through another conv, concat, an SE gate, a 1x1 conv."""

    def __init__(self, c: int = 32):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, 2, 1)
        self.inner = nn.Conv2d(c // 2, c // 2, 3, 1, 1)
        self.se1, self.se2 = nn.Conv2d(c + c // 2, 8, 1), nn.Conv2d(8, c + c // 2, 1)
        self.out = nn.Conv2d(c + c // 2, c, 1)

    def forward(self, x):
        a = nn.functional.silu(self.stem(x))
        lo, hi = a.chunk(2, 1)
        y = torch.cat([lo, hi, nn.functional.silu(self.inner(hi))], 1)
        gate = torch.sigmoid(self.se2(nn.functional.silu(self.se1(y.mean((2, 3), keepdim=True)))))
        return self.out(y * gate)


def main() -> None:
    torch.manual_seed(0)
    model, x = Block().eval(), torch.randn(1, 3, 32, 32)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, x, Path(tmp) / "block.onnx")
        g = compiler.optimize(compiler.import_model(path))
        final, _ = final_ir(path, "llvm -num-threads=1")
    kernels = [n for n in final.nodes if n.op is kernel.fused]
    print(f"{len(g.nodes)} nodes before the kernel-level passes, {len(final.nodes)} after: "
          f"{len(kernels)} kernels, the rest conversions and data movement\n")
    print("the first kernel (a conv with its SiLU, writing NCHW16c):")
    print("\n".join(line for line in str(final).splitlines()[1:12] if "ir.constant" not in line), "\n  ...\n")
    print("every node of the final program:")
    for n in final.nodes:
        what = f"{n.attrs['kernel']:8s} tile {list(n.attrs['tile'])}" if n.op is kernel.fused else ""
        print(f"  {n.op.name:14s} {what:24s} -> {n.outputs[0].type}")
    print("\nwhy these nodes are not in their producer's kernel:")
    for name, why in explain_fusion(g).items():
        print(f"  {name}: {why}")
    xs = x.numpy()
    want = interp.run(final, xs)[0]
    got = compiler.compile(g, "llvm -num-threads=1").run(xs)[0]
    print(f"\ncompiled vs the interpreter on the final IR: max |diff| {np.abs(got - want).max():.2e}")
    with torch.no_grad():
        print(f"compiled vs PyTorch: max |diff| {np.abs(got - model(x).numpy()).max():.2e}")


if __name__ == "__main__":
    main()
