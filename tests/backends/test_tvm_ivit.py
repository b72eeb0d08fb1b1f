"""The I-ViT integer ops (q.shiftmax, q.shiftgelu, q.shifttanh, q.layernorm) through the TVM
backend, bit-exact against compiler.interp, at the extremes: all-equal rows, large negative
logits, zero-variance rows, max-magnitude inputs; plus a whole integer-only encoder."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from compiler import interp  # noqa: E402
from compiler.backends.tvm import BACKEND  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import ivit  # noqa: E402
from compiler.ops.quant import INT_RANGE  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402

TARGET = Target("llvm", num_threads=1)
I8, I16 = DType.I8, DType.I16
SETTINGS = settings(max_examples=6, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check(g: Graph, *inputs: np.ndarray) -> None:
    want = interp.run(g, *inputs)
    got = BACKEND.build(g, TARGET).run(list(inputs))
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def extreme_ints(rng, shape, dt: DType, mode: int) -> np.ndarray:
    lo, hi = INT_RANGE[dt]
    x = rng.integers(lo, hi + 1, shape, dtype=np.int64)
    rows = x.reshape(-1, shape[-1])
    rows[0] = rng.integers(lo, hi + 1)           # an all-equal (zero-variance) row
    if len(rows) > 1:
        rows[1] = lo                              # large negative logits with one maximum
        rows[1, -1] = hi
    if mode == 1:
        x[...] = np.where(x > 0, hi, lo)          # max-magnitude inputs
    return x.astype(dt.numpy)


@SETTINGS
@given(st.sampled_from([I8, I16]), st.integers(0, 1), st.integers(0, 10**6),
       st.sampled_from([0.001, 0.03, 0.4]), st.sampled_from([31, 62]))
def test_tvm_ivit_exp_ops_bit_exact(dt, mode, seed, scale, dbits):
    rng = np.random.default_rng(seed)
    shape = (2, 3, 9)
    g = Graph()
    x = g.add_input("x", TensorType(shape, dt))
    x0 = ivit.exp_unit(scale)
    n_sm = max(0, min(15, int(np.log2(ivit.INT31 / (9 * -x0)))))
    outs = [g.add1(ivit.shiftmax, [x], scale=scale, n=n_sm, axis=-1, dtype=DType.U8, dividend_bits=dbits),
            g.add1(ivit.shiftmax, [x], scale=scale, n=n_sm, axis=1, dtype=DType.I32, dividend_bits=dbits)]
    x0g = ivit.exp_unit(ivit.GELU_ALPHA * float(np.float32(scale)))
    outs.append(g.add1(ivit.shiftgelu, [x], scale=scale, n=min(23, int(np.log2(ivit.INT31 / (2 * -x0g)))),
                       sigma_bits=15, dividend_bits=dbits, row_max=dbits == 31))
    x0t = ivit.exp_unit(2 * float(np.float32(scale)))
    outs.append(g.add1(ivit.shifttanh, [x], scale=scale, n=min(10, int(np.log2(ivit.INT31 / (2 * -x0t)))),
                       dtype=I16, dividend_bits=dbits))
    g.outputs = outs
    check(g, extreme_ints(rng, shape, dt, mode))


@SETTINGS
@given(st.sampled_from([I8, DType.U8, I16]), st.integers(0, 1), st.integers(0, 10**6),
       st.integers(20, 50))
def test_tvm_ivit_layernorm_bit_exact(dt, mode, seed, shift):
    rng = np.random.default_rng(seed)
    shape = (3, 16)
    g = Graph()
    x = g.add_input("x", TensorType(shape, dt))
    mult = g.const(rng.integers(-2**30, 2**30, 16).astype(np.int32), "mult")
    bias = g.const(rng.integers(-2**(shift + 8), 2**(shift + 8), 16).astype(np.int64), "bias")
    g.outputs = [g.add1(ivit.layernorm, [x, mult, bias], shift=shift, zero_point=-3, qmin=-128,
                        qmax=127, dtype=I8),
                 g.add1(ivit.layernorm, [x, mult, bias], shift=shift, zero_point=0, qmin=-32768,
                        qmax=32767, dtype=I16)]
    check(g, extreme_ints(rng, shape, dt, mode))


def test_tvm_ivit_integer_only_encoder_bit_exact():
    torch = pytest.importorskip("torch")
    import compiler
    from examples.zoo import BertEncoder
    from passes.quantize import QuantConfig, calibration_batches
    from passes.quantize_pipeline import quantize_graph

    torch.manual_seed(0)
    model = BertEncoder(vocab=50, hidden=32, heads=2, ffn=64, layers=1, seq=16).eval()
    ids = np.random.default_rng(0).integers(0, 50, (2, 16))
    g = compiler.import_model(model, example_inputs=(torch.tensor(ids),))
    ig, _ = quantize_graph(g, calibration_batches(g, [ids]), QuantConfig(activation="int8", integer_only=True))
    check(ig, ids)
