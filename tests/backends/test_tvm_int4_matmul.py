"""The int4-weight VNNI matmul (tvm_kernels.qmatmul_int4) bit-exact against qmatmul_reference (int4 weights are
int8 values in [-8, 7]), its nibble layout, and its unpack in registers (vpdpbusd, no byte-to-word widening)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

tvm = pytest.importorskip("tvm")

from compiler.backends.tvm_kernels import qmatmul as M, qmatmul_int4 as Q  # noqa: E402
from compiler.backends.tvm_kernels.common import host_target  # noqa: E402
from compiler.backends.tvm_kernels.qconv2d import Requant  # noqa: E402

VNNI = "avx512_vnni" in open("/proc/cpuinfo").read()
needs_vnni = pytest.mark.skipif(not VNNI, reason="needs AVX-512 VNNI")


def _ints(rng, shape, dt):
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max + 1, shape).astype(dt)


def _weight(rng, k, n, w_zp=0):
    w = rng.integers(-8, 8, (k, n)) + w_zp
    w[0, 0], w[-1, -1], w[k // 2, n // 2] = w_zp - 8, w_zp + 7, w_zp - 8      # both ends of the int4 range
    return w


def _unpack(spec, p):
    """The packed nibbles back to the (k, n) signed weights (inverse of pack_weight_int4)."""
    lo = ((p & 0xF).astype(np.int64) ^ 8) - 8
    hi = ((p >> 4).astype(np.int64) ^ 8) - 8
    q = np.stack([lo, hi], 0)                                                  # half, c, p, b, j, t
    w = q.transpose(2, 0, 5, 1, 3, 4).reshape(spec.kp, spec.np_)
    return w[:spec.k, :spec.n]


CASES = [  # m, k, n, activation dtype, a_zp, w_zp, requant
    (1, 37, 40, "uint8", 3, 0, False),
    (1, 203, 70, "int8", -5, 0, True),
    (3, 1001, 130, "uint8", 0, 8, True),        # unsigned 4-bit weights 0..15 with zero point 8
    (3, 45, 16, "int8", 0, 0, False),
    (8, 77, 200, "int8", 7, 0, False),
    (8, 256, 100, "uint8", 128, -2, True),
]


@needs_vnni
@pytest.mark.parametrize("m,k,n,adt,zp,wzp,rq", CASES, ids=lambda v: str(v))
def test_int4_matmul_bit_exact(m, k, n, adt, zp, wzp, rq):
    rng = np.random.default_rng(m * 1000 + k + n)
    r = Requant(2, -1, -128, 127, "int8") if rq else None
    spec = Q.QMatmulInt4Spec(m, k, n, adt, zp, r)
    lib = tvm.compile(tvm.IRModule({"main": Q.make_qmatmul_int4(spec)}), target=host_target(1))
    asm = lib.mod.inspect_source("asm")
    assert "vpdpbusd" in asm and "vpmovsxbw" not in asm       # nibbles fed to vpdpbusd as bytes, never widened
    a, w = _ints(rng, (m, k), adt), _weight(rng, k, n, wzp)
    b = rng.integers(-1000, 1000, n).astype(np.int32)
    mc = rng.integers(2**29, 2**31 - 1, n), rng.integers(34, 40, n)
    args = [a, Q.pack_weight_int4(spec, w, wzp), Q.pack_bias(spec, w, wzp, b)]
    args += [Q.pack_requant(*mc, spec)] if rq else []
    t = [tvm.runtime.tensor(x) for x in args] + [tvm.runtime.empty(Q.out_shape(spec), spec.out_dtype)]
    lib["main"](*t)
    np.testing.assert_array_equal(t[-1].numpy()[:, :n], Q.qmatmul_reference(spec, a, w, wzp, b, mc))


@needs_vnni
def test_int4_matmul_largest_k_does_not_overflow():
    """k = MAX_KP with a = 255 and w = -8 (or 7): 16 x the dot product is within 1% of the int32 range."""
    spec = Q.QMatmulInt4Spec(1, Q.MAX_KP, 64)
    a = np.full((1, spec.k), 255, np.uint8)
    w = np.full((spec.k, 64), -8)
    w[:, 1::2] = 7
    lib = tvm.compile(tvm.IRModule({"main": Q.make_qmatmul_int4(spec)}), target=host_target(1))
    t = [tvm.runtime.tensor(x) for x in (a, Q.pack_weight_int4(spec, w), Q.pack_bias(spec, w))]
    t.append(tvm.runtime.empty(Q.out_shape(spec), "int32"))
    lib["main"](*t)
    np.testing.assert_array_equal(t[-1].numpy(), Q.qmatmul_reference(spec, a, w))


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 70), n=st.integers(1, 150), wzp=st.integers(-3, 3), seed=st.integers(0, 2**16))
def test_pack_weight_int4_round_trips(k, n, wzp, seed):
    spec = Q.QMatmulInt4Spec(1, k, n)
    w = _weight(np.random.default_rng(seed), k, n, wzp)
    p = Q.pack_weight_int4(spec, w, wzp)
    assert p.dtype == np.uint8 and p.shape == (spec.np_ // 64, spec.kp // 8, 4, 16, 4)
    np.testing.assert_array_equal(_unpack(spec, p), w - wzp)


@pytest.mark.parametrize("k,n", [(64, 64), (4096, 256), (200, 1088)])
def test_int4_weight_is_half_the_int8_bytes(k, n):
    w = np.random.default_rng(0).integers(-8, 8, (k, n))
    p4 = Q.pack_weight_int4(Q.QMatmulInt4Spec(1, k, n), w)
    p8 = M.pack_weight(M.QMatmulSpec(1, k, n), w)
    assert 2 * p4.nbytes == p8.nbytes


def test_out_of_range_weights_and_k_are_rejected():
    spec = Q.QMatmulInt4Spec(1, 8, 16)
    with pytest.raises(ValueError):
        Q.pack_weight_int4(spec, np.full((8, 16), 8))
    with pytest.raises(ValueError):
        Q.pack_weight_int4(spec, np.full((8, 16), -9))
    with pytest.raises(ValueError):
        Q.QMatmulInt4Spec(1, Q.MAX_KP + 1, 16)
