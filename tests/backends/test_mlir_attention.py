"""The fused attention through the MLIR backend (compiler/backends/mlir_lower/attention.py): fuse_attention's
kernel is one `iree_linalg_ext.attention`, whose maps state the body's batch, K transposed, grouped-query
heads and a broadcast mask, with a causal mask computed from the indices and torch's NaN guard on the output.
It is used on cuda only (on the CPU IREE runs it far slower than the body op by op), but its arithmetic is the
same MLIR on any target, so the tests build it for the CPU too (`ON_TARGETS`) and check it against the interpreter (plain, odd sizes, one query, padding, causal, grouped-query and
multi-query causal, K transposed, the NaN guard with a row whose every key is masked), in float16 against the
interpreter's float16 program, and built for cuda sm_90: one attention op, tensor-core MMA in float16, PTX
that ptxas assembles."""
from __future__ import annotations


import numpy as np
import pytest

pytest.importorskip("iree.compiler")
pytest.importorskip("iree.runtime")

from compiler import interp  # noqa: E402
from compiler.api import final_ir  # noqa: E402
from compiler.backends.mlir import BACKEND  # noqa: E402
from compiler.backends.mlir_lower import attention as mlir_attention  # noqa: E402
from compiler.ops import elementwise as ew  # noqa: E402
from compiler.ops import kernel  # noqa: E402
from compiler.target import Target  # noqa: E402
from tests.backends.attention_graphs import attention_graph, attention_inputs, gqa_graph, guarded_graph  # noqa: E402
from tests.ptxas import assemble  # noqa: E402

CPU = "llvm -num-threads=1"
OP = "iree_linalg_ext.attention"


@pytest.fixture(autouse=True)
def _on_the_cpu_too(monkeypatch):
    monkeypatch.setattr(mlir_attention, "ON_TARGETS", frozenset({"cuda", "llvm"}))


def _build(g, target: str = CPU, **kw):
    f, _ = final_ir(g, target, backend="mlir", **kw)
    assert [n.attrs.get("kernel") for n in f.nodes if n.op is kernel.fused] == ["attention"], f.nodes
    return f, BACKEND.build(f, Target.parse(target))


@pytest.mark.parametrize("g", [
    attention_graph(1, 2, 32, 32, 64),
    attention_graph(2, 3, 20, 36, 8),
    attention_graph(1, 2, 1, 16, 16),                         # one query
    attention_graph(2, 4, 48, 48, 32, mask="padding"),
    attention_graph(2, 4, 48, 48, 32, mask="causal"),
    attention_graph(1, 4, 32, 64, 32, k_transposed=True, scale_op=ew.mul),
    gqa_graph(1, 8, 2, 128, 128, 64, "causal"),               # grouped-query heads: K / V not repeated
    gqa_graph(1, 6, 1, 24, 40, 64, "causal"),                 # bottom-right causal, one K/V head
    gqa_graph(2, 16, 4, 32, 32, 32, "padding"),               # grouped-query with a padding mask
], ids=["plain", "odd-sizes", "one-query", "padding", "causal", "k-transposed", "gqa-causal", "mqa-offset",
        "gqa-padding"])
def test_the_attention_is_one_iree_attention_and_matches_the_interpreter(g):
    _, exe = _build(g)
    text = exe.source("mlir")
    assert text.count(OP) == 1 and "linalg.softmax" not in text
    ins = attention_inputs(g)
    want = interp.run(g, *ins)[0]
    np.testing.assert_allclose(exe.run(ins)[0], want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_the_nan_guard_zeroes_a_row_whose_every_key_is_masked():
    g, ins = guarded_graph()
    _, exe = _build(g)
    assert exe.source("mlir").count(OP) == 1
    want = interp.run(g, *ins)[0]
    assert np.isfinite(want).all() and not want[1, :, 5].any()
    np.testing.assert_allclose(exe.run(ins)[0], want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_the_float16_guarded_chain_is_one_op():
    """float16: the NaN guard follows P's cast back to float16; still one op, the unseeing row 0."""
    g, ins = guarded_graph()
    f, exe = _build(g, precision="fp16")
    assert exe.source("mlir").count(OP) == 1
    exact, program = interp.run(g, *ins)[0], interp.run(f, *ins)[0]
    got = exe.run(ins)[0].astype(np.float32)
    scale = float(np.abs(exact).max())
    assert not got[1, :, 5].any() and np.abs(got - exact).max() <= np.abs(program - exact).max() + 1e-3 * scale


@pytest.mark.parametrize("g", [attention_graph(1, 2, 32, 32, 64), gqa_graph(1, 8, 2, 64, 64, 64, "causal"),
                               gqa_graph(2, 4, 4, 16, 64, 32, "padding")], ids=["plain", "gqa-causal", "padding"])
def test_the_float16_attention_is_one_op_and_as_close_as_the_float16_program(g):
    """--precision fp16: the op takes float16 q, k, v (scores and softmax in float32 inside IREE); it is within
    2e-3 of the largest output of the interpreter's float16 program and of the float32 program."""
    f, exe = _build(g, precision="fp16")
    assert exe.source("mlir").count(OP) == 1
    ins = attention_inputs(g)
    exact, program = interp.run(g, *ins)[0], interp.run(f, *ins)[0]
    got = exe.run(ins)[0].astype(np.float32)
    scale = float(np.abs(exact).max())
    assert np.abs(got - program).max() < 2e-3 * scale and np.abs(got - exact).max() < 2e-3 * scale


def test_on_the_cpu_the_fused_attention_is_its_body_op_by_op(monkeypatch):
    monkeypatch.undo()
    g = gqa_graph(1, 4, 2, 32, 32, 16, "causal")
    _, exe = _build(g)
    text = exe.source("mlir")
    assert OP not in text and "math.exp" in text
    ins = attention_inputs(g)
    want = interp.run(g, *ins)[0]
    np.testing.assert_allclose(exe.run(ins)[0], want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_one_key_is_lowered_op_by_op_on_cuda():
    """IREE 3.13's cuda pipeline crashes the process (SIGSEGV) on an attention op with one key and 16
    queries; such a body is lowered op by op."""
    _, exe = _build(attention_graph(1, 1, 16, 1, 16), "cuda -arch=sm_90")
    assert OP not in exe.source("mlir") and ".entry" in exe.source("ptx")


@pytest.mark.parametrize("precision,mma", [("fp32", False), ("fp16", True)])
def test_the_cuda_build_is_one_attention_op_and_ptxas_assembles_it(precision, mma):
    _, exe = _build(gqa_graph(1, 8, 2, 128, 128, 64, "causal"), "cuda -arch=sm_90", precision=precision)
    assert exe.source("mlir").count(OP) == 1
    ptx = exe.source("ptx")
    assert ".target sm_90" in ptx and ("mma.sync.aligned" in ptx) == mma
    assemble(ptx)
