"""I-ViT's I-LayerNorm on an NVIDIA GPU (compiler/backends/tvm_kernels/cuda_ivit.py), checked without one.

    python examples/gpu_layernorm.py [sm_90|sm_80]

A BERT-style encoder (2 layers, hidden 128, 2 heads, 128 tokens) compiled integer-only for `cuda -arch=...` through
TVM: each q.layernorm is one kernel, a block per row, whose only divisions are the row's ten Newton steps and its
factor, once per row (dlight's reduction schedule had put them in every element); the GPU program built for the CPU
without its GPU schedules (`compiler.backends.tvm_cuda.build_for_cpu`) is compared with the reference interpreter,
bit for bit; with ptxas on the PATH, the kernel's registers and spills. On a machine with a GPU the cuda build also
runs there and is compared.
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
from compiler.backends.tvm import BACKEND as TVM  # noqa: E402
from compiler.target import Target  # noqa: E402
from examples import zoo  # noqa: E402
from examples.gpu_integer_attention import ptxas_usage  # noqa: E402


def main() -> None:
    arch = sys.argv[1] if len(sys.argv) > 1 else "sm_90"
    target = f"cuda -arch={arch}"
    torch.manual_seed(0)
    model = zoo.BertEncoder(vocab=100, hidden=128, heads=2, ffn=256, layers=2, seq=128).eval()
    rng = np.random.default_rng(0)
    calib = [rng.integers(0, 100, (1, 128)) for _ in range(2)]
    ids = rng.integers(0, 100, (1, 128))
    g, _ = final_ir(model, target, example_inputs=(torch.tensor(ids),), quantize="int8", calibration=calib,
                    integer_only=True)
    print(f"TVM, {target}: {[n.op.name for n in g.walk()].count('q.layernorm')} q.layernorm")
    exe = TVM.build(g, Target.parse(target))
    src = exe.source("cuda")
    for threads, name in re.findall(r"__launch_bounds__\((\d+)\) (\w+)\([^;{]*\)\s*\{", src):
        if name.startswith("layernorm"):
            body = src.split(f") {name}(")[-1].split("\n}\n")[0]
            print(f"    {name}: {threads} threads a row of 128 values, {body.count(' / ')} divisions a row "
                  f"(under threadIdx.x == 0)")
    want = interp.run(g, ids)[0]
    got = tvm_cuda.build_for_cpu(g, Target.parse(target))(ids)[0]
    print(f"    the GPU program built for the CPU vs the interpreter: "
          f"{'bit-exact' if np.array_equal(got, want) else 'DIFFERENT'}")
    for line in ptxas_usage(exe.source("ptx"), arch, "layernorm"):
        print(f"    {line}")
    if tvm_cuda.gpu_available():
        print(f"    on the GPU: {'bit-exact' if np.array_equal(exe.run([ids])[0], want) else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
