"""active_range: a value that only an activation reads gets a grid over where that activation changes.
What it narrows (hardswish below -3, ReLU below 0, hardsigmoid outside [-3, 3], SiLU far left), what it
leaves (a value read elsewhere too, an activation that is never flat), what makes it safe (clamping the
value to the narrowed range changes no exit's integer on its grid), and that an integer-only model gets
closer to float with it."""
from __future__ import annotations

import numpy as np
import pytest

from compiler import interp
from compiler.ir import Graph
from compiler.ops import elementwise as ew, linalg
from compiler.types import DType, TensorType
from passes import quantize as pq
from passes.active_range import active_ranges
from tests.passes.test_table_islands import ISLANDS

SHAPE = (1, 4, 6, 6)


def _model(act, bias: float = -4.0, seed: int = 0):
    """x -> conv (bias pulls it negative) -> v -> act -> y -> conv -> out."""
    rng = np.random.default_rng(seed)
    g = Graph()
    x = g.add_input("x", TensorType(SHAPE, DType.F32))
    w1 = g.const((rng.standard_normal((8, 4, 3, 3)) * 0.5).astype(np.float32), "w1")
    v = g.add1(linalg.conv, [x, w1, g.const(np.full(8, bias, np.float32), "b1")], strides=(1, 1),
               pads=(1, 1, 1, 1), dilations=(1, 1), groups=1)
    y = act(g, v)
    w2 = g.const((rng.standard_normal((4, 8, 1, 1)) * 0.3).astype(np.float32), "w2")
    g.outputs = [g.add1(linalg.conv, [y, w2], strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), groups=1)]
    return g, v, y


def _batches(n: int = 4, seed: int = 1):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(SHAPE).astype(np.float32) * 2] for _ in range(n)]


def _grid(stats, names):
    def grid(w):
        if w.name not in names:
            return None
        spec = pq.activation_spec(stats[w.name], pq.QuantConfig(), w.name)
        return spec.scale[0], spec.zero_point[0], spec.qmin, spec.qmax
    return grid


def _narrowed(g, v, y):
    stats = pq.calibrate(g, _batches())
    names = (v.name, y.name)
    return active_ranges(g, stats, lambda w: w.name in names, _grid(stats, names)).get(v.name), stats


def test_hardswish_input_starts_near_minus_three():
    g, v, y = _model(ISLANDS["hardswish"])
    found, stats = _narrowed(g, v, y)
    lo, hi = stats[v.name].lo, stats[v.name].hi
    assert lo < -6 and found is not None
    step = (hi - found[0]) / 255
    assert -3.0 - 2 * step <= found[0] <= -3.0           # the flat part, one step of the new grid below -3
    assert found[1] == hi


@pytest.mark.parametrize("name,flat_below,flat_above", [("relu", 0.0, None), ("hardsigmoid", -3.0, 3.0)])
def test_piecewise_linear_activations_drop_their_flat_parts(name, flat_below, flat_above):
    act = (lambda g, x: g.add1(ew.relu, [x])) if name == "relu" else ISLANDS[name]
    g, v, y = _model(act, bias=-1.0)
    found, stats = _narrowed(g, v, y)
    assert found is not None
    step = (found[1] - found[0]) / 255
    assert flat_below - 2 * step <= found[0] <= flat_below
    if flat_above is not None and stats[v.name].hi > flat_above:
        assert flat_above <= found[1] <= flat_above + 2 * step


@pytest.mark.parametrize("name", sorted(ISLANDS))
def test_clamping_to_the_narrowed_range_changes_no_exit_integer(name):
    g, v, y = _model(ISLANDS[name])
    found, stats = _narrowed(g, v, y)
    if found is None:
        return
    lo, hi = stats[v.name].lo, stats[v.name].hi
    sub = Graph()
    xin = sub.add_input("v", TensorType((4097,), DType.F32))
    sub.outputs = [ISLANDS[name](sub, xin)]
    scale, zp, qmin, qmax = _grid(stats, (y.name,))(y)
    xs = np.linspace(lo, hi, 4097).astype(np.float32)

    def ints(a):
        return np.clip(np.rint(interp.run(sub, a)[0] / scale) + zp, qmin, qmax)
    np.testing.assert_array_equal(ints(xs), ints(np.clip(xs, *found).astype(np.float32)))


def test_a_value_read_outside_the_activation_keeps_its_range():
    def act_and_residual(g, x):             # y = hardswish(v) + v: v is read by the add too
        return g.add1(ew.add, [g.add1(ew.hard_swish, [x]), x])
    g, v, y = _model(act_and_residual)
    stats = pq.calibrate(g, _batches())
    names = (v.name, y.name, y.producer.inputs[0].name)
    assert v.name not in active_ranges(g, stats, lambda w: w.name in names, _grid(stats, names))


def test_an_activation_that_is_never_flat_narrows_nothing():
    g, v, y = _model(lambda g, x: g.add1(ew.leaky_relu, [x], alpha=0.1))
    found, _ = _narrowed(g, v, y)
    assert found is None


def test_integer_only_hardswish_model_is_closer_to_float_with_it(monkeypatch):
    """conv -> hardswish -> conv, the conv's output reaching -10: quantized integer-only, the narrowed grid of
    the conv's output (about 2x finer) brings the output closer to float."""
    import compiler
    g, v, _ = _model(ISLANDS["hardswish"], bias=-4.0, seed=3)
    calib = _batches(8, seed=4)

    def error() -> float:                   # RMS over the calibration inputs (no range overshoot)
        cm = compiler.compile(g, target="llvm -num-threads=1", quantize="int8", calibration=calib,
                              integer_only=True, backend="tvm")
        return float(np.sqrt(np.mean([((cm.run(x[0])[0] - interp.run(g, x[0])[0]) ** 2).mean() for x in calib])))
    with_it = error()
    monkeypatch.setattr(pq, "active_ranges", lambda *a, **k: {})
    without = error()
    assert with_it < 0.85 * without
