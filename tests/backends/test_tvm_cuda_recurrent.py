"""rnn / gru / lstm on cuda through TVM (compiler/backends/tvm_kernels/cuda_recurrent.py): one kernel per
direction, a block per batch entry, the state in shared memory.

Its arithmetic is checked without a GPU: the same TVMScript built with serial loops and global buffers runs on the
CPU (tvm_cuda.build_for_cpu) against the interpreter; the cuda build must be that kernel with its barriers inside
the step loop (TVM refuses a barrier under a condition, so the loop's extent is the entry's length), and ptxas must
assemble it."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from compiler import interp  # noqa: E402
from compiler.backends import tvm_cuda  # noqa: E402
from compiler.backends.tvm import BACKEND  # noqa: E402
from compiler.ops import recurrent  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType  # noqa: E402
from tests.backends.recurrent_graphs import recurrent_graph  # noqa: E402
from tests.ptxas import assemble  # noqa: E402

TARGET = Target.parse("cuda -arch=sm_90")


@pytest.mark.parametrize("op,direction,attrs", [
    (recurrent.lstm, "bidirectional", {}),
    (recurrent.lstm, "reverse", {"clip": 0.4, "input_forget": True}),
    (recurrent.lstm, "forward", {"peepholes": False, "activations": "hardsigmoid,elu,softsign",
                                 "activation_alpha": (0.3, 0.5), "activation_beta": (0.4,)}),
    (recurrent.gru, "bidirectional", {}),
    (recurrent.gru, "forward", {"linear_before_reset": True}),
    (recurrent.gru, "reverse", {"activations": "sigmoid,relu"}),
    (recurrent.rnn, "bidirectional", {}),
    (recurrent.rnn, "forward", {"activations": "scaledtanh", "activation_alpha": (0.7,), "activation_beta": (1.3,)}),
    (recurrent.lstm, "forward", {"h": 300}),             # more gate columns (1200) than threads: 2 per thread
], ids=lambda v: getattr(v, "name", str(v)))
def test_the_gpu_recurrence_matches_the_interpreter(op, direction, attrs):
    g, ins = recurrent_graph(op, direction, **attrs)
    want = interp.run(g, *ins)
    got = tvm_cuda.build_for_cpu(g, TARGET)(*ins)
    for k, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=f"output {k}")


def test_the_float16_recurrence_is_widened_and_matches_within_float16s_tolerance():
    g, ins = recurrent_graph(recurrent.gru, "bidirectional", dtype=DType.F16)
    want = interp.run(g, *ins)
    got = tvm_cuda.build_for_cpu(g, TARGET)(*ins)
    for a, b in zip(got, want):
        assert a.dtype == np.float16
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-2)


def _kernel(src: str, name: str) -> str:
    return src.split(f"{name}_kernel(")[2].split('extern "C"')[0]


def test_the_cuda_build_is_one_kernel_per_direction_with_barriers_in_the_step_loop():
    g, _ = recurrent_graph(recurrent.gru, "bidirectional", steps=16, n=2, i=32, h=64)
    exe = BACKEND.build(g, TARGET)
    assert re.findall(r"R\.call_tir\(cls\.(gru_loop\w*)", exe.source("relax")) == ["gru_loop", "gru_loop1"]
    src = _kernel(exe.cuda_source(), "gru_loop")
    assert "__shared__ alignas(64) float gate_ptr[192];" in src
    loop = src.split("for (int s = 0; s < min(lens_ptr[((int)blockIdx.x)], 16); ++s) {")[1]
    # the step's phases: matmul h R^T, r * h, matmul (r * h) R_h^T, the gates; a barrier before each
    assert loop.split("for (int s_1")[0].count("__syncthreads()") == 4
    assert "expf(" in src and "tanhf(" in src


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ptxas") is None or shutil.which("nvcc") is None, reason="needs nvcc and ptxas")
def test_ptxas_assembles_the_recurrence():
    g, _ = recurrent_graph(recurrent.lstm, "bidirectional", steps=16, n=2, i=32, h=128)
    ptx = BACKEND.build(g, TARGET).source("ptx")
    assemble(ptx)
    assert "bar.sync" in ptx
