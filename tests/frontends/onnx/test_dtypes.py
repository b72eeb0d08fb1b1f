"""The low-bit and extra element types (bfloat16, float8 e4m3fn / e4m3fnuz / e5m2 / e5m2fnuz / e8m0,
float4 e2m1, int4 / uint4 / int2 / uint2): the IR types, ONNX Cast / CastLike / BitCast against
onnx.reference bit for bit (saturation, NaN and infinity, round modes), and TVM's casts against
the interpreter bit for bit."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from compiler import interp
from compiler.diagnostics import Unsupported
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.types import DType, TensorType
from frontends.onnx import load_onnx
from frontends.onnx.context import ONNX_DTYPES
from tests.cast_graphs import cast_graph

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
NARROW = [DType.F8E4M3FN, DType.F8E4M3FNUZ, DType.F8E5M2, DType.F8E5M2FNUZ, DType.F4E2M1]
SUB_BYTE = [DType.I4, DType.U4, DType.I2, DType.U2]
ONNX_OF = {d: t for t, d in ONNX_DTYPES.items()}


def _values() -> np.ndarray:
    """Every special float32 case: ties, overflow past each format's max, subnormals, inf, NaN."""
    v = [0.0, -0.0, 0.3, -1.7, 2.5, 3.5, 5.0, 7.0, 448.0, 449.0, 464.0, 465.0, 480.0, 500.0, 57344.0,
         61440.0, 1e6, -1e6, 1e-7, -1e-7, 2.0 ** -9, 2.0 ** -10, 1.5 * 2.0 ** -10, 2.0 ** -17, 0.25, 0.75,
         np.inf, -np.inf, np.nan, -np.nan, 1.0, 1.5, 2.0 ** 127, 2.0 ** -126, 2.0 ** -130]
    rng = np.random.default_rng(0)
    return np.concatenate([np.array(v, np.float32), (rng.standard_normal(64) * 50).astype(np.float32)])


def _bits(a: np.ndarray) -> np.ndarray:
    a = np.require(a, requirements="C")
    return a.view(f"uint{8 * a.dtype.itemsize}")


def _cast_model(src: int, to: int, shape: tuple[int, ...], **attrs) -> onnx.ModelProto:
    node = helper.make_node("Cast", ["x"], ["y"], to=to, **attrs)
    g = helper.make_graph([node], "cast", [helper.make_tensor_value_info("x", src, shape)],
                          [helper.make_tensor_value_info("y", to, shape)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 25)])
    m.ir_version = 11
    return m


def _ours_and_reference(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    got = interp.run(load_onnx(model), x)[0]
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    return got, np.asarray(want)


# -- the IR types ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dt", list(DType))
def test_dtype_properties_round_trip(dt):
    assert DType.from_numpy(dt.numpy) is dt and DType.parse(dt.value) is dt and DType.parse(dt.mlir) is dt
    assert not (dt.is_float and dt.is_int) and not (dt.is_narrow_float and (dt.is_float or dt.is_int))
    assert dt.bits == {DType.I4: 4, DType.U4: 4, DType.I2: 2, DType.U2: 2, DType.F4E2M1: 4}.get(
        dt, 8 * dt.numpy.itemsize)


def test_dtype_spellings():
    assert DType.BF16.numpy == np.dtype(ml_dtypes.bfloat16) and DType.BF16.is_float
    assert DType.F8E8M0.numpy == np.dtype(ml_dtypes.float8_e8m0fnu) and DType.F8E8M0.mlir == "f8E8M0FNU"
    assert DType.I4.numpy == np.dtype(ml_dtypes.int4) and DType.I4.mlir == "i4" and DType.U2.mlir == "ui2"
    assert str(TensorType((2,), DType.F8E4M3FN)) == "tensor<2xf8E4M3FN>"
    for t, d in ONNX_DTYPES.items():
        assert helper.tensor_dtype_to_np_dtype(t) == d.numpy


# -- Cast against onnx.reference ------------------------------------------------------------------
@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("dt", NARROW)
@pytest.mark.parametrize("src", [np.float32, np.float16])
def test_cast_to_narrow_float_saturates_as_onnx(dt, saturate, src):
    x = _values().astype(src)
    model = _cast_model(helper.np_dtype_to_tensor_dtype(np.dtype(src)), ONNX_OF[dt], x.shape, saturate=saturate)
    got, want = _ours_and_reference(model, x)
    assert got.dtype == dt.numpy
    np.testing.assert_array_equal(_bits(got), _bits(want.astype(dt.numpy)))


@pytest.mark.parametrize("round_mode", ["up", "down", "nearest"])
@pytest.mark.parametrize("saturate", [1, 0])
def test_cast_to_e8m0_round_modes(round_mode, saturate):
    x = np.abs(_values())
    x = np.concatenate([x, np.float32([3.0, 1.25, 1.75, 2.0 ** 127 * 1.5, 6.0])])
    model = _cast_model(TensorProto.FLOAT, TensorProto.FLOAT8E8M0, x.shape, saturate=saturate,
                        round_mode=round_mode)
    got, want = _ours_and_reference(model, x)
    np.testing.assert_array_equal(_bits(got), _bits(want))


@pytest.mark.parametrize("dt", [*NARROW, DType.F8E8M0, DType.BF16, *SUB_BYTE])
@pytest.mark.parametrize("to", [DType.F32, DType.F16])
def test_cast_from_each_type_is_exact(dt, to):
    codes = np.arange(256 if dt.bits >= 8 else 1 << dt.bits, dtype=np.uint8 if dt.bits <= 8 else np.uint16)
    x = codes.view(dt.numpy) if dt.bits >= 8 else codes.astype(np.int64).astype(dt.numpy)
    if dt is DType.BF16:
        x = (np.arange(0, 65536, 97, dtype=np.uint32).astype(np.uint16)).view(dt.numpy)
    model = _cast_model(ONNX_OF[dt], ONNX_OF[to], x.shape)
    got, want = _ours_and_reference(model, x)
    assert got.dtype == to.numpy
    np.testing.assert_array_equal(got, want)      # NaN == NaN positionally


@pytest.mark.parametrize("dt", SUB_BYTE + [DType.BF16])
def test_cast_float_to_sub_byte_and_bf16(dt):
    x = np.concatenate([np.arange(-9, 17, 0.5, dtype=np.float32), np.float32([np.nan, np.inf, -300.0])])
    model = _cast_model(TensorProto.FLOAT, ONNX_OF[dt], x.shape)
    got, want = _ours_and_reference(model, x)
    np.testing.assert_array_equal(_bits(got), _bits(want))


def test_cast_int_wraps_to_int4():
    x = np.arange(-20, 20, dtype=np.int32)
    model = _cast_model(TensorProto.INT32, TensorProto.INT4, x.shape)
    got, want = _ours_and_reference(model, x)
    np.testing.assert_array_equal(got.astype(np.int8), want.astype(np.int8))


def test_bitcast_reinterprets_bits():
    x = np.array([1.0, -2.5, np.inf, 0.0], np.float32)
    node = helper.make_node("BitCast", ["x"], ["y"], to=TensorProto.INT32)
    g = helper.make_graph([node], "b", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, [4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 26)])
    got = interp.run(load_onnx(m), x)[0]
    np.testing.assert_array_equal(got, x.view(np.int32))


