"""lmul_attention: attention's two matmuls (Q K^T, P V) become lmul.matmul, unfused chains in place and
fused attention kernels inside their body (kernel "lmul_attention"), and nothing else changes; it sits
right after fuse_attention in the pipeline (first where there is none); a transformer compiled with
lmul="attention" keeps its output (BERT-6L, random weights: cosine 0.99996 vs FP32)."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import interp
from compiler.diagnostics import Unsupported
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import kernel, linalg, lmul, nn, shape
from compiler.ops.registry import TypeRuleError
from compiler.pipeline import KERNEL_PIPELINES, kernel_pipeline_for, with_lmul
from compiler.target import Target
from compiler.types import DType, TensorType
from passes.einsum import fuse_attention
from passes.lmul import LMUL_KERNEL, lmul_attention, rewrite_attention
from tests.conftest import requires_torch

F32 = DType.F32


def _block(b=2, h=2, s=12, d=8, scores_out=False) -> Graph:
    """x -> per-head q, k, v projections -> attention -> output projection: four matmuls that are not
    attention's and two that are."""
    g = Graph("block")
    x = g.add_input("x", TensorType((b, h, s, d), F32))
    rng = np.random.default_rng(0)
    proj = [g.add1(linalg.matmul, [x, g.const(rng.standard_normal((d, d)).astype(np.float32) / d ** 0.5, n)])
            for n in ("wq", "wk", "wv")]
    q, k, v = proj
    sc = g.add1(linalg.matmul, [q, g.add1(shape.transpose, [k], perm=(0, 1, 3, 2))])
    sc = g.add1(ew.div, [sc, g.const(np.float32(np.sqrt(d)), "sqrt_d")])
    p = g.add1(nn.softmax, [sc], axis=-1)
    o = g.add1(linalg.matmul, [p, v])
    g.outputs = [g.add1(linalg.matmul, [o, g.const(np.eye(d, dtype=np.float32), "wo")])]
    if scores_out:
        g.outputs.append(p)
    return g


def _x(g: Graph) -> np.ndarray:
    return np.random.default_rng(1).standard_normal(g.inputs[0].type.shape).astype(np.float32)


def _ops(g: Graph) -> list[str]:
    return [n.op.name for n in g.nodes]


def test_lmul_attention_rewrites_only_attentions_matmuls():
    g = _block()
    after = lmul_attention(g)
    assert _ops(after).count("lmul.matmul") == 2 and _ops(after).count("nn.matmul") == 4
    rewritten = [n for n in after.nodes if n.op is lmul.matmul]
    assert rewritten[0].outputs[0].type.shape == (2, 2, 12, 12)          # Q K^T: the scores
    assert rewritten[1].inputs[0].producer.op is nn.softmax               # P V
    assert all(n.attrs == {"dtype": "f32", "mantissa_bits": 3} for n in rewritten)
    assert _ops(g).count("lmul.matmul") == 0                              # the input graph is untouched
    # the same graph but for the two ops: same operands, same results, same order
    for n, m in zip(g.nodes, after.nodes):
        assert (m.op is lmul.matmul or m.op is n.op) and \
            [v.name for v in m.inputs + m.outputs] == [v.name for v in n.inputs + n.outputs]
    x = _x(g)
    want, got = interp.run(g, x)[0], interp.run(after, x)[0]
    assert not np.array_equal(got, want) and _cosine(got, want) >= 0.99


def test_lmul_attention_leaves_non_attention_alone():
    g = _block(scores_out=True)                   # scores read elsewhere: not an attention chain
    assert _ops(lmul_attention(g)) == _ops(g)


