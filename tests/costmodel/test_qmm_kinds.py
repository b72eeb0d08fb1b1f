"""The int8 VNNI matmul kinds of the cost model (``qmatmul``: linear layers, ``qbmm``: attention's batched
matmuls): valid candidates, features, bit-exact kernels for chosen tiles, the policy's choice and fallback, and
its decision cache."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.conftest import has_module
from tests.costmodel.stubs import WantTile

pytestmark = pytest.mark.skipif(not has_module("tvm"), reason="apache-tvm is not installed")
needs_xgb = pytest.mark.skipif(not has_module("xgboost"), reason="xgboost is not installed")


def _has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "avx512_vnni" in f.read()
    except OSError:
        return False


needs_vnni = pytest.mark.skipif(not _has_vnni(), reason="needs AVX-512 VNNI")

TARGET = "llvm -mcpu=znver4 -num-cores=1"


@pytest.fixture(scope="module")
def qspecs():
    from costmodel import measure as Me
    return [Me.qmatmul_spec(128, 384, 1152), Me.qmatmul_spec(128, 1536, 384), Me.qmatmul_spec(1, 384, 384),
            Me.qmatmul_spec(197, 384, 1536), Me.qmatmul_spec(49, 100, 200, "uint8"),
            Me.qbmm_spec(6, 128, 64, 128, True), Me.qbmm_spec(12, 128, 128, 64), Me.qbmm_spec(2, 7, 4, 16)]


def _m_n16(spec):
    from costmodel import features as F
    return spec.m, (spec.n if F.kind_of(spec) == "qbmm" else spec.np_) // 16


def test_candidates_valid(qspecs):
    from costmodel import features as F
    for spec in qspecs:
        tiles = F.candidate_tiles(spec)
        m, n16 = _m_n16(spec)
        assert 1 <= len(tiles) <= 32 and F.default_tile(spec) in tiles and len(set(tiles)) == len(tiles)
        for rm, rn in tiles:
            assert m % rm == 0 and n16 % rn == 0 and rm * rn <= 28 and rm <= 32


def test_default_is_pick_tile(qspecs):
    from compiler.backends.tvm_kernels import qmatmul as QM
    from costmodel import features as F
    for spec in qspecs:
        assert F.default_tile(spec) == QM.pick_tile(*_m_n16(spec))


def test_features_one_hot_and_knobs(qspecs):
    from costmodel import features as F
    a = F.feature_dict(qspecs[0], (8, 3), TARGET)
    assert (a["op_matmul_int8"], a["op_bmm_int8"], a["op_conv_int8"], a["op_matmul_fp32"]) == (1, 0, 0, 0)
    assert (a["tile_a"], a["tile_b"], a["vec_acc"], a["lanes"]) == (3, 8, 24, 16)   # tile_a = column blocks
    assert a["log_flops"] == pytest.approx(np.log2(2 * 128 * 384 * 1152 + 1))
    b = F.feature_dict(qspecs[5], (4, 4), TARGET)
    assert (b["op_matmul_int8"], b["op_bmm_int8"]) == (0, 1) and b["log_batch"] == pytest.approx(np.log2(7))
    for spec in qspecs:
        for t in F.candidate_tiles(spec):
            x = F.features(spec, t, TARGET)
            assert x.shape == (len(F.FEATURE_NAMES),) and np.all(np.isfinite(x))


def test_spec_json_round_trip_and_names(qspecs):
    from costmodel import features as F
    from costmodel import measure as Me
    for spec in qspecs:
        assert F.spec_from_json(json.loads(json.dumps(F.spec_to_json(spec)))) == spec
    tasks = Me.default_tasks(0, 4, kinds=("qmatmul", "qbmm"))
    names = [Me.task_name(t) for t in tasks]
    assert len(set(names)) == len(names) and {n.split(":")[0] for n in names} == {"qmatmul", "qbmm"}
    assert Me.qmatmul_spec(128, 384, 1152) in tasks and Me.qbmm_spec(12, 128, 64, 128, True) in tasks


def test_old_kinds_keep_their_tasks():
    """Adding the int8 matmul kinds does not change the other kinds' (random) task shapes."""
    from costmodel import features as F
    from costmodel import measure as Me
    old = [t for t in Me.default_tasks(0, 16) if F.kind_of(t) in ("conv", "qconv", "matmul")]
    assert old == Me.default_tasks(0, 16, kinds=("conv", "qconv", "matmul"))
    with open(os.path.join(os.path.dirname(F.__file__), "data", "measurements_x86_64.jsonl")) as f:
        names = {json.loads(line)["task"] for line in f}
    assert {Me.task_name(t) for t in old} <= names


