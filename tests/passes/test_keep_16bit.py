"""--keep-16bit / QuantConfig.keep_16bit: named conv / matmul layers keep int16 input and output activations,
integer-only (int16 x int8 -> int32, q.requant into int16, 65536-entry tables); range analysis refuses a kept
layer whose int32 accumulator could overflow; TVM runs those layers op by op, bit-exact with the interpreter."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import interp
from compiler.api import quantize_model
from compiler.diagnostics import InvalidInput, Unsupported
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import linalg, nn, quant
from compiler.ops import reduce as rd
from compiler.ops import shape as sh
from compiler.types import DType, TensorType
from passes.quant_report import report
from passes.quantize import QuantConfig, annotate, calibrate, keep_16bit_layers, spec_of
from passes.verify_integer_only import verify_integer_only
from tests.conftest import has_module, requires_tvm

SHAPE = (2, 3, 12, 12)


def _conv(g: Graph, rng, v, ci: int, co: int, name: str, stride: int = 1, scale: float = 0.3):
    w = g.const((rng.standard_normal((co, ci, 3, 3)) * scale).astype(np.float32), name + "_w")
    b = g.const((rng.standard_normal(co) * 0.1).astype(np.float32), name + "_b")
    return g.add1(linalg.conv, [v, w, b], strides=(stride, stride), pads=(1, 1, 1, 1), dilations=(1, 1), name=name)


def _cnn(rng) -> Graph:
    """conv1 -> SiLU (a table) -> max_pool -> conv2 -> relu -> conv3 (stride 2) -> relu -> global mean ->
    flatten -> fc (matmul + bias): the logits."""
    g = Graph("k16")
    x = g.add_input("x", TensorType(SHAPE, DType.F32))
    c = _conv(g, rng, x, 3, 16, "conv1")
    y = g.add1(ew.mul, [c, g.add1(ew.sigmoid, [c], name="sig1")], name="silu1")
    y = g.add1(nn.max_pool, [y], kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0), dilations=(1, 1), name="pool")
    y = g.add1(ew.relu, [_conv(g, rng, y, 16, 16, "conv2")], name="relu2")
    y = g.add1(ew.relu, [_conv(g, rng, y, 16, 32, "conv3", 2)], name="relu3")
    y = g.add1(rd.reduce_mean, [y], axes=(2, 3), keepdims=True, name="gap")
    y = g.add1(sh.reshape, [y], shape=(2, 32), name="flat")
    y = g.add1(linalg.matmul, [y, g.const(rng.standard_normal((32, 10)).astype(np.float32), "fc_w")], name="fc")
    g.outputs = [g.add1(ew.add, [y, g.const(rng.standard_normal(10).astype(np.float32), "fc_b")], name="fc_bias")]
    return g


def _batches(rng, n: int = 4):
    return [[rng.standard_normal(SHAPE).astype(np.float32)] for _ in range(n)]


def _dtypes(g: Graph) -> dict[str, DType]:
    return {v.name: s.dtype for n in g.nodes for v in n.outputs if (s := spec_of(v)) is not None} | \
        {v.name: s.dtype for v in g.inputs if (s := spec_of(v)) is not None}


def test_named_layers_get_int16_grids_in_and_out(rng):
    g = _cnn(rng)
    stats = calibrate(g, _batches(rng))
    assert [n.name for n in keep_16bit_layers(g, ["first", "last"])] == ["conv1", "fc"]
    dt = _dtypes(annotate(g, stats, QuantConfig(keep_16bit=("first", "last"))))
    wide = {"x", "conv1", "gap", "flat", "fc", "fc_bias"}    # conv1's in / out; fc's input back through the flatten
    assert {k for k, d in dt.items() if d is DType.I16} == wide
    assert all(d in (DType.I8, DType.U8) for k, d in dt.items() if k not in wide)
    s = annotate(g, stats, QuantConfig(keep_16bit=("first",))).inputs[0].type.quant
    assert (s.dtype, s.zero_point, s.qmin, s.qmax) == (DType.I16, (0,), -32767, 32767)
    dt = _dtypes(annotate(g, stats, QuantConfig(keep_16bit=("conv3",))))
    assert {k for k, d in dt.items() if d is DType.I16} == {"relu2", "conv3", "relu3"}
    assert DType.I16 not in _dtypes(annotate(g, stats, QuantConfig())).values()


def test_integer_rewrite_is_integer_only_with_int16_contractions(rng):
    g, batches = _cnn(rng), _batches(rng)
    qg, _ = quantize_model(g, "int8", batches, integer_only=True, keep_16bit=["first", "last"])
    assert verify_integer_only(qg) == []
    ins = {n.name: n.inputs[0].type.dtype for n in qg.nodes if n.op in (quant.conv, quant.matmul)}
    assert ins == {"conv1_acc": DType.I16, "conv2_acc": DType.U8, "conv3_acc": DType.U8, "fc_acc": DType.I16}
    tables = [n for n in qg.nodes if n.op is quant.table]
    assert [t.inputs[0].type.dtype for t in tables] == [DType.I16] and tables[0].inputs[1].type.shape == (65536,)
    rq = {n.name: n.attrs for n in qg.nodes if n.op is quant.requant}
    assert rq["gap"]["dtype"] is DType.I16 and (rq["gap"]["qmin"], rq["gap"]["qmax"]) == (-32767, 32767)


def _chain(rng) -> Graph:
    g = Graph("chain")
    v = g.add_input("x", TensorType(SHAPE, DType.F32))
    for i, (ci, co) in enumerate(((3, 8), (8, 8), (8, 8)), 1):
        v = g.add1(ew.relu, [_conv(g, rng, v, ci, co, f"conv{i}")], name=f"relu{i}")
    g.outputs = [v]
    return g


def test_kept_layers_have_higher_sqnr(rng):
    g, batches = _chain(rng), _batches(rng)

    def sqnr(keep):
        qg, _ = quantize_model(g, "int8", batches, integer_only=True, keep_16bit=keep)
        return {r["node"]: r["sqnr_db"] for r in report(g, qg, batches)}
    base, wide = sqnr(()), sqnr(["first", "last"])
    assert wide["conv1_acc"] > base["conv1_acc"] + 3 and wide["conv3_acc"] > base["conv3_acc"]


def test_unknown_layer_name_is_invalid_input(rng):
    g = _cnn(rng)
    with pytest.raises(InvalidInput) as e:
        quantize_model(g, "int8", _batches(rng, 1), False, keep_16bit=["conv9"])
    msg = str(e.value)
    assert "--keep-16bit" in msg and "'conv9'" in msg and "first" in msg and "conv1" in msg and "fc" in msg
    with pytest.raises(InvalidInput, match="keep_16bit"):
        quantize_model(g, "mixed", _batches(rng, 1), False, size_budget=0.8, keep_16bit=["first"])


def test_a_kept_layer_whose_accumulator_can_overflow_is_refused(rng):
    """64 x 3 x 3 weights of one magnitude all quantize to +-127: sum |w| = 73152, times 32767 > 2^31 - 1
    (times 255 it fits: the 8-bit build compiles)."""
    g = Graph("big")
    x = g.add_input("x", TensorType((1, 64, 6, 6), DType.F32))
    w = np.where(rng.random((8, 64, 3, 3)) < 0.5, -0.1, 0.1).astype(np.float32)
    c = g.add1(linalg.conv, [x, g.const(w, "wide_w")], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1),
               name="wide")
    g.outputs = [g.add1(ew.relu, [c], name="act")]
    batches = [[rng.standard_normal((1, 64, 6, 6)).astype(np.float32)] for _ in range(2)]
    quantize_model(g, "int8", batches, integer_only=True)
    with pytest.raises(Unsupported, match=r"overflow[\s\S]*'wide_acc'"):
        quantize_model(g, "int8", batches, integer_only=True, keep_16bit=["wide"])


@requires_tvm
def test_tvm_runs_the_int16_layers_op_by_op_bit_exact(rng):
    import compiler
    from compiler.backends.tvm_fused import kernel_spec
    from compiler.ops import kernel
    g, batches = _cnn(rng), _batches(rng)
    cm = compiler.compile(g, "llvm -num-threads=1", quantize="int8", calibration=batches, integer_only=True,
                          keep_16bit=["first", "last"])
    fused = [n for n in cm.graph.nodes if n.op is kernel.fused and n.attrs["kernel"] in ("qconv", "qmatmul")]
    wide = [n for n in fused if n.inputs[0].type.dtype is DType.I16]
    assert len(wide) == 2 and all(kernel_spec(n) is None for n in wide)       # no VNNI kernel: inlined
    assert all(kernel_spec(n) is not None for n in fused if n not in wide)
    for x in (rng.standard_normal(SHAPE).astype(np.float32), 4 * rng.standard_normal(SHAPE).astype(np.float32)):
        np.testing.assert_array_equal(cm.run(x)[0], interp.run(cm.graph, x)[0])


@pytest.mark.slow
@pytest.mark.skipif(not has_module("iree.compiler"), reason="iree-base-compiler is not installed")
def test_mlir_takes_int16_operands_bit_exact(rng):
    import compiler
    g, batches = _cnn(rng), _batches(rng)
    cm = compiler.compile(g, "llvm", backend="mlir", quantize="int8", calibration=batches, integer_only=True,
                          keep_16bit=["first", "last"])
    x = rng.standard_normal(SHAPE).astype(np.float32)
    np.testing.assert_array_equal(cm.run(x)[0], interp.run(cm.graph, x)[0])


def test_cli_flag_checks_names(tmp_path):
    from tests.test_cli import DEMO, run_cli
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.random.default_rng(1).random((4, 1, 8, 8)).astype(np.float32))
    r = run_cli(DEMO, "--quantize", "int8", "--calibration", calib, "--keep-16bit", "first,nope", "--emit", "ir")
    assert r.returncode == 2 and "--keep-16bit" in r.stderr and "'nope'" in r.stderr \
        and "/features/features.0/Conv" in r.stderr
    r = run_cli(DEMO, "--keep-16bit", "first", "--emit", "ir")
    assert r.returncode == 2 and "--quantize int8" in r.stderr
