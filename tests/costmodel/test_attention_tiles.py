"""The fp32 attention kernel as a cost-model kind: its tunable interface (default tile among the candidates,
argument shapes, a non-default tile built and checked against numpy), the candidates (the whole sequence as one
block when it is short), its feature row and booster, the policy's ranking and choose_tiles filling a fused
attention node's tile."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import has_module
from tests.costmodel.stubs import WantTile

pytestmark = pytest.mark.skipif(not has_module("tvm"), reason="apache-tvm is not installed")
needs_xgb = pytest.mark.skipif(not has_module("xgboost"), reason="xgboost is not installed")

TARGET = "llvm -mcpu=znver4 -num-cores=1"


def _numpy_attention(q, k, v, scale, causal):
    s = np.einsum("bqd,bkd->bqk", q.astype(np.float64), k.astype(np.float64)) * scale
    if causal >= 0:
        lq, lk = s.shape[1:]
        s = np.where(np.arange(lk)[None, :] > np.arange(lq)[:, None] + causal, -np.inf, s)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


def test_attention_tunable_interface():
    from compiler import tunable
    from costmodel import features as F
    from costmodel import measure as Me
    spec = Me.attention_spec(12, 128, 128)
    kernel = tunable.kernel("attention")
    assert tunable.kernel_of(spec) is kernel and F.kind_of(spec) == "attention"
    assert F.default_tile(spec) == (spec.tq, spec.tk) == (32, 64)
    assert F.default_tile(spec) in F.candidate_tiles(spec)
    shapes = Me.arg_shapes(spec)
    assert [s for s, _ in shapes] == [(12, 128, 64), (12, 128, 64), (12, 128, 64), (1, 1, 128), (12, 128, 64)]
    assert F.spec_from_json(json.loads(json.dumps(F.spec_to_json(spec)))) == spec
    assert Me.task_name(Me.attention_spec(6, 77, 77, causal=True)) == "attention:b6 77x77 d64 causal"


@pytest.mark.parametrize("causal", [False, True])
def test_attention_built_with_a_non_default_tile_matches_numpy(causal):
    import tvm

    from compiler.backends.tvm_kernels.common import host_target
    from costmodel import features as F
    from costmodel import measure as Me
    spec = Me.attention_spec(2, 64, 96, causal=causal, d=16)
    tile = (8, 32)
    assert tile in F.candidate_tiles(spec) and tile != F.default_tile(spec)
    lib = tvm.compile(tvm.IRModule({"main": F.build_func(spec, tile)}), host_target(1))
    rng = np.random.default_rng(0)
    ins = [rng.standard_normal(s).astype(dt) for s, dt in Me.arg_shapes(spec)[:3]]
    args = [tvm.runtime.tensor(a) for a in ins] + [tvm.runtime.tensor(np.zeros((1, 1, 96), np.float32)),
                                                   tvm.runtime.tensor(np.zeros((2, 64, 16), np.float32))]
    lib["main"](*args)
    want = _numpy_attention(*ins, spec.scale, spec.causal)
    np.testing.assert_allclose(args[-1].numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_attention_candidates_hold_the_whole_short_sequence():
    from costmodel import features as F
    from costmodel import measure as Me
    for n in (50, 77, 197, 256):
        tiles = F.candidate_tiles(Me.attention_spec(12, n, n))
        assert (n, n) in tiles, n                          # one block: the short-sequence choice
        assert all(n % tq == 0 and n % tk == 0 for tq, tk in tiles)
    tiles = F.candidate_tiles(Me.attention_spec(12, 2048, 2048))
    assert {tq for tq, _ in tiles} == {8, 16, 32, 64, 128, 256} and {tk for _, tk in tiles} == {16, 32, 64, 128, 256}
    assert all(tq * tk <= F.ATTENTION_BLOCK_FLOATS for tq, tk in tiles)      # a block's scores in L1


def test_attention_features_describe_the_blocks():
    from costmodel import features as F
    from costmodel import measure as Me
    from costmodel.model import row_kinds
    spec = Me.attention_spec(12, 256, 256, causal=True)
    a = F.feature_dict(spec, (64, 128), TARGET)
    assert sum(a[c] for c in ("op_conv_fp32", "op_conv_int8", "op_matmul_fp32", "op_matmul_int8",
                              "op_bmm_int8")) == 0
    assert (a["tile_a"], a["tile_b"], a["lanes"], a["vec_acc"], a["k_split"]) == (64, 128, 16, 32, 1)
    assert a["log_par_tasks"] == pytest.approx(np.log2(12 * 4 + 1))
    assert a["pad_waste"] > F.feature_dict(spec, (16, 16), TARGET)["pad_waste"] > 0   # causal: masked scores
    assert F.feature_dict(Me.attention_spec(12, 256, 256), (64, 128), TARGET)["pad_waste"] == 0
    x = np.stack([F.features(spec, (64, 128), TARGET), F.features(Me.conv_spec(64, 56, 64, 3, 1, 1), (2, 8))])
    assert [F.KINDS[k] for k in row_kinds(x, F.FEATURE_NAMES)] == ["attention", "conv"]


def test_policy_ranks_attention_candidates_with_the_model():
    from costmodel import features as F
    from costmodel import measure as Me
    from costmodel import policy
    spec = Me.attention_spec(12, 512, 512)
    with policy.use_model(WantTile((64, 128))):
        assert policy.choose(spec) == ((64, 128), "model")
    with policy.use_model(None):
        assert policy.choose(spec) == (F.default_tile(spec), "fallback")


@needs_xgb
def test_refit_keeps_the_other_boosters_and_the_shipped_model_has_attention():
    from costmodel import features as F
    from costmodel import measure as Me
    from costmodel import policy
    from costmodel.model import XGBCostModel, dataset_from_rows

    def rows(spec, scale):
        return [{"task": Me.task_name(spec), "spec": F.spec_to_json(spec), "tile": list(t),
                 "latency_s": scale * (1 + 0.1 * i), "machine": {"mcpu": "znver4", "threads": 1}}
                for i, t in enumerate(F.candidate_tiles(spec))]
    conv = rows(Me.conv_spec(64, 56, 64, 3, 1, 1), 1e-3)
    att = rows(Me.attention_spec(12, 128, 128), 2e-3) + rows(Me.attention_spec(6, 256, 256, True), 3e-3)
    m = XGBCostModel("reg", 10).fit(dataset_from_rows(conv))
    xc = dataset_from_rows(conv).X
    before = m.predict(xc)
    m.refit_kinds(dataset_from_rows(att))
    assert m.kinds == ("conv", "attention") and np.array_equal(m.predict(xc), before)
    shipped = XGBCostModel.load(policy.SHIPPED_MODEL)
    assert set(shipped.kinds) == set(F.KINDS)
    spec = Me.attention_spec(12, 1024, 1024)
    with policy.use_model(shipped):
        tile, source = policy.choose(spec)
    assert source == "model" and tile in F.candidate_tiles(spec)


def _fused_attention(lq: int):
    from compiler.ir import Graph
    from compiler.ops import elementwise as ew
    from compiler.ops import linalg, nn, shape
    from compiler.types import DType, TensorType
    from passes.einsum import fuse_attention
    g = Graph("attention")
    q = g.add_input("q", TensorType((1, 4, lq, 32), DType.F32))
    k = g.add_input("k", TensorType((1, 4, lq, 32), DType.F32))
    v = g.add_input("v", TensorType((1, 4, lq, 32), DType.F32))
    s = g.add1(linalg.matmul, [q, g.add1(shape.transpose, [k], perm=(0, 1, 3, 2))])
    s = g.add1(ew.div, [s, g.const(np.float32(np.sqrt(32)), "scale")])
    g.outputs = [g.add1(linalg.matmul, [g.add1(nn.softmax, [s], axis=-1), v])]
    return fuse_attention(g)


def test_choose_tiles_gives_fused_attention_a_candidate_tile():
    from compiler.backends.tvm_fused import kernel_spec
    from costmodel import features as F
    from costmodel import policy
    from passes.base import PassContext
    from passes.tiles import choose_tiles
    g = _fused_attention(77)
    assert g.nodes[0].attrs["tile"] == ()
    spec = kernel_spec(g.nodes[0])
    assert F.kind_of(spec) == "attention" and (spec.bh, spec.lq, spec.d, spec.k_transposed) == (4, 77, 32, False)
    assert (spec.tq, spec.tk) == F.default_tile(spec) == (11, 11)
    with policy.use_model(WantTile((77, 77))):
        out = choose_tiles(g, PassContext(kernel_spec=kernel_spec))
    assert out.nodes[0].attrs["tile"] == (77, 77) and (77, 77) in F.candidate_tiles(spec)
