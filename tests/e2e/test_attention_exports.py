"""Attention where real exports write it: Hugging Face transformers' Llama (grouped-query heads, causal)
and BERT (padding mask), random weights from small configs, through torch.onnx.export (eager and sdpa
attention) and the torch frontend (scaled_dot_product_attention with is_causal / enable_gqa). Each
attention becomes one fused attention kernel (reading K/V unrepeated, the causal mask as the kernel's
offset), and the compiled model matches onnxruntime / PyTorch."""
from __future__ import annotations

import re

import numpy as np
import pytest

from tests.conftest import has_module, requires_ort, requires_torch, requires_tvm

pytestmark = [requires_torch, requires_tvm,
              pytest.mark.skipif(not has_module("transformers"), reason="transformers is not installed")]
torch = pytest.importorskip("torch")

SEQ, LAYERS = 16, 2


class LastHidden(torch.nn.Module):
    """A transformers model's last hidden state as a plain tensor (what both frontends take)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _llama(attn: str, kv_heads: int = 2):
    from transformers import LlamaConfig, LlamaModel
    cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=kv_heads,
                      num_hidden_layers=LAYERS, intermediate_size=128, vocab_size=100,
                      attn_implementation=attn)
    torch.manual_seed(0)
    return LastHidden(LlamaModel(cfg)).eval()


def _bert(attn: str):
    from transformers import BertConfig, BertModel
    cfg = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=LAYERS, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=64, attn_implementation=attn)
    torch.manual_seed(0)
    return LastHidden(BertModel(cfg)).eval()


def _inputs(padded: bool):
    ids = torch.randint(0, 100, (1 + padded, SEQ), generator=torch.Generator().manual_seed(1))
    if not padded:
        return (ids,)
    mask = torch.ones(2, SEQ, dtype=torch.int64)
    mask[1, 11:] = 0                                       # the second sequence padded on the right
    return ids, mask


def _compile(g):
    """(the fused attention nodes of g's final IR, the executable)."""
    from compiler.api import lower_kernels
    from compiler.backends.tvm import BACKEND
    from compiler.ops import kernel
    from compiler.target import Target
    target = Target("llvm", num_threads=1)
    final = lower_kernels(g, target)
    att = [n for n in final.nodes if n.op is kernel.fused and n.attrs["kernel"] == "attention"]
    exe = BACKEND.build(final, target)
    assert len(re.findall(r"call_tir\(cls\.attention_\d+", exe.source("relax"))) == len(att)
    return att, exe


def _check(att, causal: int, group: int) -> None:
    """LAYERS attention kernels, each with the given causal offset (-1: none) and K/V head group."""
    from passes.einsum import body_causal
    assert len(att) == LAYERS
    for n in att:
        q, k, v = (np.prod(x.type.shape[:-2]) for x in n.inputs[:3])
        assert (body_causal(n.attrs["body"]), q // k, q // v) == (causal, group, group)


def _via_onnx(model, inputs, tmp_path):
    """torch.onnx.export (opset 17), imported and optimized; onnxruntime's outputs on the same inputs."""
    import onnxruntime as ort

    import compiler
    path = str(tmp_path / "model.onnx")
    names = ["input_ids", "attention_mask"][:len(inputs)]
    torch.onnx.export(model, inputs, path, opset_version=17, dynamo=False, input_names=names)
    feeds = {n: t.numpy() for n, t in zip(names, inputs)}
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    return compiler.optimize(compiler.import_model(path)), want


def _via_torch(model, inputs):
    import compiler
    with torch.no_grad():
        want = model(*inputs).numpy()
    return compiler.optimize(compiler.import_model(model, example_inputs=inputs)), want


def _run(exe, inputs, want) -> None:
    got = exe.run([t.numpy() for t in inputs])[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@requires_ort
def test_llama_eager_onnx_export_fuses_causal_grouped_attention(tmp_path):
    """Eager attention: repeat_kv (Unsqueeze, Expand, Reshape) and the causal mask folded to a constant."""
    inputs = _inputs(padded=False)
    g, want = _via_onnx(_llama("eager"), inputs, tmp_path)
    att, exe = _compile(g)
    _check(att, causal=0, group=2)
    _run(exe, inputs, want)


def test_llama_sdpa_torch_frontend_fuses_causal_grouped_attention():
    """scaled_dot_product_attention(is_causal=True, enable_gqa=True) through the torch frontend."""
    inputs = _inputs(padded=False)
    g, want = _via_torch(_llama("sdpa"), inputs)
    att, exe = _compile(g)
    _check(att, causal=0, group=2)
    _run(exe, inputs, want)


@pytest.mark.slow
@requires_ort
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_llama_onnx_export_with_padding_fuses_grouped_attention(tmp_path, attn):
    """A padded batch: the causal-and-padding mask is computed from the input, so the kernel reads it;
    sdpa's export splits the scale over q and k^T and guards the softmax's NaN rows."""
    inputs = _inputs(padded=True)
    g, want = _via_onnx(_llama(attn), inputs, tmp_path)
    att, exe = _compile(g)
    _check(att, causal=-1, group=2)
    _run(exe, inputs, want)


@pytest.mark.slow
@requires_ort
def test_llama_sdpa_onnx_export_without_gqa_fuses_causal_attention(tmp_path):
    """Multi-head sdpa with is_causal: torch's export builds the causal mask, folded to a constant."""
    inputs = _inputs(padded=False)
    g, want = _via_onnx(_llama("sdpa", kv_heads=4), inputs, tmp_path)
    att, exe = _compile(g)
    _check(att, causal=0, group=1)
    _run(exe, inputs, want)


@pytest.mark.slow
@pytest.mark.parametrize("attn,padded", [("eager", False), ("sdpa", True)])
def test_llama_torch_frontend_fuses_grouped_attention(attn, padded):
    inputs = _inputs(padded)
    g, want = _via_torch(_llama(attn), inputs)
    att, exe = _compile(g)
    _check(att, causal=-1 if padded else 0, group=2)
    _run(exe, inputs, want)


@pytest.mark.slow
@requires_ort
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_bert_onnx_export_with_padding_fuses_attention(tmp_path, attn):
    inputs = _inputs(padded=True)
    g, want = _via_onnx(_bert(attn), inputs, tmp_path)
    att, exe = _compile(g)
    _check(att, causal=-1, group=1)
    _run(exe, inputs, want)


@requires_ort
@pytest.mark.skipif(not has_module("iree.compiler"), reason="iree-base-compiler is not installed")
@pytest.mark.parametrize("model,attn,padded,causal,group", [(_llama, "eager", False, 0, 2), (_bert, "sdpa", True, -1, 1)],
                         ids=["llama-eager-causal-gqa", "bert-sdpa-padding-nan-guard"])
def test_mlir_backend_lowers_each_exported_attention_to_one_iree_attention(tmp_path, monkeypatch, model, attn, padded,
                                                                           causal, group):
    """Through the MLIR backend each fused attention is one iree_linalg_ext.attention (used on cuda; built for
    the CPU here to run it): the causal mask from the indices, the K/V heads through the maps, sdpa's NaN guard
    on the output; matches onnxruntime."""
    from compiler.api import lower_kernels
    from compiler.backends.mlir import BACKEND
    from compiler.backends.mlir_lower import attention
    monkeypatch.setattr(attention, "ON_TARGETS", frozenset({"cuda", "llvm"}))
    from compiler.ops import kernel
    from compiler.target import Target
    inputs = _inputs(padded)
    g, want = _via_onnx(model(attn), inputs, tmp_path)
    target = Target("llvm", num_threads=1)
    final = lower_kernels(g, target, "mlir")
    _check([n for n in final.nodes if n.op is kernel.fused and n.attrs["kernel"] == "attention"], causal, group)
    exe = BACKEND.build(final, target)
    assert exe.source("mlir").count("iree_linalg_ext.attention") == LAYERS
    _run(exe, inputs, want)


@requires_ort
def test_bert_sdpa_export_on_cuda_is_one_attention_kernel_per_layer_with_its_nan_guard(tmp_path):
    """transformers BERT's sdpa ONNX export (padding mask, NaN guard after the softmax) for cuda: each attention is
    the GPU's one kernel (tvm_kernels/cuda_attention.py), the guard inside it; the GPU program built for the CPU
    matches onnxruntime."""
    from compiler.api import lower_kernels
    from compiler.backends import tvm_cuda
    from compiler.backends.tvm import BACKEND
    from compiler.target import Target
    inputs = _inputs(padded=True)
    g, want = _via_onnx(_bert("sdpa"), inputs, tmp_path)
    target = Target.parse("cuda -arch=sm_90")
    final = lower_kernels(g, target)
    relax_text = BACKEND.build(final, target).source("relax")
    assert re.findall(r"call_tir\(cls\.(attention_\d+)", relax_text) == ["attention_0"] * LAYERS
    got = tvm_cuda.build_for_cpu(final, target)(*[t.numpy() for t in inputs])[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
