"""The element types the MLIR (IREE) backend carries in integers (compiler/backends/byte_types.py,
mlir_lower/casts.py): bfloat16 (bits in i16), the float8 / float4 formats (bits in i8), int4 / uint4 / int2 /
uint2 (values in i8). Casts to and from them are compared with `compiler.interp.run` BIT for bit over the
special values of every format (ties to even, saturation, overflow, subnormals, infinities, NaN), data movement
and bitcasts on them, the ops refused on them, and bfloat16 computed as the reference does."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

pytest.importorskip("iree.compiler")
pytest.importorskip("iree.runtime")

from compiler import interp
from compiler.backends.byte_types import FORMATS
from compiler.backends.mlir import BACKEND
from compiler.diagnostics import Unsupported
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import linalg, nn
from compiler.ops import shape as sh
from compiler.ops.bitcast import bitcast
from compiler.runtime import Signature
from compiler.target import Target
from compiler.types import DType, TensorType
from tests.cast_graphs import cast_graph

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
TARGET = Target("llvm", num_threads=1)
T = TensorType
NARROW = [DType.F8E4M3FN, DType.F8E4M3FNUZ, DType.F8E5M2, DType.F8E5M2FNUZ, DType.F4E2M1]
SUB_BYTE = [DType.I4, DType.U4, DType.I2, DType.U2]
BF16 = DType.BF16


def _bits(a: np.ndarray) -> np.ndarray:
    a = np.require(a, requirements="C")
    return a.view(f"uint{8 * a.dtype.itemsize}")


def _run_and_compare(g: Graph, *inputs: np.ndarray):
    """Builds g, runs it and compares every output with the interpreter's bit for bit (NaN matching any NaN).
    Returns the executable."""
    exe = BACKEND.build(g, TARGET)
    got, want = exe.run(list(inputs)), interp.run(g, *inputs)
    _assert_bit_exact(g, got, want)
    return exe


def _assert_bit_exact(g: Graph, got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        p = g.outputs[i].producer
        name = f"output {i} ({p.op.name if p else 'const'} {p.inputs[0].type.dtype.value if p else ''} -> " \
               f"{b.dtype}, {dict(p.attrs) if p else ''})"
        assert a.dtype == b.dtype and a.shape == b.shape, (name, a.dtype, b.dtype, a.shape, b.shape)
        keep = np.ones(b.shape, bool)
        if b.dtype.kind == "f" or b.dtype == BF16.numpy or b.dtype.name.startswith("float"):
            keep = ~(np.isnan(a.astype(np.float32)) & np.isnan(b.astype(np.float32)))
        np.testing.assert_array_equal(_bits(a)[keep], _bits(b)[keep], err_msg=name)


def _specials() -> np.ndarray:
    """float32 values that probe each format: its smallest subnormal and the ties around it (to 0, to 2q),
    the tie below its smallest normal, ties at 1, its largest finite value, the tie just past it and beyond;
    bfloat16's ties and subnormals; float32 subnormals, infinities, NaN; and random values."""
    v = [0.0, 1e-7, 0.3, 1.7, 2.5, 3.5, 5.0, 7.0, 1e6, 2.0 ** 127, 2.0 ** -126, 2.0 ** -130, 2.0 ** -149,
         1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 1 + 2.0 ** -8 + 2.0 ** -20, 3.3895314e38, 3.3961776e38, 2.0 ** -133,
         2.0 ** -134, 3 * 2.0 ** -134, np.inf, np.nan, 1.5, 0.75, 2.0 ** 126 * 1.5]
    for f in FORMATS.values():
        q, emax = 2.0 ** (1 - f.bias - f.mbits), f.max_code >> f.mbits
        ulp = 2.0 ** (emax - f.bias - f.mbits)
        v += [q, q / 2, 0.75 * q, 1.5 * q, 2.5 * q, 2.0 ** (1 - f.bias), 2.0 ** (1 - f.bias) - q / 2,
              1 + 2.0 ** -(f.mbits + 1), 1 + 3 * 2.0 ** -(f.mbits + 1), f.max_value, f.max_value + ulp / 4,
              f.max_value + ulp / 2, f.max_value + ulp, 2 * f.max_value]
    v = np.array(v, np.float32)
    rng = np.random.default_rng(0)
    return np.concatenate([v, -v, (rng.standard_normal(64) * 50).astype(np.float32)])


