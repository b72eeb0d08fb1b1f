"""Calibration data: .npz files and iterables, checked against the model's inputs."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.calibration import batches_for, load_npz
from compiler.diagnostics import InvalidInput
from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.types import DType, TensorType


def _graph():
    g = Graph()
    a = g.add_input("a", TensorType((1, 3), DType.F32))
    b = g.add_input("b", TensorType((1, 3), DType.F32))
    g.outputs = [g.add1(ew.add, [a, b])]
    return g


def test_npz_by_name_gives_positional_batches(tmp_path):
    p = tmp_path / "c.npz"
    np.savez(p, b=np.ones((4, 1, 3), np.float32), a=np.zeros((4, 1, 3), np.float64))
    batches = load_npz(p, _graph())
    assert len(batches) == 4 and [x.shape for x in batches[0]] == [(1, 3), (1, 3)]
    assert batches[0][0].dtype == np.float32 and batches[0][1][0, 0] == 1


def test_npz_samples_stacked_on_the_batch_axis(tmp_path):
    p = tmp_path / "s.npz"
    np.savez(p, a=np.zeros((6, 3), np.float32), b=np.ones((6, 3), np.float32))
    assert len(load_npz(p, _graph())) == 6


def test_npz_errors_name_the_problem(tmp_path):
    with pytest.raises(InvalidInput, match="calibration file not found"):
        load_npz(tmp_path / "none.npz", _graph())
    p = tmp_path / "w.npz"
    np.savez(p, a=np.zeros((4, 1, 5)), b=np.zeros((4, 1, 3)))
    with pytest.raises(InvalidInput, match=r"'a' has shape \[4, 1, 5\]; expected \(N, 1, 3\)"):
        load_npz(p, _graph())
    np.savez(p, x=np.zeros((4, 1, 3)))
    with pytest.raises(InvalidInput, match="the model's inputs are \\['a', 'b'\\]"):
        load_npz(p, _graph())
    (tmp_path / "junk.npz").write_bytes(b"nope")
    with pytest.raises(InvalidInput, match="not a readable .npz"):
        load_npz(tmp_path / "junk.npz", _graph())


def test_iterables_of_tuples_and_dicts():
    g = _graph()
    x = np.zeros((1, 3), np.float32)
    assert len(batches_for([(x, x), {"a": x, "b": x}], g)) == 2
    with pytest.raises(InvalidInput, match="calibration batch 0 has shapes"):
        batches_for([(x,)], g)
    with pytest.raises(InvalidInput, match="needs calibration data"):
        batches_for(None, g)
    with pytest.raises(InvalidInput, match="empty"):
        batches_for([], g)
