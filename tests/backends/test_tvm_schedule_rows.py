"""The fallback CPU schedule of injective PrimFuncs whose axes pick a branch or a gathered index
(compiler/backends/tvm_lower/schedule.py::_schedule_rows): a concat of blocked tensors along the channel
blocks (with a requant fused into it) and a nearest upsample keep their loop nest, vectorize the
innermost axis alone and stay bit-exact with the interpreter."""
from __future__ import annotations

import re

import numpy as np
import pytest

from compiler import interp
from compiler.ir import Graph
from compiler.ops import quant as q
from compiler.ops import shape as sh
from compiler.types import DType, TensorType

pytest.importorskip("tvm")

TARGET = "llvm -num-threads=1"


def _vector_widths(tir: str, name: str) -> list[int]:
    """The vectorized loop extents of PrimFunc `name` in the optimized TIR text."""
    body = tir[tir.index(f"def {name}("):]
    body = body[:body.find("@T.prim_func", 1)] if "@T.prim_func" in body[1:] else body
    return [int(w) for w in re.findall(r"T\.vectorized\(T\.int64\((\d+)\)\)", body)]


def _blocked_graph() -> Graph:
    """concat(requant(a), b, upsample(c)) along the channel blocks of (1, C/16, H, W, 16) uint8 tensors."""
    g = Graph()
    a = g.add_input("a", TensorType((1, 2, 10, 10, 16), DType.U8))
    b = g.add_input("b", TensorType((1, 1, 10, 10, 16), DType.U8))
    c = g.add_input("c", TensorType((1, 3, 5, 5, 16), DType.U8))
    ra = g.add1(q.requant, [a], multiplier=[1504356608], shift=[31], zero_point=4, in_zero_point=3,
                qmin=0, qmax=255, dtype=DType.U8, axis=1)
    up = g.add1(sh.resize, [c], sizes=(1, 3, 10, 10, 16), scales=(1.0, 1.0, 2.0, 2.0, 1.0), mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    g.outputs = [g.add1(sh.concat, [ra, b, up], axis=1), up]
    return g


def test_blocked_concat_and_upsample_vectorize_the_channel_block_and_are_bit_exact():
    import compiler
    cm = compiler.compile(_blocked_graph(), target=TARGET)
    tir = cm.executable.source("tir")
    names = re.findall(r"def ((?:fused_\w*)?(?:concatenate|resize_nearest)\w*)\(", tir)
    assert names, "no op-by-op concat / resize left to schedule"
    for name in names:
        assert _vector_widths(tir, name) == [16], name      # the channel block, not the flat index
    rng = np.random.default_rng(0)
    for _ in range(3):
        xs = [rng.integers(0, 256, s).astype(np.uint8) for s in ((1, 2, 10, 10, 16), (1, 1, 10, 10, 16),
                                                                 (1, 3, 5, 5, 16))]
        for got, want in zip(cm.run(*xs), interp.run(cm.graph or _blocked_graph(), *xs)):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("w", [7, 24])
def test_plain_concat_along_channels_is_bit_exact(w):
    """NCHW int8 along axis 1 with an innermost extent no vector width divides (7: left to the flat
    schedule) and one it does (24: 8 lanes)."""
    import compiler
    g = Graph()
    x = g.add_input("x", TensorType((1, 3, 5, w), DType.I8))
    y = g.add_input("y", TensorType((1, 2, 5, w), DType.I8))
    g.outputs = [g.add1(sh.concat, [x, y], axis=1)]
    cm = compiler.compile(g, target=TARGET)
    rng = np.random.default_rng(w)
    xs = [rng.integers(-128, 128, (1, c, 5, w)).astype(np.int8) for c in (3, 2)]
    np.testing.assert_array_equal(cm.run(*xs)[0], interp.run(g, *xs)[0])


def test_lane_bound_finds_branch_and_gather_axes():
    """A branch on i and a read through a table indexed by j: both axes stay out of the lanes."""
    from tvm import s_tir, te, tirx

    from compiler.backends.tvm_lower.schedule import _lane_bound
    a = te.placeholder((4, 8), "uint8", "a")
    idx = te.placeholder((8,), "int32", "idx")
    out = te.compute((4, 8), lambda i, j: tirx.if_then_else(i < 2, a[i, idx[j]], a[i, 0]), name="out")
    sch = s_tir.Schedule(te.create_prim_func([a, idx, out]))
    blk = sch.get(sch.get_sblock("out"))
    assert _lane_bound(blk.body) == {v.var for v in blk.iter_vars}
    plain = te.compute((4, 8), lambda i, j: a[i, j] + a[3 - i, 7 - j], name="plain")
    sch = s_tir.Schedule(te.create_prim_func([a, plain]))
    assert not _lane_bound(sch.get(sch.get_sblock("plain")).body)
