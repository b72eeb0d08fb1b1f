"""The GPU's fused attention (compiler/backends/tvm_kernels/cuda_attention.py): on cuda, fuse_attention's chain is
one kernel (one thread per query, the key block staged in shared memory, an online softmax in registers).

Its arithmetic is checked without a GPU: the same TVMScript built with serial loops and global buffers runs on the
CPU (tvm_cuda.build_for_cpu) against the interpreter, for padding and causal masks, grouped-query heads and
lengths the blocks do not divide evenly; the cuda build must be that kernel, with its state in registers and the
K / V block in shared memory, and ptxas must assemble it without spills."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from compiler import interp  # noqa: E402
from compiler.api import final_ir  # noqa: E402
from compiler.backends import tvm_cuda  # noqa: E402
from compiler.backends.tvm import BACKEND  # noqa: E402
from compiler.backends.tvm_kernels import cuda_attention  # noqa: E402
from compiler.ops import elementwise as ew  # noqa: E402
from compiler.ops import kernel  # noqa: E402
from compiler.target import Target  # noqa: E402
from tests.backends.attention_graphs import attention_graph, attention_inputs, gqa_graph, guarded_graph  # noqa: E402
from tests.ptxas import assemble, usage  # noqa: E402

TARGET = "cuda -arch=sm_90"


def _final(g):
    f, _ = final_ir(g, TARGET)
    assert [n.attrs.get("kernel") for n in f.nodes if n.op is kernel.fused] == ["attention"], f.nodes
    return f


@pytest.mark.parametrize("g", [
    attention_graph(1, 2, 32, 32, 64),
    attention_graph(2, 3, 20, 36, 8),                 # 4 queries per block, 4 keys per block
    attention_graph(1, 2, 1, 16, 16),                 # one query
    attention_graph(2, 4, 48, 48, 32, mask="padding"),
    attention_graph(2, 4, 48, 48, 32, mask="causal"),
    gqa_graph(1, 8, 2, 128, 128, 64, "causal"),   # grouped-query heads read in place
    gqa_graph(1, 6, 1, 24, 40, 64, "causal"),     # bottom-right causal (fewer queries than keys), one K/V head
    gqa_graph(2, 4, 4, 16, 64, 32, "padding"),
    attention_graph(1, 4, 32, 64, 32, k_transposed=True, scale_op=ew.mul),     # K given as (d, keys)
], ids=["plain", "odd-sizes", "one-query", "padding", "causal", "gqa-causal", "mqa-offset", "padding-2",
        "k-transposed"])
def test_the_gpu_attention_matches_the_interpreter(g):
    f = _final(g)
    ins = attention_inputs(g)
    want = interp.run(g, *ins)[0]
    got = tvm_cuda.build_for_cpu(f, Target.parse(TARGET))(*ins)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.parametrize("g", [
    attention_graph(1, 2, 32, 32, 64),
    gqa_graph(1, 8, 2, 64, 64, 64, "causal"),
    gqa_graph(2, 4, 4, 16, 64, 32, "padding"),
], ids=["plain", "gqa-causal", "padding"])
def test_the_float16_attention_is_one_kernel_and_matches_the_interpreter(g):
    """--precision fp16: the float16 chain (its softmax in float32 between two casts) is one kernel too, which
    computes in float32 and rounds its output once (so it is at least as close to the float32 program as the
    op-by-op float16 program is)."""
    f, _ = final_ir(g, TARGET, precision="fp16")
    assert [n.attrs.get("kernel") for n in f.nodes if n.op is kernel.fused] == ["attention"], f.nodes
    ins = attention_inputs(g)
    exact = interp.run(g, *ins)[0]                   # the float32 program
    want = interp.run(f, *ins)[0]
    got = tvm_cuda.build_for_cpu(f, Target.parse(TARGET))(*ins)[0]
    assert got.dtype == np.float32                   # the graph's output cast back
    scale = float(np.abs(exact).max())
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-3 * scale)
    assert np.abs(got - exact).max() <= np.abs(want - exact).max() + 1e-3 * scale


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_the_nan_guard_zeroes_a_row_whose_every_key_is_masked():
    """torch's sdpa export guards the softmax's NaN rows (where(isnan(p), 0, p)): one kernel on the GPU too, and
    a query of the second batch that sees no key (every mask entry -inf) reads 0 as the guarded graph does."""
    g, ins = guarded_graph()
    f = _final(g)
    want = interp.run(g, *ins)[0]
    assert np.isfinite(want).all() and not want[1, :, 5].any()
    got = tvm_cuda.build_for_cpu(f, Target.parse(TARGET))(*ins)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_a_sequence_whose_every_key_is_padded_weighs_its_keys_alike():
    """transformers pads with finfo.min: a batch entry whose every key is padding gives the reference's uniform
    softmax (finite), not 0 / 0."""
    g = attention_graph(2, 2, 16, 16, 16, mask="padding")
    ins = attention_inputs(g)
    ins[3][1] = np.finfo(np.float32).min
    want = interp.run(g, *ins)[0]
    got = tvm_cuda.build_for_cpu(_final(g), Target.parse(TARGET))(*ins)[0]
    assert np.isfinite(want).all()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_the_float16_guarded_chain_is_one_kernel_too():
    """In float16 the guard follows P's cast back to float16 (softmax, cast, where(isnan)): one kernel all the
    same, at least as close to the float32 program as the op-by-op float16 program, the unseeing row 0."""
    g, ins = guarded_graph()
    f, _ = final_ir(g, TARGET, precision="fp16")
    assert [n.attrs.get("kernel") for n in f.nodes if n.op is kernel.fused] == ["attention"], f.nodes
    exact, program = interp.run(g, *ins)[0], interp.run(f, *ins)[0]
    got = tvm_cuda.build_for_cpu(f, Target.parse(TARGET))(*ins)[0]
    scale = float(np.abs(exact).max())
    assert not got[1, :, 5].any() and np.abs(got - exact).max() <= np.abs(program - exact).max() + 1e-3 * scale


def test_a_wrong_kernel_is_caught(monkeypatch):
    """The check above can fail: masking the keys past the causal diagonal with 0 instead of -3e38 is seen."""
    g = attention_graph(2, 4, 48, 48, 32, mask="causal")
    f = _final(g)
    monkeypatch.setattr(cuda_attention, "NEG", 0.0)
    ins = attention_inputs(g)
    got = tvm_cuda.build_for_cpu(f, Target.parse(TARGET))(*ins)[0]
    assert not np.allclose(got, interp.run(g, *ins)[0], rtol=1e-2, atol=1e-2)


def _cuda_build():
    f = _final(gqa_graph(1, 8, 2, 128, 128, 64, "causal"))
    return BACKEND.build(f, Target.parse(TARGET))


def test_the_cuda_build_is_one_kernel_with_registers_and_shared_tiles():
    exe = _cuda_build()
    assert re.findall(r"R\.call_tir\(cls\.(\w+)", exe.source("relax")) == ["attention_0"]
    src = exe.cuda_source().split("attention_0_kernel(")[2].split('extern "C"')[0]
    assert "__shared__ alignas(64) float ks_ptr[2048];" in src and "float acc_ptr[64];" in src
    assert src.count("__syncthreads()") == 2


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ptxas") is None or shutil.which("nvcc") is None, reason="needs nvcc and ptxas")
def test_ptxas_assembles_the_attention_without_spills():
    """...and K / V are read from shared memory 16 bytes at a time (cuda_attention.CHUNK says why that needs the
    chunk loop)."""
    ptx = _cuda_build().source("ptx")
    assert "ld.shared.v4.f32" in ptx and "ld.shared.f32" not in ptx
    assert usage(assemble(ptx), "attention_0_kernel")[1] == 0


def test_the_float16_chain_is_read_with_its_casts_and_no_nan_guard():
    """passes.einsum.find_chains on the float16 program: the two casts around the softmax belong to the chain,
    which has no NaN guard (the cast of P is not one)."""
    from passes.einsum import find_chains
    f, _ = final_ir(attention_graph(1, 2, 32, 32, 64), TARGET, precision="fp16", disable_passes=["fuse_attention",
                                                                                         "fuse_kernels"])
    (ch,) = find_chains(f)
    assert [n.op.name for n in ch.nodes].count("nn.cast") == 2 and not ch.nan_guard
