"""Attention as one pass over the keys: a small BERT-style encoder's attention chains, their passes over
the keys before and after fuse_attention, and the compiled model with the fused kernel.

    python examples/attention_fusion.py

Prints the cascade report (`compile model.onnx --emit einsum`: 3 passes and an S x S buffer as written,
1 pass and a block-sized buffer after the rewrite), the fused node's body, and the compiled model's
agreement with PyTorch.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compiler  # noqa: E402
from compiler.api import final_ir  # noqa: E402
from compiler.ops import kernel  # noqa: E402
from examples import zoo  # noqa: E402
from passes.einsum import report  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    model = zoo.BertEncoder(vocab=100, hidden=64, heads=4, ffn=128, layers=2, seq=64).eval()
    ids = torch.randint(0, 100, (1, 64))
    with tempfile.TemporaryDirectory() as tmp:
        path = zoo.export_onnx(model, ids, Path(tmp) / "bert.onnx")
        g = compiler.optimize(compiler.import_model(path))
        print(report(g))
        final, _ = final_ir(path, "llvm -num-threads=1")
        cm = compiler.compile(path, "llvm -num-threads=1")
    att = [n for n in final.nodes if n.op is kernel.fused and n.attrs["kernel"] == "attention"]
    print(f"{len(att)} attention kernels, tile (query block, key block) = {list(att[0].attrs['tile'])}; "
          f"the first one's body: {[m.op.name for m in att[0].attrs['body'].nodes]}")
    with torch.no_grad():
        want = model(ids).numpy()
    got = cm.run(ids.numpy())[0]
    print(f"compiled vs PyTorch: max |diff| {np.abs(got - want).max():.2e}")


if __name__ == "__main__":
    main()