def test_lmul_attention_rewrites_inside_fused_attention():
    g = _block()
    fused = fuse_attention(g)
    node = next(n for n in fused.nodes if n.op is kernel.fused)
    after = lmul_attention(fused)
    new = next(n for n in after.nodes if n.op is kernel.fused)
    assert new.attrs["kernel"] == LMUL_KERNEL and new.attrs["tile"] == ()
    assert [m.op.name for m in new.attrs["body"].nodes] == \
        ["nn.transpose", "lmul.matmul", "nn.div", "nn.softmax", "lmul.matmul"]
    assert [m.op.name for m in node.attrs["body"].nodes].count("nn.matmul") == 2   # not mutated
    assert _ops(after).count("nn.matmul") == 4                                     # projections kept
    x = _x(g)                                      # the same ops in the same order: identical result
    assert np.array_equal(interp.run(after, x)[0], interp.run(lmul_attention(g), x)[0])


def test_lmul_attention_other_forms():
    g = rewrite_attention(_block(), dtype="bf16", mantissa_bits=7)
    assert {tuple(n.attrs.values()) for n in g.nodes if n.op is lmul.matmul} == {("bf16", 7)}
    with pytest.raises(TypeRuleError, match="mantissa_bits"):
        rewrite_attention(_block(), dtype="bf16", mantissa_bits=8)


def test_lmul_pipeline_entry():
    llvm = kernel_pipeline_for(Target("llvm"))
    assert with_lmul(llvm, None) == llvm
    got = with_lmul(llvm, "attention")
    assert got[got.index("fuse_attention") + 1] == "lmul_attention"
    mlir = with_lmul(kernel_pipeline_for(Target("llvm"), "mlir"), "attention")
    assert mlir[mlir.index("fuse_attention") + 1] == "lmul_attention"
    assert "lmul_attention" not in KERNEL_PIPELINES["llvm"]            # opt-in only
    with pytest.raises(Unsupported, match="supported: attention"):
        with_lmul(llvm, "all")


def test_compile_lmul_attention_tvm_matches_interpreter():
    pytest.importorskip("tvm")
    import compiler
    g = _block(s=16)
    cm = compiler.compile(g, "llvm -num-threads=1", lmul="attention")
    kinds = [n.attrs["kernel"] for n in cm.graph.nodes if n.op is kernel.fused]
    assert LMUL_KERNEL in kinds
    x = _x(g)
    want = interp.run(cm.graph, x)[0]
    np.testing.assert_allclose(cm.run(x)[0], want, rtol=1e-5, atol=1e-6)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.slow
@requires_torch
def test_lmul_attention_small_encoder_keeps_output():
    """A 2-layer BERT-style encoder in the interpreter: 3-bit L-Mul attention vs FP32."""
    import torch

    import compiler
    from examples.zoo import BertEncoder
    torch.manual_seed(0)
    model = BertEncoder(vocab=100, hidden=64, heads=4, ffn=128, layers=2, seq=32).eval()
    ids = np.random.default_rng(0).integers(0, 100, (2, 32)).astype(np.int64)
    g = compiler.optimize(compiler.import_model(model, example_inputs=(torch.tensor(ids),)))
    lg = lmul_attention(g)
    assert _ops(lg).count("lmul.matmul") == 4
    cos = _cosine(interp.run(lg, ids)[0], interp.run(g, ids)[0])
    assert cos >= 0.999, cos


@pytest.mark.slow
@requires_torch
def test_lmul_attention_bert6_cosine():
    """BERT-6L (zoo.BertEncoder: 6 layers, hidden 384, 6 heads, seq 128, random weights) compiled with
    lmul="attention" through TVM: pooled-output cosine vs PyTorch FP32 0.99996 (>= 0.99 required)."""
    pytest.importorskip("tvm")
    import torch

    import compiler
    from examples.zoo import BertEncoder
    torch.manual_seed(0)
    model = BertEncoder().eval()
    ids = torch.randint(0, 1000, (1, 128))
    cm = compiler.compile(model, example_inputs=(ids,), lmul="attention")
    assert sum(n.op is kernel.fused and n.attrs["kernel"] == LMUL_KERNEL for n in cm.graph.nodes) == 6
    cos = _cosine(np.asarray(cm.run(ids.numpy())), model(ids).detach().numpy())
    print(f"\nBERT-6L, L-Mul (3-bit) attention vs FP32: cosine {cos:.6f}")
    assert cos >= 0.99
