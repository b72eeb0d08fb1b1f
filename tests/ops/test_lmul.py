"""L-Mul (compiler/ops/lmul.py): the bit-pattern reference against hand-worked products and the stated
special values; its error against the exact product for the paper's 3- and 4-bit forms (vs float8
multiplies); lmul.matmul's fixed summation order; and the TVM lowering against the interpreter:
lmul.mul bit-exact on arbitrary bit patterns, lmul.matmul within the summation-order bound, no float
multiply in the generated code.

The matmul tolerance: the reference adds the K products in float32 in the order k = 0..K-1. Any other
order of the same K float32 additions differs from the exact sum by at most (K-1) u sum_k |p_k|
(u = 2^-24, the classic bound for recursive summation), so two orders differ by at most
2 (K-1) u sum_k |p_k|; the products themselves are bit-exact. Our CPU kernel keeps the reference's
order, so it is in fact bit-exact (test_tvm_lmul_matmul_cpu_kernel_is_bit_exact).
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from compiler import interp
from compiler.ir import Graph
from compiler.ops import lmul
from compiler.ops.registry import TypeRuleError
from compiler.types import DType, TensorType

F32 = DType.F32
U = 2.0 ** -24
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


def _lm(x, y, m: int) -> np.ndarray:
    return lmul.lmul_values(np.float32(x), np.float32(y), m)


def _bits(x) -> int:
    return int(np.asarray(x, np.float32).reshape(()).view(np.uint32))


def test_lmul_offset_rule_of_the_paper():
    assert [lmul.offset_exponent(m) for m in range(1, 9)] == [1, 2, 3, 3, 4, 4, 4, 4]


def test_lmul_hand_worked_products():
    # 1.25 = 1.010b, m = 3, l = 3: no carry, the paper's formula (1 + x_m + y_m + 2^-l) 2^(x_e + y_e):
    # F = 127 << 3 | 2 = 1018; R = 1018 + 1018 - (127 << 3) + 2^(3 - 3) = 1021 = 127 << 3 | 5 -> 1.101b
    assert _lm(1.25, 1.25, 3) == 1 + 0.25 + 0.25 + 2 ** -3 == 1.625
    # 1.5 = 1.100b: x_m + y_m + 2^-3 = 1.125 carries into the exponent: R = 1020 + 1020 - 1016 + 1 =
    # 1025 = 128 << 3 | 1 -> 2^1 * 1.001b = 2.25 = 2^1 (x_m + y_m + 2^-l); the formula would give 2.125
    assert _lm(1.5, 1.5, 3) == 2 * (0.5 + 0.5 + 2 ** -3) == 2.25
    assert _lm(-1.5, 1.5, 3) == -2.25 and _lm(-1.5, -1.5, 3) == 2.25
    # m = 4: l = 3 (offset 2^-3 = 2 mantissa LSBs); m = 23: l = 4
    assert _lm(1.25, 1.25, 4) == 1.625 and _lm(1.25, 1.25, 23) == 1 + 0.5 + 2 ** -4
    assert _lm(1.5, 1.5, 23) == 2 * (1 + 2 ** -4)
    # exponents add: 6 = 1.5 * 2^2, 0.3125 = 1.25 * 2^-2 -> 2^0 * (1 + 0.5 + 0.25 + 2^-3)
    assert _lm(6.0, 0.3125, 3) == 1.875
    # operands are truncated to m mantissa bits first: 1.3 = 1.0100110...b -> 1.010b = 1.25
    assert _lm(1.3, 1.3, 3) == _lm(1.25, 1.25, 3)
    # the offset makes even 1 * 1 inexact: 1 + 2^-l
    assert _lm(1.0, 1.0, 3) == 1.125 and _lm(1.0, 1.0, 23) == 1.0625
    # the bit pattern: R shifted back into float32's field, low 23 - m bits zero
    assert _bits(_lm(1.25, 1.25, 3)) == (1021 << 20)


def test_lmul_special_values_as_stated():
    inf, nan, tiny, sub = np.inf, np.nan, np.float32(1e-30), np.float32(1e-40)
    assert _bits(_lm(0.0, 3.0, 3)) == 0 and _bits(_lm(-0.0, 3.0, 3)) == 0x80000000
    assert _bits(_lm(sub, 3.0, 23)) == 0                   # subnormal operand: flushed to zero
    assert _bits(_lm(tiny, -tiny, 23)) == 0x80000000       # underflow: signed zero
    assert _lm(3e38, 4.0, 23) == inf and _lm(-3e38, 4.0, 23) == -inf     # overflow
    assert _lm(inf, -2.0, 3) == -inf and _lm(-inf, -inf, 3) == inf
    for a, b in [(inf, 0.0), (0.0, -inf), (inf, sub), (nan, 1.0), (2.0, -nan), (nan, inf)]:
        assert _bits(_lm(a, b, 3)) == lmul.QNAN, (a, b)
    # a NaN whose payload lies only in the truncated bits stays NaN (not inf)
    low_nan = np.array([0x7F800001], np.uint32).view(np.float32)
    assert _bits(lmul.lmul_values(low_nan, np.float32(1.0), 3)) == lmul.QNAN


def test_lmul_bf16_is_the_upper_half_of_f32():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 1000)).astype(np.float32)
    g = Graph()
    a, b = g.add_input("a", TensorType((1000,), F32)), g.add_input("b", TensorType((1000,), F32))
    g.outputs = [g.add1(lmul.mul, [a, b], dtype="bf16", mantissa_bits=7),
                 g.add1(lmul.mul, [a, b], dtype="f32", mantissa_bits=7)]
    bf, f = interp.run(g, x, y)
    assert np.array_equal(bf.view(np.uint32), f.view(np.uint32))
    assert not (bf.view(np.uint32) & 0xFFFF).any()         # a bf16 value: low half zero


@pytest.mark.parametrize("dtype,bits,t", [("bf16", 8, F32), ("f32", 0, F32), ("f32", 24, F32),
                                          ("f16", 3, F32), ("f32", 3, DType.F16)])
def test_lmul_type_rule_rejects(dtype, bits, t):
    g = Graph()
    a = g.add_input("a", TensorType((4,), t))
    with pytest.raises(TypeRuleError):
        g.add1(lmul.mul, [a, a], dtype=dtype, mantissa_bits=bits)


def _mean_rel_error(m: int) -> float:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 200_000)).astype(np.float32)
    exact = x.astype(np.float64) * y
    return float(np.mean(np.abs(lmul.lmul_values(x, y, m) - exact) / np.abs(exact)))


def _fp8_mean_rel_error(dtype) -> float:
    """Operands rounded to the float8 format, multiplied, product rounded to it (a float8 multiplier)."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 200_000)).astype(np.float32)
    exact = x.astype(np.float64) * y
    xq, yq = (v.astype(dtype).astype(np.float32) for v in (x, y))
    prod = (xq * yq).astype(dtype).astype(np.float64)
    return float(np.mean(np.abs(prod - exact) / np.abs(exact)))


