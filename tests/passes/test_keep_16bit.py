"""--keep-16bit / QuantConfig.keep_16bit: named conv / matmul layers keep int16 input and output activations,
integer-only (int16 x int8 -> int32, q.requant into int16, 65536-entry tables); a value a kept layer's long
reduction reads takes fewer int16 levels so that range analysis proves its int32 accumulator; TVM runs the int16
convs and matmuls on the VNNI kernels' vpdpwssd forms, bit-exact with the interpreter; --keep-16bit auto searches
the layers for a budget."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import interp
from compiler.api import quantize_model
from compiler.diagnostics import InvalidInput
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
    layers = [n.name for n in keep_16bit_layers(g, ["first:99"])]
    assert layers[:2] == ["conv1", "conv2"] and layers[-1] == "fc" and len(layers) >= 4
    assert [n.name for n in keep_16bit_layers(g, ["first:2"])] == layers[:2]
    assert [n.name for n in keep_16bit_layers(g, ["last:2", "fc"])] == layers[-2:]
    assert [n.name for n in keep_16bit_layers(g, ["all"])] == layers
    for bad in ("first:0", "first:x", "last:", "middle:2", "all:2"):
        with pytest.raises(InvalidInput, match="first:N"):
            keep_16bit_layers(g, [bad])
    dt = _dtypes(annotate(g, stats, QuantConfig(keep_16bit=("first", "last"))))
    # conv1's in / out and its SiLU's result (a function of conv1's output alone), which the max pool passes on;
    # fc's input back through the flatten
    wide = {"x", "conv1", "silu1", "pool", "gap", "flat", "fc", "fc_bias"}
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
    assert ins == {"conv1_acc": DType.I16, "conv2_acc": DType.I16, "conv3_acc": DType.U8, "fc_acc": DType.I16}
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


def test_a_kept_layer_with_a_long_reduction_reads_fewer_int16_levels(rng):
    """64 x 3 x 3 weights of one magnitude all quantize to +-127: sum |w| = 73152, and 32767 x 73152 > 2^31 - 1.
    The kept layer's input then takes 2^30 // 73152 = 14678 levels (half of int32 left to the bias), and range
    analysis proves the accumulator."""
    from passes.range_analysis import check_ranges
    g = Graph("big")
    x = g.add_input("x", TensorType((1, 64, 6, 6), DType.F32))
    w = np.where(rng.random((8, 64, 3, 3)) < 0.5, -0.1, 0.1).astype(np.float32)
    c = g.add1(linalg.conv, [x, g.const(w, "wide_w")], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1),
               name="wide")
    g.outputs = [g.add1(ew.relu, [c], name="act")]
    batches = [[rng.standard_normal((1, 64, 6, 6)).astype(np.float32)] for _ in range(2)]
    qg, _ = quantize_model(g, "int8", batches, integer_only=True, keep_16bit=["wide"])
    (conv,) = [n for n in qg.nodes if n.op is quant.conv]
    s = spec_of(conv.inputs[0])
    assert (s.dtype, s.qmin, s.qmax) == (DType.I16, -14678, 14678) and check_ranges(qg) == []
    s = spec_of(qg.outputs[0].producer.inputs[0]) if qg.outputs[0].producer.op is quant.dequantize else None
    assert s is None or s.qmax == 32767          # the output: no contraction reads it, all the levels


def test_a_layer_reading_half_of_a_kept_layers_output_bounds_its_levels(rng):
    """YOLO's C2f: a kept 1x1 conv's output is split in two, one half read by a long 3x3 conv that is not kept and
    by a concat. That half is int16 because its source is; its grid (the source's) takes the levels the 3x3 conv's
    accumulator allows, so range analysis proves it (it reported a possible overflow before)."""
    from passes.range_analysis import check_ranges
    g = Graph("c2f")
    x = g.add_input("x", TensorType((1, 16, 6, 6), DType.F32))
    w1 = (0.2 * rng.standard_normal((128, 16, 1, 1))).astype(np.float32)
    cv1 = g.add1(linalg.conv, [x, g.const(w1, "cv1_w")], strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                 name="cv1")
    halves = [g.add1(sh.slice_, [cv1], starts=(k * 64,), ends=((k + 1) * 64,), axes=(1,), steps=(1,),
                     name=f"half{k}") for k in range(2)]
    w2 = np.where(rng.random((8, 64, 3, 3)) < 0.5, -0.1, 0.1).astype(np.float32)
    m = g.add1(linalg.conv, [halves[1], g.const(w2, "m_w")], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1),
               name="m")
    g.outputs = [g.add1(sh.concat, [halves[0], halves[1], m], axis=1, name="cat")]
    batches = [[rng.standard_normal((1, 16, 6, 6)).astype(np.float32)] for _ in range(2)]
    qg, _ = quantize_model(g, "int8", batches, integer_only=True, keep_16bit=["cv1"])
    (conv,) = [n for n in qg.nodes if n.op is quant.conv and n.name.startswith("m")]
    s = spec_of(conv.inputs[0])
    assert s.dtype is DType.I16 and s.qmax == 2**30 // (64 * 9 * 127) and check_ranges(qg) == []


@requires_tvm
def test_tvm_runs_the_int16_layers_on_the_vpdpwssd_kernels_bit_exact(rng):
    """The int16-input convs and the int16 matmul run the VNNI kernels' int16 forms (vpdpwssd; a conv the AMX
    kernel takes runs there on a host with AMX); the SiLU's 65536-entry table is fused into conv1's write-back;
    all bit-exact with the interpreter."""
    import re

    import compiler
    from compiler.backends.tvm_fused import kernel_spec
    from compiler.ops import kernel
    g, batches = _cnn(rng), _batches(rng)
    cm = compiler.compile(g, "llvm -num-threads=1", quantize="int8", calibration=batches, integer_only=True,
                          keep_16bit=["first", "last"])
    fused = [n for n in cm.graph.nodes if n.op is kernel.fused and n.attrs["kernel"] in ("qconv", "qmatmul")]
    wide = {n.name: n for n in fused if n.inputs[0].type.dtype is DType.I16}
    assert sorted(wide) == ["conv1_acc", "conv2_acc", "fc_acc"]
    assert kernel_spec(wide["conv1_acc"]).x_dtype == "int16" and kernel_spec(wide["fc_acc"]).a_dtype == "int16"
    assert all(kernel_spec(n) is not None for n in fused)
    calls = re.findall(r"call_tir\(cls\.([a-z_0-9]+?)_\d+,", cm.executable.source("relax"))
    convs = calls.count("qconv2d_vnni16") + calls.count("qconv2d_amx")
    assert convs == 2 and calls.count("qmatmul_vnni16") == 1 and "table" not in calls
    assert "vpdpwssd" in cm.executable.source("asm")
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


def test_auto_keeps_the_fewest_layers_that_meet_the_budget(rng):
    """--keep-16bit auto:BUDGET (the worst sample's cosine): nothing kept when 8 bits meet it; else the smallest
    measured number of layers (in the measured gain order) that meets it, every smaller measured number missing it; those layers are the
    int16 ones of the graph the compile returns."""
    from passes.mixed_precision import InfeasibleBudget
    g, batches = _cnn(rng), _batches(rng)
    _, rep = quantize_model(g, "int8", batches, integer_only=True, keep_16bit=["auto:cos0.5"])
    s = rep.keep_16bit
    assert s.layers == () and s.trials == [(0, s.measured)] and s.measured < 1
    from passes.keep_16bit_search import worst_sample_cosine
    from passes.quantize import batch_args
    from passes.sensitivity import float_outputs
    wide_all, _ = quantize_model(g, "int8", batches, integer_only=True, keep_16bit=list(s.order))
    c16 = worst_sample_cosine(float_outputs(g, batches),
                              [interp.run(wide_all, *batch_args(wide_all, b)) for b in batches])
    assert c16 > s.measured
    budget = (s.measured + c16) / 2
    qg, rep = quantize_model(g, "int8", batches, integer_only=True, keep_16bit=[f"auto:cos{budget:.9f}"])
    s = rep.keep_16bit
    assert 0 < len(s.layers) <= len(s.order) == 4 and s.measured >= budget - 1e-6
    assert s.layers == s.order[:len(s.layers)] and not s.overflowing
    assert all(m < budget for k, m in s.trials if k < len(s.layers))
    assert any(k == len(s.layers) - 1 for k, _ in s.trials)           # the bisection measured one fewer
    wide = {n.name for n in qg.nodes if n.op in (quant.conv, quant.matmul) and n.inputs[0].type.dtype is DType.I16}
    assert {x + "_acc" for x in s.layers} <= wide
    assert "layers at 16 bits" in str(s)
    with pytest.raises(InfeasibleBudget, match=r"cos1 is out of reach[\s\S]*every candidate layer \(4\)"):
        quantize_model(g, "int8", batches, integer_only=True, keep_16bit=["auto:cos1"])


def test_auto_takes_no_names_and_a_valid_budget(rng):
    g, batches = _cnn(rng), _batches(rng, 1)
    with pytest.raises(InvalidInput, match="takes no names"):
        quantize_model(g, "int8", batches, integer_only=True, keep_16bit=["auto", "conv1"])
    with pytest.raises(InvalidInput, match="--keep-16bit auto"):
        quantize_model(g, "int8", batches, integer_only=True, keep_16bit=["auto:cosine2"])
    with pytest.raises(InvalidInput, match="labels"):
        quantize_model(g, "int8", batches, integer_only=True, keep_16bit=["auto:0.5pt"])
    _, rep = quantize_model(g, "int8", batches, integer_only=True, keep_16bit="auto:cos0.5")     # a string, as the CLI's
    assert rep.keep_16bit.layers == ()


def test_worst_sample_cosine_is_the_smallest_row():
    from passes.keep_16bit_search import worst_sample_cosine
    ref = [[np.array([[1.0, 0.0], [1.0, 1.0]])], [np.array([[0.0, 2.0]])]]
    got = [[np.array([[1.0, 0.0], [1.0, 0.0]])], [np.array([[0.0, 3.0]])]]
    assert worst_sample_cosine(ref, got) == pytest.approx(np.sqrt(0.5))
    assert worst_sample_cosine(ref, ref) == pytest.approx(1.0)


def _max_abs_error(ref, got) -> float:
    return float(max(np.abs(np.asarray(r) - np.asarray(o)).max() for r, o in zip(ref, got)))


def test_auto_meets_a_metric_budget_the_user_defines(rng):
    """--keep-16bit auto:metricM bounds the user's own loss (here the largest absolute output error) on every
    calibration batch: the chosen graph, run by the interpreter, is within M on each batch; every smaller measured
    number of layers is over it."""
    from passes.quantize import batch_args
    from passes.sensitivity import float_outputs
    g, batches = _cnn(rng), _batches(rng)
    ref = float_outputs(g, batches)

    def worst(qg) -> float:
        return max(_max_abs_error(r, interp.run(qg, *batch_args(qg, b))) for r, b in zip(ref, batches))

    all8, _ = quantize_model(g, "int8", batches, integer_only=True)
    wide, _ = quantize_model(g, "int8", batches, integer_only=True, keep_16bit=["conv1", "conv2", "conv3", "fc"])
    lo, hi = worst(wide), worst(all8)
    assert lo < hi
    budget = (lo + hi) / 2
    qg, rep = quantize_model(g, "int8", batches, integer_only=True, keep_16bit=[f"auto:metric{budget:.9g}"],
                             accuracy_metric=_max_abs_error)
    s = rep.keep_16bit
    assert 0 < len(s.layers) <= 4 and s.measured <= budget
    assert worst(qg) == pytest.approx(s.measured) and worst(qg) <= budget
    assert all(m > budget for k, m in s.trials if k < len(s.layers))
    assert "_max_abs_error" in str(s)


def test_a_metric_budget_needs_a_working_metric(rng):
    g, batches = _cnn(rng), _batches(rng, 1)
    with pytest.raises(InvalidInput, match="accuracy_metric="):
        quantize_model(g, "int8", batches, integer_only=True, keep_16bit=["auto:metric0.1"])

    def broken(ref, got):
        return ref[7]

    with pytest.raises(InvalidInput, match="accuracy metric broken raised IndexError"):
        quantize_model(g, "int8", batches, integer_only=True, keep_16bit=["auto:metric0.1"], accuracy_metric=broken)
    with pytest.raises(InvalidInput, match="returned nan"):
        quantize_model(g, "int8", batches, integer_only=True, keep_16bit=["auto:metric0.1"],
                       accuracy_metric=lambda ref, got: float("nan"))


def test_cli_loads_the_metric_from_a_file(tmp_path, capsys):
    """--accuracy-metric FILE.py:FUNCTION: a missing file, a missing function, or no metricM budget to use it (a
    layer named like one is not a budget) exit 2 naming what is wrong."""
    from compiler.cli import main
    from tests.test_cli import DEMO
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.random.default_rng(1).random((2, 1, 8, 8)).astype(np.float32))
    metric = tmp_path / "metric.py"
    metric.write_text("import numpy as np\n\ndef err(ref, got):\n    return float(np.abs(ref[0] - got[0]).max())\n")
    base = [str(DEMO), "--quantize", "int8", "--integer-only", "--calibration", str(calib)]
    for flags, want in [(["--keep-16bit", "auto:metric1e9", "--accuracy-metric", f"{tmp_path}/nope.py:err"],
                         "nope.py: no such file"),
                        (["--keep-16bit", "auto:metric1e9", "--accuracy-metric", f"{metric}:other"],
                         "has no function other"),
                        (["--keep-16bit", "auto:metric1e9", "--accuracy-metric", str(metric)], "FILE.py:FUNCTION"),
                        (["--keep-16bit", "auto:metric1e9"], "--accuracy-metric FILE.py:FUNCTION"),
                        (["--keep-16bit", "auto", "--accuracy-metric", f"{metric}:err"], "metricM budget"),
                        (["--keep-16bit", "metric_conv", "--accuracy-metric", f"{metric}:err"], "metricM budget")]:
        assert main([*base, *flags, "--emit", "ir"]) == 2
        err = capsys.readouterr().err
        assert want in err and "Traceback" not in err, (flags, err)


@pytest.mark.slow
@requires_tvm
def test_cli_compiles_with_a_metric_budget(tmp_path, capsys):
    """A working --accuracy-metric drives --keep-16bit auto:metricM."""
    from compiler.cli import main
    from tests.test_cli import DEMO
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.random.default_rng(1).random((2, 1, 8, 8)).astype(np.float32))
    metric = tmp_path / "metric.py"
    metric.write_text("import numpy as np\n\ndef err(ref, got):\n    return float(np.abs(ref[0] - got[0]).max())\n")
    base = [str(DEMO), "--quantize", "int8", "--integer-only", "--calibration", str(calib)]
    assert main([*base, "--keep-16bit", "auto:metric1e9", "--accuracy-metric", f"{metric}:err",
                 "-o", str(tmp_path / "m.dyc")]) == 0
    assert "--keep-16bit auto (metric1e+09): 0 of" in capsys.readouterr().err
