"""quant_report: the SQNR a layer loses over its inputs names the layer where accuracy goes, not the
deepest layer (whose SQNR is low only because the errors before it add up)."""
from __future__ import annotations

import math

import numpy as np

from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import linalg
from compiler.types import DType, TensorType
from passes.quant_report import format_report, report, worst_layers
from passes.quantize import QuantConfig
from passes.quantize_pipeline import quantize_graph


def _chain(rng: np.random.Generator) -> Graph:
    """conv1 -> relu -> conv2 -> relu -> conv3. conv2's channel 0 is 1000x the others and conv3 reads
    only the others: one 8-bit grid must span channel 0, so the small channels conv3 depends on are
    crushed to a few levels there. conv3 is where the loss shows."""
    g = Graph()
    x = g.add_input("x", TensorType((1, 4, 8, 8), DType.F32))
    v = x
    for i in (1, 2, 3):
        w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3
        if i == 2:
            w[0] *= 1000.0
        if i == 3:
            w[:, 0] = 0.0
        c = g.add1(linalg.conv, [v, g.const(w, f"w{i}"), g.const(np.zeros(4, np.float32), f"b{i}")],
                   strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), name=f"conv{i}")
        v = g.add1(ew.relu, [c], name=f"relu{i}") if i < 3 else c
    g.outputs = [v]
    return g


def test_report_names_the_layer_that_loses_sqnr(rng):
    g = _chain(rng)
    batches = [[rng.standard_normal((1, 4, 8, 8)).astype(np.float32)] for _ in range(4)]
    ig, _ = quantize_graph(g, batches, QuantConfig(integer_only=True))
    rows = report(g, ig, batches)
    assert [r["layer"] for r in rows] == ["relu1", "relu2", "conv3"]     # the values each layer's grid is for
    first, second, third = rows
    assert first["upstream"] == [] and first["sqnr_lost_db"] is None
    assert second["upstream"] == ["relu1"] and third["upstream"] == ["relu2"]
    assert math.isclose(second["sqnr_lost_db"], first["sqnr_db"] - second["sqnr_db"])
    assert math.isclose(third["sqnr_lost_db"], second["sqnr_db"] - third["sqnr_db"])
    # conv2's own SQNR is high (channel 0 dominates its power); conv3, reading the crushed channels, is not
    assert second["sqnr_db"] > 30 and third["sqnr_lost_db"] > 15
    assert worst_layers(rows, 1) == [third]
    text = format_report(rows)
    assert "lost dB" in text and f"most SQNR lost: {third['layer']}" in text