def test_lmul_mean_relative_error_of_the_3_and_4_bit_forms():
    """Standard normal operands: 3-bit 4.8 %, 4-bit 3.0 %, full f32 mantissa 2.7 % (the constant offset
    in place of x_m * y_m bounds it; more mantissa bits do not help past m = 4)."""
    errs = {m: _mean_rel_error(m) for m in (3, 4, 23)}
    assert 0.045 <= errs[3] <= 0.052
    assert 0.028 <= errs[4] <= 0.033
    assert 0.025 <= errs[23] <= 0.029


def test_lmul_error_vs_float8_as_the_paper_claims():
    """The paper: 4-bit L-Mul is as precise as float8_e4m3 multiplication, 3-bit beats float8_e5m2.
    Here: 4-bit 3.0 % vs e4m3 4.5 %; 3-bit 4.8 % vs e5m2 7.2 % (mean relative error, normal operands)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    assert _mean_rel_error(4) <= _fp8_mean_rel_error(ml_dtypes.float8_e4m3fn)
    assert _mean_rel_error(3) < _fp8_mean_rel_error(ml_dtypes.float8_e5m2)


def test_lmul_matmul_reference_sums_in_order():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 1, 5, 7)).astype(np.float32)
    b = rng.standard_normal((3, 7, 4)).astype(np.float32)
    g = Graph()
    va, vb = g.add_input("a", TensorType(a.shape, F32)), g.add_input("b", TensorType(b.shape, F32))
    g.outputs = [g.add1(lmul.matmul, [va, vb], mantissa_bits=4)]
    got = interp.run(g, a, b)[0]
    assert got.shape == (2, 3, 5, 4)
    for i in np.ndindex(*got.shape):
        acc = np.float32(0)
        for k in range(7):
            acc = np.float32(acc + _lm(a[i[0], 0, i[2], k], b[i[1], k, i[3]], 4))
        assert _bits(acc) == _bits(got[i])


# -- TVM ------------------------------------------------------------------------------------------

FORMS = (("f32", 3), ("f32", 4), ("bf16", 7), ("f32", 23))
K = 24


@pytest.fixture(scope="module")
def lmul_exe():
    """One compiled graph: lmul.mul (broadcasting) and lmul.matmul (broadcast batch) in every form."""
    pytest.importorskip("tvm")
    from compiler.backends.tvm import BACKEND
    from compiler.target import Target
    g = Graph("lmul")
    x, y = g.add_input("x", TensorType((3, 40), F32)), g.add_input("y", TensorType((40,), F32))
    a = g.add_input("a", TensorType((2, 3, 5, K), F32))
    b = g.add_input("b", TensorType((1, 3, K, 16), F32))
    g.outputs = [g.add1(lmul.mul, [x, y], dtype=d, mantissa_bits=m) for d, m in FORMS] + \
                [g.add1(lmul.matmul, [a, b], dtype=d, mantissa_bits=m) for d, m in FORMS]
    return g, BACKEND.build(g, Target("llvm", num_threads=1))


def _patterns(shape):
    """Any float32 bit pattern: NaNs, infinities, zeros, subnormals, normals of every exponent."""
    return hnp.arrays(np.uint32, shape).map(lambda v: v.view(np.float32))


def _finite(shape):
    """Finite floats, zeros and subnormals included."""
    return hnp.arrays(np.float32, shape, elements=st.floats(-1e3, 1e3, width=32))


@SETTINGS
@given(x=_patterns((3, 40)), y=_patterns((40,)), a=_finite((2, 3, 5, K)), b=_finite((1, 3, K, 16)))
def test_tvm_lmul_matches_the_interpreter(lmul_exe, x, y, a, b):
    g, exe = lmul_exe
    ins = [x, y, a, b]
    got, want = exe.run(ins), interp.run(g, *ins)
    n = len(FORMS)
    for o, w in zip(got[:n], want[:n]):                      # elementwise: bit-exact
        assert np.array_equal(o.view(np.uint32), w.view(np.uint32))
    for (d, m), o, w in zip(FORMS, got[n:], want[n:]):       # matmul: the summation-order bound
        terms = np.abs(lmul.lmul_values(ins[2][..., :, :, None], ins[3][..., None, :, :], m))
        bound = 2 * (K - 1) * U * terms.sum(axis=-2)
        assert np.all(np.abs(o.astype(np.float64) - w) <= bound), (d, m)


def test_tvm_lmul_matmul_cpu_kernel_is_bit_exact(lmul_exe):
    g, exe = lmul_exe
    rng = np.random.default_rng(2)
    ins = [rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]
    for o, w in zip(exe.run(ins), interp.run(g, *ins)):
        assert np.array_equal(o.view(np.uint32), w.view(np.uint32))


def test_tvm_lmul_has_no_float_multiply(lmul_exe):
    """The generated x86 code adds floats (the matmul's sum) but never multiplies them: no mulps/mulss,
    no fused multiply-add."""
    asm = lmul_exe[1].source("asm")
    assert re.search(r"\bv?add[ps]s\b", asm)
    assert not re.findall(r"\bv?mul[ps][sd]\b|\bv?f(?:n)?m(?:add|sub)\w*\b", asm)
