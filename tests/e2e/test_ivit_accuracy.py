"""Integer-only transformers (I-ViT): a ViT trained on sklearn's 8x8 digits (4x4 patches of
2x2 pixels) keeps its accuracy within 1 point once compiled integer-only (Shiftmax, ShiftGELU,
I-LayerNorm, run in the reference interpreter); a BERT-style encoder with random weights keeps
cosine >= 0.99 between its integer-only pooled output (ShiftTanh pooler) and the FP32 one."""
from __future__ import annotations

import time

import numpy as np
import pytest

from tests.conftest import has_module, requires_torch

pytestmark = [requires_torch, pytest.mark.skipif(not has_module("sklearn"), reason="needs scikit-learn")]


def _train_vit(x, y, seconds: float = 25.0, epochs: int = 40):
    import torch

    from examples.zoo import ViT
    torch.manual_seed(0)
    model = ViT(image=8, patch=2, hidden=64, heads=4, ffn=128, layers=2)
    opt = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * (-(-len(x) // 64)))
    xt, yt = torch.tensor(x), torch.tensor(y)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
            sched.step()
        if time.perf_counter() - t0 > seconds:
            break
    return model.eval()


def _ops(g) -> dict[str, int]:
    return g.op_histogram()


def test_ivit_vit_digits_accuracy():
    import torch

    import compiler
    from compiler import interp
    from examples.digits import load_digits_split
    from passes.quantize import QuantConfig, calibration_batches
    from passes.quantize_pipeline import quantize_graph
    from passes.verify_integer_only import verify_integer_only

    torch.set_num_threads(1)
    x_tr, y_tr, x_te, y_te = load_digits_split()
    t0 = time.perf_counter()
    model = _train_vit(x_tr, y_tr)
    train_s = time.perf_counter() - t0
    g = compiler.import_model(model, example_inputs=(torch.tensor(x_te),))
    calib = calibration_batches(g, [x_tr[:360]])
    for form in ("shift", "table"):
        ig, stats = quantize_graph(g, calib, QuantConfig(activation="uint8", integer_only=True, gelu_form=form))
        assert verify_integer_only(ig) == []
        ops = _ops(ig)
        assert ops["q.shiftmax"] == 2 and ops["q.layernorm"] == 5
        if form == "shift":
            assert ops["q.shiftgelu"] == 2
        else:                                    # each GELU one exact 256-entry table on its 8-bit input
            assert "q.shiftgelu" not in ops and ops.get("q.table", 0) >= 2
        assert not any(k in ops for k in ("nn.softmax", "nn.gelu", "nn.layer_norm", "nn.div"))
        fp32 = (interp.run(stats.graph, x_te)[0].argmax(1) == y_te).mean() * 100
        int8 = (interp.run(ig, x_te)[0].argmax(1) == y_te).mean() * 100
        print(f"\nViT digits: FP32 {fp32:.2f}%  integer-only ({form} GELU) {int8:.2f}%  (training {train_s:.1f} s)")
        assert train_s < 30
        assert fp32 >= 95.0
        assert fp32 - int8 <= 1.0


def test_ivit_bert_encoder_cosine():
    import torch

    import compiler
    from compiler import interp
    from examples.zoo import BertEncoder
    from passes.quantize import QuantConfig, calibration_batches
    from passes.quantize_pipeline import quantize_graph
    from passes.verify_integer_only import verify_integer_only

    torch.manual_seed(0)
    seq, vocab = 32, 100
    model = BertEncoder(vocab=vocab, hidden=64, heads=4, ffn=128, layers=2, seq=seq).eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab, (4, seq)).astype(np.int64)
    g = compiler.import_model(model, example_inputs=(torch.tensor(ids),))
    calib = calibration_batches(g, [rng.integers(0, vocab, (16, seq)).astype(np.int64)])
    ig, stats = quantize_graph(g, calib, QuantConfig(activation="int8", integer_only=True))

    assert verify_integer_only(ig) == []
    ops = _ops(ig)
    assert ops["q.shifttanh"] == 1 and ops["q.shiftmax"] == 2 and ops["q.layernorm"] == 5
    ref = model(torch.tensor(ids)).detach().numpy()
    got = interp.run(ig, ids)[0]
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    print(f"\nBERT encoder: cosine integer-only vs FP32 min {cos.min():.4f} mean {cos.mean():.4f}")
    assert cos.min() >= 0.99