# ------------------------------------------------------------------------------------------------- kernels
def _ints(rng, shape, dt):
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max + 1, shape).astype(dt)


def _chosen(spec, k=3):
    """The hand tile plus the candidates with the most and the fewest accumulators."""
    from costmodel import features as F
    tiles = sorted(F.candidate_tiles(spec), key=lambda t: (t[0] * t[1], t))
    return list(dict.fromkeys([F.default_tile(spec), tiles[-1], tiles[0]]))[:k]


@needs_vnni
@pytest.mark.parametrize("m,k,n,adt,zp", [(48, 100, 96, "int8", -3), (14, 64, 64, "uint8", 5)])
def test_qmatmul_chosen_tiles_bit_exact(m, k, n, adt, zp):
    import tvm

    from compiler.backends.tvm_kernels import qmatmul as QM
    from compiler.backends.tvm_kernels.common import host_target
    from compiler.backends.tvm_kernels.qconv2d import Requant
    spec = QM.QMatmulSpec(m, k, n, adt, zp, Requant(2, -1, -128, 127, "int8"))
    rng = np.random.default_rng(m + n)
    a, w = _ints(rng, (m, k), adt), _ints(rng, (k, n), np.int8)
    b = rng.integers(-1000, 1000, n).astype(np.int32)
    mc = (rng.integers(1 << 29, 1 << 30, n), rng.integers(34, 40, n))
    want = QM.qmatmul_reference(spec, a, w, 0, b, mc)
    args = [a, QM.pack_weight(spec, w), QM.pack_bias(spec, w, 0, b), QM.pack_requant(*mc, spec)]
    for tile in _chosen(spec):
        lib = tvm.compile(tvm.IRModule({"main": QM.make_qmatmul(spec, tile)}), target=host_target(1))
        t = [tvm.runtime.tensor(x) for x in args] + [tvm.runtime.empty(QM.out_shape(spec), spec.out_dtype)]
        lib["main"](*t)
        np.testing.assert_array_equal(t[-1].numpy()[:, :n], want, err_msg=str(tile))


@needs_vnni
@pytest.mark.parametrize("bsz,m,k,n,tb", [(3, 24, 32, 96, True), (2, 16, 64, 64, False)])
def test_qbmm_chosen_tiles_bit_exact(bsz, m, k, n, tb):
    import tvm

    from compiler.backends.tvm_kernels import qbmm as QB
    from compiler.backends.tvm_kernels.common import host_target
    from costmodel import measure as Me
    spec = Me.qbmm_spec(bsz, m, k, n, tb)
    rng = np.random.default_rng(m * n + k)
    a, b = _ints(rng, (bsz, m, k), "int8"), _ints(rng, spec.b_shape, "int8")
    want = QB.qbmm_reference(spec, a, b)
    tgt = host_target(1)
    pack = tvm.compile(tvm.IRModule({"main": QB.make_pack(spec)}), target=tgt)
    panel, bias = tvm.runtime.empty(QB.panel_shape(spec), "int8"), tvm.runtime.empty((bsz, n), "int32")
    pack["main"](tvm.runtime.tensor(b), panel, bias)
    for tile in _chosen(spec):
        mm = tvm.compile(tvm.IRModule({"main": QB.make_qbmm(spec, tile)}), target=tgt)
        out = tvm.runtime.empty(QB.out_shape(spec), spec.out_dtype)
        mm["main"](tvm.runtime.tensor(a), panel, bias, out)
        np.testing.assert_array_equal(out.numpy(), want, err_msg=str(tile))


