"""activation_forms: each gelu form's error is measured on the grids, and the choice is the cheapest form within
the tolerance of the most accurate one."""
from __future__ import annotations

import numpy as np

from compiler import interp
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import quant
from compiler.types import DType, TensorType
from passes import activation_forms as forms
from passes.ivit import rewrite_islands
from passes.table_islands import table_islands
from passes.verify_integer_only import verify_integer_only

I8 = DType.I8


def _gelu(real: np.ndarray) -> np.ndarray:
    return ew.gelu.reference([real], {"approximate": "none"})[0]


def test_table8_error_is_the_input_grids_rounding_then_the_output_grids():
    x = forms.Grid(0.05, 0, -128, 127)
    y = forms.Grid(0.04, 0, -128, 127)
    (t8,) = forms.gelu_forms(x, y, None, None)
    real = np.linspace(-128 * 0.05, 127 * 0.05, forms.POINTS)
    table = np.clip(np.round(_gelu(np.round(real / 0.05) * 0.05) / 0.04), -128, 127) * 0.04
    assert t8.name == "table8" and np.isclose(t8.rms, np.sqrt(np.mean((table - _gelu(real)) ** 2)))


def test_a_coarse_input_grid_makes_shiftgelu_the_more_accurate_form():
    y = forms.Grid(0.002, 0, -128, 127)                 # a fine output grid: the input's rounding shows
    fine, coarse = forms.Grid(0.002, 0, -128, 127), forms.Grid(0.1, 0, -128, 127)
    shift = (0.002 / 64, 23, 15, 62)
    t_fine, s_fine = forms.gelu_forms(fine, y, shift, None)
    t_coarse, s_coarse = forms.gelu_forms(coarse, forms.Grid(0.05, 0, -128, 127), (0.1 / 64, 17, 15, 62), None)
    assert t_fine.rms < s_fine.rms                      # exact function, fine grid: the table is closer
    assert s_coarse.rms < t_coarse.rms                  # coarse input grid: ShiftGELU on int16 is closer


def test_choose_takes_the_cheapest_form_within_the_tolerance():
    a, b = forms.Form("table8", 0.010, 0.6), forms.Form("shift16", 0.0095, 0.9)
    assert forms.choose([a, b]).name == "table8"        # 5% less accurate, cheaper
    worse = forms.Form("table8", 0.020, 0.1)
    assert forms.choose([worse, b]).name == "shift16"   # twice the error: not taken at any price
    unmeasured = forms.Form("table8", 0.010, None)
    assert forms.choose([unmeasured, b]).name == "shift16"   # no cost: the most accurate


def _mlp_gelu() -> Graph:
    """quantize -> dequantize -> gelu -> quantize -> dequantize, on BERT-like grids."""
    g = Graph()
    x = g.add_input("x", TensorType((4, 64), DType.F32))
    xq = g.add1(quant.quantize, [x], scale=0.04, zero_point=0, dtype=I8, qmin=-128, qmax=127)
    y = g.add1(ew.gelu, [g.add1(quant.dequantize, [xq], scale=(0.04,), zero_point=(0,))], approximate="none")
    yq = g.add1(quant.quantize, [y], scale=0.03, zero_point=0, dtype=I8, qmin=-128, qmax=127)
    g.outputs = [g.add1(quant.dequantize, [yq], scale=(0.03,), zero_point=(0,))]
    return g


def test_the_chosen_table_form_becomes_one_256_entry_table_and_keeps_the_values():
    g = _mlp_gelu()
    chosen = []

    def table(fs):
        chosen.append([f.name for f in fs])
        return next(f for f in fs if f.name == "table8")
    h = table_islands(rewrite_islands(g, choose_form=table))
    assert chosen == [["table8", "shift16"]]
    hist = h.op_histogram()
    assert hist.get("q.table") == 1 and "q.shiftgelu" not in hist and verify_integer_only(h) == []
    assert h.nodes[[n.op.name for n in h.nodes].index("q.table")].inputs[1].type.shape == (256,)
    x = np.random.default_rng(0).uniform(-5, 5, (4, 64)).astype(np.float32)
    np.testing.assert_array_equal(interp.run(h, x)[0], interp.run(g, x)[0])   # exact: the float island's values
    shift = table_islands(rewrite_islands(g, choose_form=None))
    assert "q.shiftgelu" in shift.op_histogram()


def test_the_default_choice_on_bert_like_grids_is_the_exact_table():
    (t8, s16) = forms.gelu_forms(forms.Grid(0.04, 0, -128, 127), forms.Grid(0.03, 0, -128, 127),
                                 (0.04 / 32, 23, 15, 62), forms.measured_costs())
    assert t8.rms < s16.rms                             # ShiftGELU approximates erf-GELU by x sigmoid(1.702 x)
    assert forms.choose([t8, s16]).name == "table8"
