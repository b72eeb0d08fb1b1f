"""The runtime loader's own timings (compiler/backends/tvm_runtime.py), what gpu_check reports on a GPU:
`time_resident` (inputs staged once, outputs left on the device) and `profile` (every VM call timed by a
VM instrument). Here on the CPU, through the runtime loader alone (DYC_RUNTIME_ONLY=1)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")

import compiler  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import elementwise as ew, linalg  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402


@pytest.fixture
def loaded(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    g = Graph()
    x = g.add_input("x", TensorType((1, 4, 12, 12), DType.F32))
    w = g.const(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), "w")
    y = g.add1(ew.relu, [g.add1(linalg.conv, [x, w], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), groups=1)])
    g.outputs = [g.add1(ew.tanh, [y])]
    compiler.compile(g, target="llvm -num-threads=1").save(tmp_path / "m.dyc")
    monkeypatch.setenv("DYC_RUNTIME_ONLY", "1")
    m = compiler.load(tmp_path / "m.dyc")
    assert type(m.executable).__name__ == "RuntimeExecutable"
    return m, rng.standard_normal((1, 4, 12, 12)).astype(np.float32)


def test_time_resident_times_the_staged_call(loaded):
    m, x = loaded
    ms = m.executable.time_resident([x], warmup=1, repeat=5)
    assert 0 < ms < 1000
    np.testing.assert_array_equal(m.run(x)[0], m.run(x)[0])       # the staging left run() intact


def test_profile_names_every_kernel_once_per_run(loaded):
    m, x = loaded
    rows = m.executable.profile([x], runs=3)
    kernels = [(name, calls) for name, calls, ms in rows if not name.startswith("vm.builtin")]
    assert kernels and all(calls >= 1 for _, calls in kernels)
    assert all(ms >= 0 for _, _, ms in rows) and rows == sorted(rows, key=lambda r: -r[2])