# ------------------------------------------------------------------------------------------------- policy
def test_policy_picks_from_the_model(qspecs):
    from compiler.backends.tvm_kernels.common import SCHEDULE_ATTR
    from costmodel import policy
    qmm, qbmm = qspecs[0], qspecs[5]
    with policy.use_model(WantTile((3, 8))):                  # tile_a = rn = 3, tile_b = rm = 8
        assert policy.choose_qmatmul_tile(qmm) == (8, 3)
        func = policy.kernel(qmm)
        assert str(func.attrs[policy.TILE_ATTR]) == "8,3" and str(func.attrs[policy.SOURCE_ATTR]) == "model"
        assert str(func.attrs[SCHEDULE_ATTR]) == "tiled"
    with policy.use_model(WantTile((1, 16))):
        assert policy.choose_qbmm_tile(qbmm) == (16, 1)
        func = policy.kernel(qbmm)
        assert str(func.attrs[policy.TILE_ATTR]) == "16,1" and str(func.attrs[policy.SOURCE_ATTR]) == "model"


def test_policy_falls_back_without_a_model(qspecs):
    from costmodel import features as F
    from costmodel import policy
    with policy.use_model(None):
        for spec in qspecs:
            assert policy.choose(spec) == (F.default_tile(spec), "fallback")
            func = policy.kernel(spec)
            assert str(func.attrs[policy.SOURCE_ATTR]) == "fallback"
            assert str(func.attrs[policy.TILE_ATTR]) == ",".join(map(str, F.default_tile(spec)))


def test_policy_falls_back_when_the_tile_does_not_schedule(qspecs, monkeypatch):
    from compiler.backends.tvm_kernels import qmatmul as QM
    from costmodel import policy
    spec = qspecs[0]
    real = QM.make_qmatmul

    def fails_off_hand(s, tile=None):
        if tile is not None and tuple(tile) != QM.pick_tile(s.m, s.np_ // 16):
            raise RuntimeError("tensorize failed")
        return real(s, tile)
    monkeypatch.setattr(QM, "make_qmatmul", fails_off_hand)
    with policy.use_model(WantTile((3, 8))):
        func = policy.kernel(spec)
    assert str(func.attrs[policy.TILE_ATTR]) == "4,4" and str(func.attrs[policy.SOURCE_ATTR]) == "fallback"


def test_decision_cache_covers_the_new_kinds(qspecs):
    from costmodel import policy
    m = WantTile((3, 8), identity="qmm-stub-v1")
    with policy.use_model(m):
        first = [policy.choose(s, TARGET) for s in qspecs]
    assert m.calls == len(qspecs)
    with open(os.path.join(os.environ["DYC_CACHE_DIR"], policy.DECISIONS_FILE)) as f:
        kinds = {e["kind"] for e in json.load(f)["entries"].values()}
    assert kinds == {"qmatmul", "qbmm"}
    with policy.use_model(m):                              # as a second process: from the file
        again = [policy.choose(s, TARGET) for s in qspecs]
    assert again == first and m.calls == len(qspecs)
    other = WantTile((1, 1), identity="qmm-stub-v2")
    with policy.use_model(other):
        policy.choose(qspecs[0], TARGET)
    assert other.calls == 1


@needs_xgb
def test_shipped_model_covers_the_new_kinds(qspecs):
    from costmodel import features as F
    from costmodel import policy
    from costmodel.model import XGBCostModel
    if not os.path.exists(policy.SHIPPED_MODEL):
        pytest.skip("no shipped model")
    with policy.use_model(XGBCostModel.load(policy.SHIPPED_MODEL)):
        for spec in qspecs:
            tile, source = policy.choose(spec)
            assert source == "model" and tile in F.candidate_tiles(spec)
