"""The batched activation x activation VNNI matmul (tvm_kernels.qbmm: attention's Q K^T and P V) against
its numpy reference and, through the fast path, against compiler.interp: bit-exact, vpdpbusd in the asm."""
from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from compiler import interp  # noqa: E402
from tests.backends.kernel_ir import build, kernels  # noqa: E402
from compiler.backends.tvm_kernels import qbmm as B  # noqa: E402
from compiler.backends.tvm_kernels.common import host_target  # noqa: E402
from compiler.backends.tvm_kernels.qconv2d import Requant  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import quant as q, shape  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402

pytestmark = pytest.mark.skipif("avx512_vnni" not in open("/proc/cpuinfo").read(),
                                reason="needs AVX-512 VNNI")
TGT = host_target(1)


def _ints(rng, shape_, dt):
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max + 1, shape_).astype(dt)


CASES = [  # bsz, m, k, n, a dtype, a zp, b dtype, b zp, transpose b, requant (Requant, m, c) or None
    (6, 32, 64, 32, "int8", 0, "int8", 0, True, (Requant(0, 0, -512, 508, "int16"), 1188614912, 36)),
    (3, 32, 32, 64, "uint8", 0, "int8", 0, False, (Requant(0, 0, -128, 127, "int8"), 1535719680, 40)),
    (2, 8, 12, 32, "int8", 3, "uint8", 128, False, None),
    (2, 5, 8, 16, "uint8", 7, "int8", 0, True, (Requant(3, 2, 0, 255, "uint8"), 2**30, 20)),
    (1, 7, 4, 16, "uint8", 255, "int8", 0, False, (Requant(0, 0, -2**31, 2**31 - 1, "int32"), 5, 0)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}x{c[3]}_{c[4]}_{c[6]}_t{int(c[8])}")
def test_qbmm_kernel_bit_exact(case):
    bsz, m, k, n, adt, azp, bdt, bzp, tb, rq = case
    s = B.QBmmSpec(bsz, m, k, n, adt, azp, bdt, bzp, tb, *(rq or (None,)))
    rng = np.random.default_rng(m * n + k)
    a, b = _ints(rng, (bsz, m, k), adt), _ints(rng, s.b_shape, bdt)
    pack = tvm.compile(tvm.IRModule({"main": B.make_pack(s)}), target=TGT)
    mm = tvm.compile(tvm.IRModule({"main": B.make_qbmm(s)}), target=TGT)
    panel, bias = tvm.runtime.empty(B.panel_shape(s), "int8"), tvm.runtime.empty((bsz, n), "int32")
    out = tvm.runtime.empty(B.out_shape(s), s.out_dtype)
    pack["main"](tvm.runtime.tensor(b), panel, bias)
    mm["main"](tvm.runtime.tensor(a), panel, bias, out)
    np.testing.assert_array_equal(out.numpy(), B.qbmm_reference(s, a, b))
    assert "vpdpbusd" in mm.mod.inspect_source("asm")


def test_qbmm_spec_rejects_what_vnni_cannot_take():
    with pytest.raises(ValueError, match="k % 4"):
        B.QBmmSpec(1, 4, 6, 16)
    with pytest.raises(ValueError, match="not int8"):
        B.QBmmSpec(1, 4, 8, 16, b_dtype="uint8", b_zp=0)


def _attention(adt=DType.I8, heads=2, seq=32, d=16):
    """q.matmul(Q, transpose(K)) -> requant int16 ; q.matmul(P uint8, V) -> requant int8."""
    g = Graph()
    qv = g.add_input("q", TensorType((1, heads, seq, d), adt))
    kv = g.add_input("k", TensorType((1, heads, seq, d), DType.I8))
    p = g.add_input("p", TensorType((1, heads, seq, seq), DType.U8))
    v = g.add_input("v", TensorType((1, heads, seq, d), DType.I8))
    kt = g.add1(shape.transpose, [kv], perm=[0, 1, 3, 2])
    s = g.add1(q.matmul, [qv, kt], a_zero_point=0 if adt is DType.I8 else 9)
    s16 = g.add1(q.requant, [s], multiplier=[1188614912], shift=[36], qmin=-512, qmax=508, dtype=DType.I16)
    o = g.add1(q.matmul, [p, v])
    o8 = g.add1(q.requant, [o], multiplier=[1535719680], shift=[33], qmin=-128, qmax=127, dtype=DType.I8)
    g.outputs = [s16, o8]
    return g


@pytest.mark.parametrize("adt", [DType.I8, DType.U8])
def test_attention_matmuls_through_fast_path(adt):
    g = _attention(adt)
    kinds = {grp.kind for grp in kernels(g)[1]}
    assert kinds == {"qbmm"}
    groups = {id(grp): grp for grp in kernels(g)[1]}
    assert sorted(len(grp.nodes) for grp in groups.values()) == [2, 3]     # matmul + requant; K^T's transpose too
    rng = np.random.default_rng(0)
    ins = [_ints(rng, v.type.shape, v.type.dtype.numpy) for v in g.inputs]
    got = build(g, Target("llvm", num_threads=1)).run(ins)
    for a, b in zip(got, interp.run(g, *ins)):
        np.testing.assert_array_equal(a, b)


def test_unaligned_attention_takes_the_generic_path():
    g = _attention(seq=10, d=6)            # k = 6 is not a multiple of 4
    assert not any(grp.kind == "qbmm" and grp.spec is not None for grp in kernels(g)[1])
    rng = np.random.default_rng(1)
    ins = [_ints(rng, v.type.shape, v.type.dtype.numpy) for v in g.inputs]
    got = build(g, Target("llvm", num_threads=1)).run(ins)
    for a, b in zip(got, interp.run(g, *ins)):
        np.testing.assert_array_equal(a, b)