def test_bitcast_between_sub_byte_types():
    g = Graph()
    x = g.add_input("x", TensorType((16,), DType.I4))
    from compiler.ops.bitcast import bitcast
    u = g.add1(bitcast, [x], to=DType.U4)
    g.outputs = [u, g.add1(bitcast, [u], to=DType.F4E2M1)]
    xs = np.arange(-8, 8).astype(DType.I4.numpy)
    got_u, got_f = interp.run(g, xs)
    np.testing.assert_array_equal(got_u.astype(np.uint8), np.arange(-8, 8) & 0xF)
    np.testing.assert_array_equal(got_f.astype(np.float32), (np.arange(-8, 8) & 0xF).astype(np.uint8)
                                  .view(ml_dtypes.float4_e2m1fn).astype(np.float32))


def test_initializer_of_a_narrow_type_is_imported():
    w = np.array([0.5, -1.0, 448.0, 3.0], ml_dtypes.float8_e4m3fn)
    node = helper.make_node("Cast", ["w"], ["y"], to=TensorProto.FLOAT)
    add = helper.make_node("Add", ["x", "y"], ["z"])
    g = helper.make_graph([node, add], "i", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, [4])],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    x = np.ones(4, np.float32)
    np.testing.assert_array_equal(interp.run(load_onnx(m), x)[0], w.astype(np.float32) + 1)


# -- TVM: casts compiled bit for bit ---------------------------------------------------------------
def _tvm_run(g: Graph, *inputs: np.ndarray) -> list[np.ndarray]:
    from compiler.backends.tvm import BACKEND
    from compiler.target import Target
    return BACKEND.build(g, Target("llvm")).run(list(inputs))


def _cast_graph(src: DType, targets: list[tuple[DType, dict]], n: int) -> Graph:
    """x -> cast to each target, and each narrow result back to float32 (decode)."""
    return cast_graph(src, targets, n, lambda to: to.is_narrow_float or to in SUB_BYTE)


