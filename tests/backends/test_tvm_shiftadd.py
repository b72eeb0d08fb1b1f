"""The shift-and-add kernels (tvm_kernels/shiftadd.py): bit-exact with the interpreter on random shapes
(hypothesis), no multiply of data in the TIR of their inner loop, and both realizations of a power-of-two layer
(shift, VNNI) through the fused-kernel emitters == compiler.interp."""
from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from compiler import interp  # noqa: E402
from compiler.backends.tvm_kernels import qconv2d as K, qmatmul as M, shiftadd as S  # noqa: E402
from compiler.backends.tvm_kernels.common import host_target  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import elementwise as ew, quant as q, shape  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402
from passes.shiftadd import CODES, levels  # noqa: E402
from tests.backends.kernel_ir import TARGET, build  # noqa: E402

TGT = host_target(1)
HAS_VNNI = "avx512_vnni" in open("/proc/cpuinfo").read()
PROPERTY = settings(max_examples=8, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _compile(func):
    return tvm.compile(tvm.IRModule({"main": func}), target=TGT)


def _call(lib, args, shape, dtype) -> np.ndarray:
    t = [tvm.runtime.tensor(a) for a in args] + [tvm.runtime.empty(shape, dtype)]
    lib["main"](*t)
    return t[-1].numpy()


def _ints(rng, shape, dt):
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max + 1, shape).astype(dt)


def _requant(g, v, c, rng, axis):
    return g.add1(q.requant, [v], multiplier=tuple(int(m) for m in rng.integers(2**30, 2**31 - 1, c)),
                  shift=tuple(int(s) for s in rng.integers(36, 42, c)), zero_point=3, in_zero_point=0,
                  qmin=0, qmax=255, dtype=DType.U8, axis=axis)


# -- kernels vs the interpreter on random shapes ------------------------------------------------------------------
@PROPERTY
@given(ci=st.integers(1, 40), co=st.integers(1, 40), h=st.integers(3, 11), k=st.sampled_from([1, 3]),
       stride=st.sampled_from([1, 2]), padded=st.booleans(), xdt=st.sampled_from(["uint8", "int8"]),
       terms=st.sampled_from([1, 2]), with_rq=st.booleans(), seed=st.integers(0, 2**16))
def test_shift_conv_bit_exact_vs_interp(ci, co, h, k, stride, padded, xdt, terms, with_rq, seed):
    rng = np.random.default_rng(seed)
    p = k // 2 if padded else 0
    zp = int(rng.integers(0, 200)) if xdt == "uint8" else int(rng.integers(-100, 100))
    x = _ints(rng, (1, ci, h, h), np.dtype(xdt))
    w = rng.choice(levels(terms), (co, ci, k, k)).astype(np.int8)
    b = rng.integers(-30000, 30000, co).astype(np.int32)
    g = Graph()
    xv = g.add_input("x", TensorType(x.shape, DType(xdt)))
    y = g.add1(q.conv, [xv, g.const(w, "w"), g.const(b, "b")], strides=(stride, stride), pads=(p, p, p, p),
               dilations=(1, 1), groups=1, x_zero_point=zp, weight_code=CODES[terms], realization="shift")
    rq_node = _requant(g, y, co, rng, 1) if with_rq else None
    g.outputs = [rq_node if with_rq else y]
    want = interp.run(g, x)[0]

    rq = K.Requant(0, 3, 0, 255, "uint8") if with_rq else None
    spec = K.QConvSpec(1, ci, h, h, co, k, k, (stride, stride), (p, p, p, p), (1, 1), xdt, zp,
                       K.choose_in_block(ci), rq)
    args = [K.pack_data(spec, x), S.pack_conv_code(spec, w, terms), S.pack_conv_bias(spec, w, b, terms)]
    if with_rq:
        a = rq_node.producer.attrs
        args.append(K.pack_requant(a["multiplier"], a["shift"], co, spec.cop))
    got = K.unpack_out(spec, _call(_compile(S.make_shift_qconv2d(spec, terms)), args, K.out_shape(spec),
                                   spec.out_dtype))
    np.testing.assert_array_equal(got, want)


@PROPERTY
@given(m=st.integers(1, 20), k=st.integers(1, 90), n=st.integers(1, 50), adt=st.sampled_from(["uint8", "int8"]),
       terms=st.sampled_from([1, 2]), with_rq=st.booleans(), seed=st.integers(0, 2**16))
def test_shift_matmul_bit_exact_vs_interp(m, k, n, adt, terms, with_rq, seed):
    rng = np.random.default_rng(seed)
    zp = int(rng.integers(0, 200)) if adt == "uint8" else int(rng.integers(-100, 100))
    a = _ints(rng, (m, k), np.dtype(adt))
    w = rng.choice(levels(terms), (k, n)).astype(np.int8)
    b = rng.integers(-30000, 30000, n).astype(np.int32)
    g = Graph()
    av = g.add_input("a", TensorType(a.shape, DType(adt)))
    y = g.add1(q.matmul, [av, g.const(w, "w")], a_zero_point=zp, b_zero_point=0, weight_code=CODES[terms],
               realization="shift")
    y = g.add1(ew.add, [y, g.const(b, "b")])
    rq_node = _requant(g, y, n, rng, -1) if with_rq else None
    g.outputs = [rq_node if with_rq else y]
    want = interp.run(g, a)[0]

    spec = M.QMatmulSpec(m, k, n, adt, zp, K.Requant(0, 3, 0, 255, "uint8") if with_rq else None)
    args = [a, S.pack_matmul_code(spec, w, terms), S.pack_matmul_bias(spec, w, terms, 0, b)]
    if with_rq:
        r = rq_node.producer.attrs
        args.append(M.pack_requant(r["multiplier"], r["shift"], spec))
    got = _call(_compile(S.make_shift_qmatmul(spec, terms)), args, M.out_shape(spec), spec.out_dtype)
    np.testing.assert_array_equal(got[:, :n], want)


