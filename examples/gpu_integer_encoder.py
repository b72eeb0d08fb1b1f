"""An integer-only encoder's own kernels on an NVIDIA GPU, checked without one.

    python examples/gpu_integer_encoder.py [sm_90|sm_80]

A BERT-style encoder (2 layers, hidden 128, 2 heads, 128 tokens) compiled integer-only for `cuda -arch=...` through
TVM. It prints:
- each q.layernorm kernel (compiler/backends/tvm_kernels/cuda_ivit.py): a block per row, whose only divisions are the
  row's ten Newton steps and its factor, once per row (dlight's reduction schedule had put them in every element);
- each attention matmul (Q K^T, P V: tvm_lower/cuda_gemm.batch_matmul): an int8 GEMM per batch entry, on mma.sync
  (int8 x int8) or dp4a (uint8 x int8), and the type it writes (its requant fused: int16 scores, int8 context);
- whether the GPU program built for the CPU without its GPU schedules (`compiler.backends.tvm_cuda.build_for_cpu`)
  equals the reference interpreter, bit for bit; with ptxas on the PATH, these kernels' registers and spills.
On a machine with a GPU the cuda build also runs there and is compared.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compiler import interp  # noqa: E402
from compiler.api import final_ir  # noqa: E402
from compiler.backends import tvm_cuda  # noqa: E402
from compiler.backends.tvm import BACKEND as TVM  # noqa: E402
from compiler.target import Target  # noqa: E402
from examples.gpu_integer_attention import integer_encoder, ptxas_usage  # noqa: E402


def main() -> None:
    arch = sys.argv[1] if len(sys.argv) > 1 else "sm_90"
    target = f"cuda -arch={arch}"
    model, ids, opts = integer_encoder()
    g, _ = final_ir(model, target, **opts)
    print(f"TVM, {target}: {[n.op.name for n in g.walk()].count('q.layernorm')} q.layernorm")
    exe = TVM.build(g, Target.parse(target))
    src, relax_text = exe.source("cuda"), exe.source("relax")
    for threads, name in re.findall(r"__launch_bounds__\((\d+)\) (\w+)\([^;{]*\)\s*\{", src):
        body = src.split(f") {name}(")[-1].split("\n}\n")[0]
        if name.startswith("layernorm"):
            print(f"    {name}: {threads} threads a row of 128 values, {body.count(' / ')} divisions a row "
                  f"(under threadIdx.x == 0)")
        elif name.startswith("int8_batch_matmul"):
            inner = "mma.sync" if "mma.sync" in body else "dp4a" if "__dp4a" in body else "int32 SIMT"
            out = re.search(rf"cls\.{name.removesuffix('_kernel')}, .*?dtype=\"(\w+)\"", relax_text).group(1)
            print(f"    {name}: {inner}, writes {out}")
    want = interp.run(g, ids)[0]
    got = tvm_cuda.build_for_cpu(g, Target.parse(target))(ids)[0]
    print(f"    the GPU program built for the CPU vs the interpreter: "
          f"{'bit-exact' if np.array_equal(got, want) else 'DIFFERENT'}")
    for holds in ("layernorm", "batch_matmul"):
        for line in ptxas_usage(exe.source("ptx"), arch, holds):
            print(f"    {line}")
    if tvm_cuda.gpu_available():
        print(f"    on the GPU: {'bit-exact' if np.array_equal(exe.run([ids])[0], want) else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
