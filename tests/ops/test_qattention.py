"""q.attention (integer attention in one pass over key blocks, Shiftmax in the running recurrence) and
fuse_integer_attention: the op's reference against the unfused integer attention it replaces and
against float attention, the rewrite, and the pass-count analysis (3 passes over the keys -> 1).

The stated bound: on these inputs the one-pass result is within 4 LSB of the unfused integer attention
(which rounds each softmax weight to int8 before P V), and closer to float attention than it (RMS).
"""
from __future__ import annotations

import numpy as np
import pytest

from compiler import interp
from compiler.ops import ivit, qattention
from compiler.ops.quant import requant_values
from passes.einsum import cascades, passes_over
from passes.qattention import fuse_integer_attention
from tests.ops.qattention_chain import S_OUT, S_QKV, chain, inputs


def _float_attention(ins: list[np.ndarray], keep) -> np.ndarray:
    q, k, v = (x.astype(np.float64) * S_QKV for x in ins[:3])
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True) @ v / S_OUT


def _keep(g, ins):
    if len(ins) == 4:
        return ins[3]
    return next((n.inputs[0].const for n in g.nodes if n.op.name == "nn.where"), None)


@pytest.mark.parametrize("h,lq,lk,mask", [(1, 1, 1, None), (4, 16, 16, None), (16, 16, 16, "padding"),
                                         (2, 128, 128, "causal"), (3, 128, 128, "padding"),
                                         (1, 64, 1024, None), (2, 32, 1024, "padding")])
def test_one_pass_is_within_4_lsb_of_the_unfused_integer_attention_and_closer_to_float(h, lq, lk, mask):
    g = chain(2, h, lq, lk, 64, mask)
    fg = fuse_integer_attention(g)
    assert [n.op for n in fg.nodes] == [qattention.attention]
    ins = inputs(g)
    ins[0] = (ins[0].astype(np.int16) * 3).clip(-128, 127).astype(np.int8)    # sharper attention
    unfused, fused = (interp.run(x, *ins)[0].astype(np.int64) for x in (g, fg))
    assert np.abs(fused - unfused).max() <= 4
    ref = _float_attention(ins, _keep(g, ins))
    rms = [float(np.sqrt(((x - ref) ** 2).mean())) for x in (fused, unfused)]
    assert rms[0] <= rms[1] + 0.02, rms


def test_one_block_is_shiftmax_with_unrounded_weights():
    """block >= keys: no correction happens, the result is sum shift_exp(s - max) v / sum, unrounded."""
    g = chain(1, 2, 16, 48, 32)
    node = fuse_integer_attention(g).nodes[0]
    a = {**node.attrs, "block": 48}
    ins = inputs(g, seed=3)
    q, k, v = (x.astype(np.int64) for x in ins)
    s = requant_values(q @ np.swapaxes(k, -1, -2), (a["qk_multiplier"],), (a["qk_shift"],), 0, 0,
                       a["qk_qmin"], a["qk_qmax"])
    e = ivit.shift_exp(s - s.max(-1, keepdims=True), ivit.exp_unit(a["scale"]), a["n"])
    t = ((e @ v) << qattention.FRACTION_BITS) // e.sum(-1, keepdims=True)
    want = requant_values(t, (a["multiplier"],), (a["shift"],), 0, a["zero_point"], a["qmin"], a["qmax"])
    np.testing.assert_array_equal(qattention.attention_values(*ins, None, a), want)


def test_the_result_depends_on_the_block_and_the_block_is_an_attribute():
    g = chain(1, 4, 64, 256, 64)
    node = fuse_integer_attention(g).nodes[0]
    ins = inputs(g, seed=1)
    ins[0] = (ins[0].astype(np.int16) * 3).clip(-128, 127).astype(np.int8)
    outs = [qattention.attention_values(*ins, None, {**node.attrs, "block": b}) for b in (256, 64, 16)]
    assert not np.array_equal(outs[0], outs[2])
    assert all(np.abs(o.astype(int) - outs[0]).max() <= 3 for o in outs)


def test_pass_count_analysis_says_3_before_and_1_after():
    g = chain(1, 2, 128, 256, 64, "padding")
    (before,) = cascades(g)
    (after,) = cascades(fuse_integer_attention(g))
    assert passes_over(before[1], "m") == 3
    assert passes_over(after[1], "m1") == 1 and after[2]["m0"] == after[2]["m"] // after[2]["m1"]


def test_a_chain_with_another_reader_of_its_probabilities_is_left_alone():
    g = chain(1, 2, 16, 16, 32)
    p = next(n for n in g.nodes if n.op is ivit.shiftmax).outputs[0]
    g.outputs = g.outputs + [p]
    assert fuse_integer_attention(g).op_histogram().get("q.attention") is None


def test_the_type_rule_refuses_a_sum_that_overflows():
    from compiler.ops.registry import TypeRuleError
    from compiler.types import DType, TensorType
    g = chain(1, 1, 16, 4096, 32)
    node = fuse_integer_attention(g).nodes[0]
    with pytest.raises(TypeRuleError, match="2\\^31"):
        qattention.attention.infer([TensorType((1, 1, 16, 32), DType.I8), TensorType((1, 1, 4096, 32), DType.I8),
                                    TensorType((1, 1, 4096, 32), DType.I8)], {**node.attrs, "n": 15})