def _cast_graph(src: DType, targets: list[tuple[DType, dict]], n: int) -> Graph:
    """x -> cast to each target, and each carried result back to float32 (decode)."""
    return cast_graph(src, targets, n, lambda to: to.is_narrow_float or to in SUB_BYTE or to is BF16)


def test_mlir_casts_float32_to_every_format_bit_exact():
    x = _specials()
    targets = [(d, {"saturate": s}) for d in NARROW for s in (True, False)] + \
        [(DType.F8E8M0, {"round_mode": m, "saturate": s}) for m in ("up", "down", "nearest") for s in (True, False)] + \
        [(d, {}) for d in SUB_BYTE] + [(BF16, {})]
    _run_and_compare(_cast_graph(DType.F32, targets, x.size), x)


def test_mlir_casts_every_float16_bit_pattern():
    x = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    targets = [(d, {"saturate": s}) for d in NARROW[:2] for s in (True, False)] + \
        [(d, {}) for d in NARROW[2:] + [DType.F8E8M0, BF16] + SUB_BYTE]
    _run_and_compare(_cast_graph(DType.F16, targets, x.size), x)


def test_mlir_decodes_every_code():
    """Every float8 / float4 / bfloat16 code to the float, integer and carried types (float8 -> int: truncated,
    0 out of range or NaN, as ml_dtypes; a subnormal float32 of a bfloat16 widened to float64 exactly)."""
    g = Graph()
    ins = [g.add_input(f"x{i}", T((256,), d)) for i, d in enumerate(NARROW[:4] + [DType.F8E8M0])]
    f4, b = g.add_input("f4", T((16,), DType.F4E2M1)), g.add_input("b", T((65536,), BF16))
    outs = []
    for v in ins + [f4]:
        for to in (DType.F32, DType.F16, DType.F64, BF16, DType.I32, DType.U8, DType.I16, DType.I4, DType.U2,
                   DType.BOOL, DType.F8E4M3FN, DType.F8E5M2FNUZ, DType.F4E2M1):
            if to is not v.type.dtype:
                outs.append(g.add1(ew.cast, [v], to=to))
    outs += [g.add1(ew.cast, [b], to=to) for to in (DType.F32, DType.F16, DType.F64, DType.I32, DType.BOOL,
                                                     DType.F8E4M3FN, DType.F8E5M2, DType.I4, DType.U8)]
    g.outputs = outs
    codes = np.arange(256, dtype=np.uint8)
    feeds = [codes.view(v.type.dtype.numpy) for v in ins] + \
        [codes[:16].view(DType.F4E2M1.numpy), np.arange(65536, dtype=np.uint32).astype(np.uint16).view(BF16.numpy)]
    _run_and_compare(g, *feeds)


def test_mlir_sub_byte_int_casts_and_bitcasts():
    """int4 / uint4 / int2 / uint2 from ints (the low bits), floats (truncated; 0 out of range, NaN or infinite),
    bools and each other; to wider types; bitcasts between them and float4."""
    g = Graph()
    i, f = g.add_input("i", T((12,), DType.I32)), g.add_input("f", T((14,), DType.F32))
    h, q = g.add_input("h", T((14,), DType.F16)), g.add_input("q", T((16,), DType.I4))
    u, bo = g.add_input("u", T((16,), DType.U4)), g.add_input("bo", T((4,), DType.BOOL))
    outs = [g.add1(ew.cast, [v], to=d) for d in SUB_BYTE for v in (i, f, h, q, u, bo) if v.type.dtype is not d]
    outs += [g.add1(ew.cast, [v], to=to) for v in (q, u) for to in (DType.I32, DType.F32, DType.U8, DType.I8,
                                                                   DType.BOOL, DType.F16, DType.I64, DType.U16)]
    f4 = g.add1(bitcast, [q], to=DType.F4E2M1)
    outs += [g.add1(bitcast, [q], to=DType.U4), g.add1(bitcast, [u], to=DType.I4),
             g.add1(bitcast, [u], to=DType.F4E2M1), f4, g.add1(bitcast, [f4], to=DType.I4)]
    g.outputs = outs
    floats = [9, -9, 7.9, -8.5, 16, 1e10, np.nan, -0.7, 3.2, -8.99, 15.5, -1, np.inf, -np.inf]
    _run_and_compare(g, np.array([9, -9, 20, 7, -8, 16, 3, -1, 255, -129, 2**31 - 1, -2**31], np.int32),
                     np.array(floats, np.float32), np.array(floats[:5] + [3.99] + floats[6:], np.float16),
                     np.arange(-8, 8).astype(DType.I4.numpy), np.arange(16).astype(DType.U4.numpy),
                     np.array([True, False, True, False]))


