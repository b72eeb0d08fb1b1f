"""Train the demo's digit classifier (a few seconds on a CPU) and export it to ONNX.

    python examples/make_demo_model.py   # writes examples/models/digits_cnn.onnx
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples.digits import load_digits_split  # noqa: E402
from examples.zoo import TinyCNN, export_onnx  # noqa: E402


def train(epochs: int = 15, seed: int = 0, logits: bool = False) -> tuple[TinyCNN, float]:
    """TinyCNN trained on sklearn's digits; returns (model, test accuracy)."""
    torch.manual_seed(seed)
    xtr, ytr, xte, yte = (torch.from_numpy(a) for a in load_digits_split(seed))
    model = TinyCNN(logits=logits)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        model.train()
        for i in torch.randperm(len(xtr)).split(64):
            opt.zero_grad()
            out = model(xtr[i])
            logp = torch.log_softmax(out, 1) if logits else torch.log(out + 1e-9)
            loss = torch.nn.functional.nll_loss(logp, ytr[i])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    return model, acc


if __name__ == "__main__":
    model, acc = train()
    out = Path(__file__).parent / "models" / "digits_cnn.onnx"
    export_onnx(model, torch.zeros(1, 1, 8, 8), out)
    print(f"test accuracy {acc:.4f}; wrote {out} ({out.stat().st_size} bytes)")