def _assert_bit_exact(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == b.dtype, (i, a.dtype, b.dtype)
        if b.dtype.kind == "f" or b.dtype == DType.BF16.numpy:
            both_nan = np.isnan(a.astype(np.float32)) & np.isnan(b.astype(np.float32))
            np.testing.assert_array_equal(_bits(a)[~both_nan], _bits(b)[~both_nan], err_msg=f"output {i}")
        else:
            np.testing.assert_array_equal(_bits(a), _bits(b), err_msg=f"output {i}")


def test_tvm_casts_bf16_and_float8_bit_exact():
    x = _values()
    g = Graph()
    xv = g.add_input("x", TensorType((x.size,), DType.F32))
    g.outputs = [g.add1(ew.cast, [xv], to=DType.BF16), g.add1(ew.cast, [xv], to=DType.F8E4M3FN)]
    _assert_bit_exact(_tvm_run(g, x), interp.run(g, x))


@pytest.mark.slow
@pytest.mark.parametrize("src", [DType.F32, DType.F16])
def test_tvm_casts_every_format_bit_exact(src):
    """float32: the special values under every attribute; float16: every bit pattern."""
    if src is DType.F32:
        x = _values()
        targets = [(d, {"saturate": s}) for d in NARROW for s in (True, False)] + \
            [(DType.F8E8M0, {"round_mode": m, "saturate": s}) for m in ("up", "down", "nearest") for s in (True, False)]
    else:
        x = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
        targets = [(d, {}) for d in NARROW + [DType.F8E8M0]]
    g = _cast_graph(src, targets + [(d, {}) for d in SUB_BYTE] + [(DType.BF16, {})], x.size)
    _assert_bit_exact(_tvm_run(g, x), interp.run(g, x))


def test_tvm_narrow_inputs_decode_and_bitcast():
    from compiler.ops.bitcast import bitcast
    g = Graph()
    ins = [g.add_input(f"x{i}", TensorType((256,), d)) for i, d in enumerate(NARROW[:4] + [DType.F8E8M0])]
    i4 = g.add_input("i4", TensorType((16,), DType.I4))
    g.outputs = [g.add1(ew.cast, [v], to=to) for v in ins for to in (DType.F32, DType.F16, DType.I32, DType.U8)] + \
        [g.add1(bitcast, [i4], to=DType.U4), g.add1(bitcast, [g.add1(bitcast, [i4], to=DType.U4)], to=DType.I4),
         g.add1(ew.cast, [i4], to=DType.I2), g.add1(bitcast, [ins[0]], to=DType.I8)]
    codes = np.arange(256, dtype=np.uint8)
    feeds = [codes.view(v.type.dtype.numpy) for v in ins] + [np.arange(-8, 8).astype(DType.I4.numpy)]
    _assert_bit_exact(_tvm_run(g, *feeds), interp.run(g, *feeds))


def test_tvm_refuses_arithmetic_on_byte_carried_types():
    g = Graph()
    x = g.add_input("x", TensorType((4,), DType.F8E4M3FN))
    g.outputs = [g.add1(ew.add, [x, x])]
    with pytest.raises(Unsupported, match="nn.add on float8_e4m3fn"):
        _tvm_run(g, np.zeros(4, ml_dtypes.float8_e4m3fn))


def test_tvm_bf16_ops_compute_in_float32():
    """An op on bfloat16 runs in float32 and rounds its result (TVM's bfloat16 division would not lower)."""
    g = Graph()
    x = g.add_input("x", TensorType((64,), DType.BF16))
    y = g.add_input("y", TensorType((64,), DType.BF16))
    g.outputs = [g.add1(ew.div, [x, y]), g.add1(ew.add, [g.add1(ew.maximum, [x, y]), x])]
    rng = np.random.default_rng(1)
    xs, ys = (rng.standard_normal((2, 64)) * 10).astype(np.float32).astype(DType.BF16.numpy)
    _assert_bit_exact(_tvm_run(g, xs, ys), interp.run(g, xs, ys))


def test_compiled_model_takes_and_gives_float8_and_int4_after_save_and_load(tmp_path):
    """The .dyc signature names the new types; the loaded executable converts its byte containers."""
    import compiler
    from compiler.runtime import load
    n1 = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT8E5M2)
    n2 = helper.make_node("Cast", ["q"], ["z"], to=TensorProto.FLOAT)
    g = helper.make_graph([n1, n2], "io", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6]),
                                            helper.make_tensor_value_info("q", TensorProto.INT4, [6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT8E5M2, [6]),
                           helper.make_tensor_value_info("z", TensorProto.FLOAT, [6])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    x = np.array([0.1, -3.0, 1e6, np.inf, np.nan, 57344.0], np.float32)
    q = np.array([-8, -1, 0, 1, 6, 7]).astype(ml_dtypes.int4)
    cm = load(compiler.compile(m).save(tmp_path / "m.dyc"))
    y, z = cm.run(x, q)
    want_y, want_z = interp.run(load_onnx(m), x, q)
    assert y.dtype == want_y.dtype and z.dtype == np.float32
    np.testing.assert_array_equal(_bits(y), _bits(want_y))
    np.testing.assert_array_equal(z, want_z)


def test_mlir_refuses_arithmetic_on_byte_carried_types():
    """The mlir backend carries these types too (tests/backends/test_mlir_byte_types.py) and refuses as TVM does."""
    pytest.importorskip("iree.compiler")
    from compiler.backends.mlir import BACKEND
    from compiler.target import Target
    g = Graph()
    x = g.add_input("x", TensorType((4,), DType.F8E4M3FN))
    g.outputs = [g.add1(ew.add, [x, x])]
    with pytest.raises(Unsupported, match="mlir: nn.add on float8_e4m3fn"):
        BACKEND.build(g, Target("llvm"))