def test_mlir_moves_and_bitcasts_carried_types_and_saves_them():
    """reshape / transpose / concat (with a constant) / slice / gather / where / identity / expand / tile on
    float8, bfloat16, int4 and uint2 tensors, bitcasts; the executable loaded from its library runs the same."""
    g = Graph()
    dts = (DType.F8E4M3FN, BF16, DType.I4, DType.U2)
    vs = [g.add_input(f"x{j}", T((2, 3, 4), d)) for j, d in enumerate(dts)]
    c, idx = g.add_input("c", T((2, 3, 4), DType.BOOL)), g.add_input("idx", T((5,), DType.I64))
    outs = []
    for v in vs:
        dt = v.type.dtype
        k = g.const((np.arange(24).reshape(2, 3, 4) % 4 if dt.is_int else
                     np.linspace(-2, 2, 24).reshape(2, 3, 4)).astype(dt.numpy))
        first = g.add1(sh.slice_, [v], starts=(0,), ends=(1,), axes=(0,), steps=(1,))
        outs += [g.add1(sh.reshape, [v], shape=(4, 6)), g.add1(sh.transpose, [v], perm=(2, 0, 1)),
                 g.add1(sh.concat, [v, k], axis=1),
                 g.add1(sh.slice_, [v], starts=(1,), ends=(4,), axes=(2,), steps=(2,)),
                 g.add1(sh.gather, [v, idx], axis=2), g.add1(ew.where, [c, v, k]), g.add1(ew.identity, [v]),
                 g.add1(sh.expand, [first], shape=(3, 3, 4)), g.add1(sh.tile, [v], repeats=(1, 2, 1))]
    e, b = vs[0], vs[1]
    outs += [g.add1(bitcast, [e], to=DType.I8), g.add1(bitcast, [e], to=DType.U8),
             g.add1(bitcast, [b], to=DType.F16), g.add1(bitcast, [b], to=DType.I16),
             g.add1(bitcast, [g.add1(bitcast, [b], to=DType.F16)], to=BF16), g.add1(bitcast, [vs[3]], to=DType.I2),
             g.add1(bitcast, [g.add1(bitcast, [e], to=DType.U8)], to=DType.F8E5M2)]
    g.outputs = outs
    rng = np.random.default_rng(0)
    feeds = [rng.integers(0, 256, (2, 3, 4)).astype(np.uint8).view(DType.F8E4M3FN.numpy),
             (rng.standard_normal((2, 3, 4)) * 3).astype(BF16.numpy),
             rng.integers(-8, 8, (2, 3, 4)).astype(DType.I4.numpy),
             rng.integers(0, 4, (2, 3, 4)).astype(DType.U2.numpy), rng.integers(0, 2, (2, 3, 4)).astype(bool),
             np.array([3, 0, 2, -1, 1], np.int64)]
    exe = _run_and_compare(g, *feeds)
    loaded = BACKEND.load(exe.library_bytes(), Signature.of(g), TARGET)
    _assert_bit_exact(g, loaded.run(feeds), exe.run(feeds))


def test_mlir_refuses_computing_on_carried_types():
    g = Graph()
    x = g.add_input("x", T((4,), DType.F8E4M3FN))
    g.outputs = [g.add1(ew.add, [x, x])]
    with pytest.raises(Unsupported, match="nn.add on float8_e4m3fn"):
        BACKEND.build(g, TARGET)
    g = Graph()
    x = g.add_input("x", T((4,), DType.U4))
    g.outputs = [g.add1(ew.mul, [x, x])]
    with pytest.raises(Unsupported, match="nn.mul on uint4"):
        BACKEND.build(g, TARGET)
    g = Graph()
    x = g.add_input("x", T((4,), DType.F64))       # float64 -> float32 -> bfloat16 would round twice
    g.outputs = [g.add1(ew.cast, [x], to=BF16)]
    with pytest.raises(Unsupported, match="nn.cast from float64 to bfloat16"):
        BACKEND.build(g, TARGET)


