"""Attention as one pass over the keys: a small BERT-style encoder's attention chains, their passes over
the keys before and after fuse_attention, and the compiled model with the fused kernel.

    python examples/attention_fusion.py

Prints the cascade report (`compile model.onnx --emit einsum`: 3 passes and an S x S buffer as written,
1 pass and a block-sized buffer after the rewrite), the fused node's body, and the compiled model's
agreement with PyTorch. Then a small Llama (transformers, random weights; 4 query heads sharing 2 K/V
heads, causal) through the torch frontend: its attention fused with the causal mask as the kernel's
block skipping and K/V read unrepeated. Last, the same encoder integer-only, with and without the one-pass
integer attention (`--integer-attention`: Shiftmax inside the running recurrence, q.attention): the
cascades it rewrites and both builds' cosine to float.
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


def llama() -> None:
    """Grouped-query, causal attention as transformers writes it (sdpa: is_causal, enable_gqa)."""
    import transformers

    class LastHidden(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, ids):
            return self.model(input_ids=ids).last_hidden_state

    cfg = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                   num_hidden_layers=1, intermediate_size=128, vocab_size=100)
    torch.manual_seed(0)
    model, ids = LastHidden(transformers.LlamaModel(cfg)).eval(), torch.randint(0, 100, (1, 128))
    g = compiler.optimize(compiler.import_model(model, example_inputs=(ids,)))
    after = report(g).split("// after fuse_attention")[1]
    print("\nLlama, 4 query heads over 2 K/V heads, causal, 128 tokens; after fuse_attention:")
    print("\n".join(line for line in after.splitlines() if line.startswith("//")))
    cm = compiler.compile(model, "llvm -num-threads=1", example_inputs=(ids,))
    with torch.no_grad():
        want = model(ids).numpy()
    print(f"compiled vs PyTorch: max |diff| {np.abs(cm.run(ids.numpy())[0] - want).max():.2e}")


def integer() -> None:
    """The integer-only encoder: the unfused integer attention (3 passes, S x S int16 scores) and the
    opt-in one-pass q.attention, each build's output against float."""
    from compiler import interp
    from passes.einsum import format_cascades
    torch.manual_seed(0)
    model = zoo.BertEncoder(vocab=100, hidden=64, heads=4, ffn=128, layers=2, seq=128).eval()
    rng = np.random.default_rng(0)
    calib = [rng.integers(0, 100, (1, 128)) for _ in range(4)]
    ids = rng.integers(0, 100, (1, 128))
    with torch.no_grad():
        want = model(torch.tensor(ids)).numpy().ravel()
    opts = dict(example_inputs=(torch.tensor(ids),), quantize="int8", calibration=calib, integer_only=True)
    for on in (False, True):
        g, _ = final_ir(model, "llvm -num-threads=1", integer_attention=on, **opts)
        got = interp.run(g, ids)[0].ravel()
        cos = float(got @ want / np.linalg.norm(got) / np.linalg.norm(want))
        kinds = [n.attrs["kernel"] if n.op is kernel.fused else n.op.name for n in g.nodes]
        print(f"\ninteger-only, integer_attention={on}: cosine to float {cos:.5f}; {kinds.count('shiftmax')} "
              f"Shiftmax kernels, {kinds.count('q.attention')} one-pass q.attention kernels")
        if on:
            print("\n".join(format_cascades(g).splitlines()[:3]))


if __name__ == "__main__":
    main()
    llama()
    integer()