def test_code_round_trip_and_refusal():
    """Every level of the 1- and 2-term sets has a code that stands for it; other values are refused."""
    for terms in (1, 2):
        lv = levels(terms)
        assert np.array_equal(S.code_value(S.decompose(lv, terms)), lv)
    with pytest.raises(ValueError, match="not sums of 1"):
        S.decompose(np.array([3, 5], np.int8), 1)
    with pytest.raises(ValueError, match="not sums of 2"):
        S.decompose(np.array([11], np.int8), 2)


# -- the inner loop has no data multiply ---------------------------------------------------------------------------
def _strip_indices(expr: str) -> str:
    """expr with every [...] (buffer indexing: index arithmetic) removed."""
    prev = None
    while prev != expr:
        prev, expr = expr, re.sub(r"\[[^\[\]]*\]", "", expr)
    return expr


def reduction_updates(script: str, scalars: bool = False) -> list[tuple[str, str]]:
    """(innermost loop header, right-hand side) of every accumulation `B[..] = B[..] + ...` in a TIR script;
    with `scalars`, also `x = x ...` (TVMScript prints a one-element buffer as a scalar)."""
    target = r"^(\w+)(\[.*\])? = (.*)$" if scalars else r"^(\w+)(\[.*\]) = (.*)$"
    out, loop = [], ""
    for line in script.splitlines():
        s = line.strip()
        if s.startswith("for "):
            loop = s
        m = re.match(target, s)
        if m and re.search(rf"\b{m.group(1)}\b" if scalars else rf"\b{m.group(1)}\[", m.group(3)):
            out.append((loop, m.group(3)))
    return out


def data_multiplies(script: str) -> list[str]:
    """The accumulations whose value multiplies anything outside buffer indices."""
    return [rhs for _, rhs in reduction_updates(script) if "*" in _strip_indices(rhs)]


@pytest.mark.parametrize("terms", [1, 2])
def test_tir_inner_loop_has_no_data_multiply(terms):
    conv = K.QConvSpec(1, 16, 8, 8, 32, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), "int8", 5, 16,
                       K.Requant(0, 3, 0, 255, "uint8"))
    mm = M.QMatmulSpec(4, 64, 32, "uint8", 3, K.Requant(0, 3, 0, 255, "uint8"))
    for func in (S.make_shift_qconv2d(conv, terms), S.make_shift_qmatmul(mm, terms)):
        script = func.script()
        updates = reduction_updates(script)
        assert updates, "no accumulation found"
        for loop, rhs in updates:
            assert "T.vectorized(16)" in loop        # the update sits in the innermost (vector) loop
        assert data_multiplies(script) == []
        upd = [rhs for _, rhs in updates if "<<" in rhs]
        assert upd and all("^" in rhs for rhs in upd)          # shift, then the sign mask
    # the checker is not vacuous: the multiply-accumulate form of the same conv is found
    assert data_multiplies(K.qconv2d_prim_func(conv).script())


# -- both realizations through the fused-kernel path -------------------------------------------------------------
@pytest.mark.skipif(not HAS_VNNI, reason="the VNNI realization needs AVX-512 VNNI")
@pytest.mark.parametrize("realization", ["shift", "vnni"])
def test_fused_realizations_bit_exact(realization):
    rng = np.random.default_rng(3)
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 10, 10), DType.F32))
    xq = g.add1(q.quantize, [x], scale=0.02, zero_point=10, dtype=DType.U8, qmin=0, qmax=255)
    w1 = rng.choice(levels(2), (32, 3, 3, 3)).astype(np.int8)
    c1 = g.add1(q.conv, [xq, g.const(w1, "w1"), g.const(rng.integers(-3000, 3000, 32).astype(np.int32), "b1")],
                strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), groups=1, x_zero_point=10,
                weight_code="pow2x2", realization=realization)
    r1 = _requant(g, c1, 32, rng, 1)
    w2 = rng.choice(levels(1), (16, 32, 3, 3)).astype(np.int8)
    c2 = g.add1(q.conv, [r1, g.const(w2, "w2")], strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1), groups=1,
                x_zero_point=3, weight_code="pow2x1", realization=realization)
    r2 = _requant(g, c2, 16, rng, 1)
    flat = g.add1(q.requant, [r2], multiplier=(1 << 30,), shift=(30,), zero_point=0, in_zero_point=0, qmin=0,
                  qmax=255, dtype=DType.U8, axis=1)
    f = g.add1(shape.reshape, [flat], shape=(1, 16 * 25))
    w3 = rng.choice(levels(2), (16 * 25, 10)).astype(np.int8)
    mm = g.add1(q.matmul, [f, g.const(w3, "w3")], a_zero_point=3, b_zero_point=0, weight_code="pow2x2",
                realization=realization)
    g.outputs = [g.add1(q.dequantize, [mm], scale=(0.01,), zero_point=(0,), axis=1)]
    exe = build(g, TARGET)
    xs = rng.uniform(-0.2, 4, (1, 3, 10, 10)).astype(np.float32)
    np.testing.assert_array_equal(exe.run([xs])[0], interp.run(g, xs)[0])
    calls = re.findall(r"call_tir\(cls\.([a-z_0-9]+?)_\d+,", exe.source("relax"))
    suffix = "shiftadd" if realization == "shift" else "vnni"
    convs = calls.count(f"qconv2d_{suffix}") + (calls.count("qconv2d_amx") if suffix == "vnni" else 0)
    assert convs == 2 and calls.count(f"qmatmul_{suffix}") == 1, calls