def test_mlir_bf16_computes_as_the_reference():
    """An op on bfloat16 computes in float32 and rounds its result (interp.evaluate); softmax rounds every step
    to bfloat16 and sums in bfloat16, as numpy on ml_dtypes arrays does (onnx.reference's Attention)."""
    g = Graph()
    x, y = g.add_input("x", T((4, 64), BF16)), g.add_input("y", T((4, 64), BF16))
    w = g.add_input("w", T((64, 8), BF16))
    g.outputs = [g.add1(ew.div, [x, y]), g.add1(ew.add, [g.add1(ew.maximum, [x, y]), x]), g.add1(ew.exp, [x]),
                 g.add1(nn.softmax, [x], axis=-1), g.add1(nn.softmax, [y], axis=0), g.add1(linalg.matmul, [x, w]),
                 g.add1(nn.softmax, [g.add1(linalg.matmul, [x, w])], axis=-1), g.const(np.array([1.5, -2], BF16.numpy))]
    rng = np.random.default_rng(1)
    xs, ys = (rng.standard_normal((2, 4, 64)) * 3).astype(np.float32).astype(BF16.numpy)
    _run_and_compare(g, xs, ys, rng.integers(-3, 4, (64, 8)).astype(BF16.numpy))


def test_mlir_compiled_onnx_takes_and_gives_carried_types_after_save_and_load(tmp_path):
    """ONNX through compiler.compile(backend="mlir"): Cast to float8 and from uint4 to bfloat16, and a bfloat16
    causal Attention (a fused kernel whose body computes in float32, its softmax on bfloat16 bits), saved to a
    .dyc and loaded: bit for bit the interpreter's."""
    import compiler
    from onnx import TensorProto as P
    from onnx import helper

    from compiler.runtime import load
    from frontends.onnx import load_onnx
    nodes = [helper.make_node("Cast", ["x"], ["y"], to=P.FLOAT8E5M2),
             helper.make_node("Cast", ["u"], ["z"], to=P.BFLOAT16),
             helper.make_node("Attention", ["q", "k", "v"], ["a"], is_causal=1)]
    vi = helper.make_tensor_value_info
    g = helper.make_graph(nodes, "io", [vi("x", P.FLOAT, [6]), vi("u", P.UINT4, [6])] +
                          [vi(n, P.BFLOAT16, [1, 2, 5, 8]) for n in "qkv"],
                          [vi("y", P.FLOAT8E5M2, [6]), vi("z", P.BFLOAT16, [6]), vi("a", P.BFLOAT16, [1, 2, 5, 8])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)])
    rng = np.random.default_rng(0)
    feeds = [np.array([0.1, -3.0, 1e6, np.inf, np.nan, 57344.0], np.float32),
             np.arange(0, 16, 3).astype(DType.U4.numpy)] + \
        [rng.standard_normal((1, 2, 5, 8)).astype(BF16.numpy) for _ in range(3)]
    cm = load(compiler.compile(m, backend="mlir").save(tmp_path / "m.dyc"))
    ir_graph = load_onnx(m)
    _assert_bit_exact(ir_graph, list(cm.run(*feeds)), interp.run(ir_graph, *feeds))


def test_mlir_builds_carried_casts_for_cuda():
    g = Graph()
    x, b = g.add_input("x", T((64,), DType.F32)), g.add_input("b", T((8, 8), BF16))
    y = g.add1(ew.cast, [x], to=DType.F8E4M3FN, saturate=False)
    g.outputs = [y, g.add1(ew.cast, [y], to=DType.F16), g.add1(ew.cast, [x], to=BF16),
                 g.add1(ew.cast, [x], to=DType.U4), g.add1(ew.cast, [x], to=DType.F8E8M0, round_mode="nearest"),
                 g.add1(nn.softmax, [b], axis=-1)]
    ptx = BACKEND.build(g, Target("cuda", arch="sm_90")).source("ptx")
    assert ".entry" in ptx and "sm_90" in ptx


def test_ml_dtypes_specials_are_what_the_table_says():
    """The formats table (byte_types.FORMATS) agrees with ml_dtypes on the largest finite value."""
    for dt, f in FORMATS.items():
        assert f.max_value == float(ml_dtypes.finfo(dt.numpy).max), dt
