"""Hugging Face transformers' own BertModel (random weights from a small config, no download)
through both frontends, with sdpa and eager attention and a padded attention mask: the
reference interpreter and the TVM executable match eager PyTorch. The mask creation in
modeling_bert.py brings aten.gather / aten.index.Tensor (torch) and GatherElements / IsNaN
(ONNX, opset 17)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import has_module, requires_torch, requires_tvm

pytestmark = [requires_torch,
              pytest.mark.skipif(not has_module("transformers"), reason="transformers is not installed")]
torch = pytest.importorskip("torch")

SEQ, BATCH = 16, 2


def _bert(attn: str):
    from transformers import BertConfig, BertModel

    class LastAndPooled(torch.nn.Module):
        """BertModel's two tensors as a plain tuple (what both frontends take)."""

        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
            return out.last_hidden_state, out.pooler_output

    cfg = BertConfig(vocab_size=200, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=256, max_position_embeddings=64, attn_implementation=attn)
    torch.manual_seed(0)
    model = LastAndPooled(BertModel(cfg)).eval()
    ids = torch.randint(0, 200, (BATCH, SEQ))
    mask = torch.ones(BATCH, SEQ, dtype=torch.int64)
    mask[1, 11:] = 0                                      # one padded sequence
    with torch.no_grad():
        want = [t.numpy() for t in model(ids, mask)]
    return model, (ids, mask), want


def _import(frontend: str, model, inputs, tmp_path):
    import compiler
    if frontend == "torch":
        return compiler.import_model(model, example_inputs=inputs)
    path = tmp_path / "bert.onnx"
    torch.onnx.export(model, inputs, str(path), opset_version=17, dynamo=False,
                      input_names=["input_ids", "attention_mask"])
    return compiler.import_model(str(path))


def _check(got, want) -> None:
    for g, w in zip(got, want):
        g = g.numpy() if hasattr(g, "numpy") else g
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def _run(frontend: str, attn: str, tmp_path) -> None:
    """The interpreter, then the TVM executable, against eager PyTorch."""
    import compiler
    from compiler import interp
    model, inputs, want = _bert(attn)
    g = _import(frontend, model, inputs, tmp_path)
    feeds = [t.numpy() for t in inputs]
    _check(interp.run(g, *feeds), want)
    _check(compiler.compile(g, target="llvm").run(*feeds), want)


# One case per frontend in the default run (the acceptance); the rest are slow.
@requires_tvm
@pytest.mark.parametrize("frontend", ["torch", "onnx"])
def test_hf_bert_sdpa_matches_eager_pytorch(tmp_path, frontend):
    _run(frontend, "sdpa", tmp_path)


@pytest.mark.slow
@requires_tvm
@pytest.mark.parametrize("frontend", ["torch", "onnx"])
def test_hf_bert_eager_attention_matches_eager_pytorch(tmp_path, frontend):
    _run(frontend, "eager", tmp_path)


@pytest.mark.slow
@requires_tvm
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_hf_bert_integer_only_keeps_the_sentence_embedding(tmp_path, attn):
    """`--quantize int8 --integer-only` on the exported BertModel: the additive padding mask becomes a
    select (select_masks) and the masked keys are dropped inside the Shiftmax, sdpa's NaN guard folds away;
    the pooled sentence embedding of both sequences, the padded one included, stays within cosine 0.99
    of eager PyTorch's."""
    import compiler
    from passes.verify_integer_only import verify_integer_only
    model, inputs, want = _bert(attn)
    path = tmp_path / "bert.onnx"
    torch.onnx.export(model, inputs, str(path), opset_version=17, dynamo=False,
                      input_names=["input_ids", "attention_mask"])
    rng = np.random.default_rng(1)
    mask = inputs[1].numpy()
    calib = [[rng.integers(0, 200, (BATCH, SEQ)), mask] for _ in range(4)]
    cm = compiler.compile(str(path), target="llvm", quantize="int8", calibration=calib, integer_only=True)
    assert verify_integer_only(cm.graph) == []
    got = cm.run(*[t.numpy() for t in inputs])[1]
    for g, w in zip(got.astype(np.float64), want[1].astype(np.float64)):
        assert g @ w / np.linalg.norm(g) / np.linalg.norm(w) >= 0.99
