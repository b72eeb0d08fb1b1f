"""q.attention (the opt-in integer-only fused attention) on the MLIR backend (mlir_lower/qattention.py):
bit-exact with its reference on the CPU for padding and causal keep masks, heads, lq != lk, a last partial
key block and blocks of 1 key up to all of them; on cuda it gives PTX that ptxas assembles."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("iree.compiler")
pytest.importorskip("iree.runtime")

from compiler import interp
from compiler.backends.mlir import BACKEND
from compiler.ir import Graph, Node
from compiler.target import Target
from passes.qattention import fuse_integer_attention
from tests.backends.test_mlir_ops import TARGET, TESTED
from tests.ops.qattention_chain import chain, inputs
from tests.ptxas import assemble


def _fused(g: Graph, block: int | None = None) -> Graph:
    fg = fuse_integer_attention(g)
    assert [n.op.name for n in fg.nodes] == ["q.attention"]
    if block is not None:
        n = fg.nodes[0]
        fg.nodes[0] = Node(n.op, n.inputs, {**n.attrs, "block": block}, n.outputs, n.name, n.loc)
    return fg


def _exact(g: Graph, block: int | None = None) -> None:
    fg = _fused(g, block)
    TESTED.update(n.op for n in fg.nodes)
    ins = inputs(g)
    np.testing.assert_array_equal(BACKEND.build(fg, TARGET).run(ins)[0], interp.run(fg, *ins)[0])


@pytest.mark.parametrize("b,h,lq,lk,mask,block", [(1, 1, 1, 1, None, None), (1, 1, 3, 40, None, 16),
                                                  (2, 3, 16, 16, "padding", None), (1, 4, 16, 16, "causal", 4),
                                                  (1, 2, 32, 100, "causal", 32), (2, 2, 20, 100, "padding", 64),
                                                  (1, 2, 8, 24, "padding", 1)])
def test_mlir_integer_attention_is_bit_exact(b, h, lq, lk, mask, block):
    _exact(chain(b, h, lq, lk, 16, mask), block)


def test_mlir_integer_attention_depends_on_the_block_as_its_reference_does():
    """The blocks change the result (I-ViT's exponent is not multiplicative), so matching the reference at two
    blocks shows the lowering runs the reference's blocks, not some other split."""
    g = chain(1, 2, 16, 96, 16, "padding")
    ins = inputs(g)
    got = {blk: BACKEND.build(_fused(g, blk), TARGET).run(ins)[0] for blk in (8, 96)}
    assert not np.array_equal(got[8], got[96])
    for blk, y in got.items():
        np.testing.assert_array_equal(y, interp.run(_fused(g, blk), *ins)[0])


@pytest.mark.slow
def test_mlir_integer_attention_on_cuda_gives_ptx_that_assembles_and_its_form_is_bit_exact(monkeypatch):
    """On cuda the P V sums of a 64-key block run as two 32-key i64 matmuls (IREE 3.13 failed to distribute the
    64-key one) and the row reductions read i64 tensors of their own; ptxas assembles the PTX, and the same
    form built for the CPU is bit-exact with the interpreter."""
    from compiler.backends.mlir_lower import ivit as mivit
    from compiler.backends.mlir_lower import qattention as mqa
    g = chain(1, 4, 64, 100, 32, "padding")
    fg = _fused(g, 64)
    ptx = BACKEND.build(fg, Target("cuda", arch="sm_90")).source("ptx")
    assert ".target sm_90" in ptx
    assemble(ptx)
    monkeypatch.setattr(mivit, "WIDE_INPUT_TARGETS", ("cuda", "llvm"))
    monkeypatch.setattr(mqa, "CHUNKED_TARGETS", ("cuda", "llvm"))
    assert BACKEND.build(fg, TARGET).source("mlir").count("linalg.batch_matmul") == 1 + 2 + 2
    ins = inputs(g)
    np.testing.assert_array_equal(BACKEND.build(fg, TARGET).run(ins)[0], interp.run(fg, *ins)[0])


@pytest.mark.slow
def test_an_integer_encoder_with_integer_attention_through_mlir_is_bit_exact():
    """compile(backend="mlir", integer_attention=True): each attention of an integer-only BERT encoder is one
    q.attention, and the executable equals the interpreter of its final IR."""
    torch = pytest.importorskip("torch")
    import compiler
    from examples.zoo import BertEncoder
    torch.manual_seed(0)
    model = BertEncoder(vocab=50, hidden=32, heads=2, ffn=64, layers=2, seq=16).eval()
    ids = np.random.default_rng(0).integers(0, 50, (2, 16))
    cm = compiler.compile(model, TARGET, backend="mlir", example_inputs=(torch.tensor(ids),), quantize="int8",
                          calibration=[ids], integer_only=True, integer_attention=True)
    assert cm.graph.op_histogram().get("q.attention", 0) == 2
    for a, b in zip(cm.run(ids), interp.run(cm.graph, ids)):
        np.testing.assert_array_equal(a, b)
