"""The one-pass integer attention kernel (tvm_kernels/qattention.py) is bit-exact with q.attention's
reference: lengths 1..128 (1024 marked slow), 1..16 heads, padding and causal keep masks, a key block
that does not divide the keys; and a whole integer-only encoder compiled with integer_attention=True
runs its attention as that kernel, equal to the interpreter of its final IR, within reach of float."""
from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("tvm")

from compiler import interp
from compiler.ir import Node
from passes.qattention import fuse_integer_attention
from tests.backends.kernel_ir import build
from tests.ops.qattention_chain import chain, inputs


def _exact(g, block=None):
    fg = fuse_integer_attention(g)
    if block is not None:
        n = fg.nodes[0]
        fg.nodes[0] = Node(n.op, n.inputs, {**n.attrs, "block": block}, n.outputs, n.name, n.loc)
    ins = inputs(g)
    exe = build(fg)
    assert re.search(r"call_tir\(cls\.qattention_\d+", exe.source("relax"))
    np.testing.assert_array_equal(exe.run(ins)[0], interp.run(fg, *ins)[0])


@pytest.mark.parametrize("b,h,lq,lk,mask", [(1, 1, 1, 1, None), (1, 1, 1, 128, None), (2, 3, 16, 16, "padding"),
                                            (1, 16, 16, 16, "causal"), (1, 2, 128, 128, None),
                                            (2, 4, 128, 128, "padding"), (1, 2, 32, 128, "causal")])
def test_integer_attention_kernel_is_bit_exact(b, h, lq, lk, mask):
    _exact(chain(b, h, lq, lk, 32, mask))


def test_integer_attention_kernel_with_a_partial_last_block():
    _exact(chain(1, 3, 20, 100, 32, "padding"), block=64)


@pytest.mark.slow
@pytest.mark.parametrize("h,mask", [(4, None), (2, "causal"), (12, "padding")])
def test_integer_attention_kernel_is_bit_exact_1024(h, mask):
    _exact(chain(1, h, 1024, 1024, 64, mask))


@pytest.mark.slow
def test_integer_encoder_with_one_pass_attention():
    """BERT-style encoder (4 layers, 128 tokens), integer-only: with integer_attention=True every layer's
    attention is one q.attention kernel; the executable equals the interpreter of the final IR, and the
    output keeps cosine >= 0.99 to float, as the default integer-only build does."""
    torch = pytest.importorskip("torch")
    import compiler
    from compiler.api import final_ir
    from examples.zoo import seeded_encoder
    model, x, calib = seeded_encoder(hidden=64, heads=4, ffn=128, layers=4, seq=128, batch=2)
    with torch.no_grad():
        want = model(torch.tensor(x)).numpy().ravel()
    opts = dict(example_inputs=(torch.tensor(x),), quantize="int8", calibration=calib, integer_only=True)
    cos = {}
    for on in (False, True):
        g, _ = final_ir(model, "llvm -num-threads=1", integer_attention=on, **opts)
        assert g.op_histogram().get("q.attention", 0) == (4 if on else 0)
        cm = compiler.compile(model, "llvm -num-threads=1", integer_attention=on, **opts)
        got = cm.run(x)[0]
        if on:
            np.testing.assert_array_equal(got, interp.run(g, x)[0])
        got = got.ravel()
        cos[on] = float(got @ want / np.linalg.norm(got) / np.linalg.norm(want))
    assert cos[True] >= 0.99 and cos[True] >= cos[False] - 0.002, cos
