"""Table lookups on AVX-512 (compiler/backends/tvm_byte_lookup.py): a vector gather from a 256-entry 8-bit
table becomes two vpermi2b and a byte blend (VBMI), one from a 65536-entry int32 table one vpgatherdd, with the
same values as TVM's lane-by-lane loads for every index; CPUs without AVX-512 keep TVM's own pipeline. The
assembly is checked on any host, the values where the host has the instructions."""
from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("tvm")

import tvm  # noqa: E402
from tvm.script import tirx as T  # noqa: E402

from compiler.backends.tvm_byte_lookup import GATHER_PIPELINE, PIPELINE, pipeline_for  # noqa: E402
from compiler.host import host_cpu_flags  # noqa: E402

VBMI_CPU = "znver4"
HOST_HAS_VBMI = "avx512vbmi" in host_cpu_flags()
HOST_HAS_AVX512 = "avx512f" in host_cpu_flags()


def _gather(index_dtype: str, table_dtype: str, lanes: int):
    """out[i] = tab[x[i] - min(x's dtype)] over 256 indices, vectorized `lanes` wide (the form of
    tvm_kernels/table.py's table_te in a conv's write-back)."""
    offset = 128 if index_dtype == "int8" else 0

    @T.prim_func
    def f(x: T.Buffer((256,), index_dtype), tab: T.Buffer((256,), table_dtype), out: T.Buffer((256,), table_dtype)):
        for j in range(256 // lanes):
            for i in T.vectorized(lanes):
                out[j * lanes + i] = tab[T.Cast("int32", x[j * lanes + i]) + offset]
    return tvm.IRModule({"main": f})


def _build(mod, pipeline):
    return tvm.compile(mod, target=tvm.target.Target({"kind": "llvm", "mcpu": VBMI_CPU}), tir_pipeline=pipeline)


def _asm(lib) -> str:
    return lib.mod.inspect_source("asm") if hasattr(lib, "mod") else lib.inspect_source("asm")


def test_the_pipelines_need_avx512():
    assert pipeline_for("znver4") == PIPELINE
    assert pipeline_for("icelake-server") == PIPELINE
    assert pipeline_for("skylake-avx512") == GATHER_PIPELINE      # AVX-512 without VBMI: the gathers only
    assert pipeline_for("haswell") == "default"


@pytest.mark.parametrize("lanes", [8, 16, 32, 64])
@pytest.mark.parametrize("index_dtype,table_dtype", [("int8", "uint8"), ("uint8", "int8"), ("int8", "int8")])
def test_gather_becomes_permutes_with_the_same_bytes(index_dtype, table_dtype, lanes):
    mod = _gather(index_dtype, table_dtype, lanes)
    ours, theirs = _build(mod, PIPELINE), _build(mod, "default")
    asm = _asm(ours)
    assert len(re.findall(r"\tvperm[it]2b\t", asm)) >= 2
    assert "vpinsrb" not in asm                       # no lane-by-lane insertion left
    assert "vpinsrb" in _asm(theirs)                  # ... which is what TVM's pipeline emits
    if not HOST_HAS_VBMI:
        pytest.skip("the host has no AVX-512 VBMI: the code is checked, not run")
    rng = np.random.default_rng(lanes)
    x = rng.permutation(256).astype(np.int64) - (128 if index_dtype == "int8" else 0)
    x = x.astype(index_dtype)
    tab = rng.integers(np.iinfo(table_dtype).min, np.iinfo(table_dtype).max + 1, 256).astype(table_dtype)
    outs = []
    for lib in (ours, theirs):
        out = tvm.runtime.tensor(np.zeros(256, table_dtype))
        lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(tab), out)
        outs.append(out.numpy())
    expected = tab[x.astype(np.int64) + (128 if index_dtype == "int8" else 0)]
    np.testing.assert_array_equal(outs[0], expected)
    np.testing.assert_array_equal(outs[1], expected)


def test_loads_that_are_not_byte_table_gathers_are_left_alone():
    """A gather from a 512-entry table and a contiguous (ramp) load of a 256-entry one keep TVM's code."""
    @T.prim_func
    def f(x: T.Buffer((64,), "int16"), big: T.Buffer((512,), "uint8"), tab: T.Buffer((256,), "uint8"),
          out: T.Buffer((64,), "uint8")):
        for i in T.vectorized(64):
            out[i] = big[T.Cast("int32", x[i]) + 256] + tab[i]
    asm = _asm(_build(tvm.IRModule({"main": f}), PIPELINE))
    assert not re.findall(r"\tvperm[it]2b\t", asm)
    assert "vpinsrb" in asm


def _wide_gather(out_dtype: str, lanes: int, n: int = 1024):
    """out[i] = tab[x[i] + 32768] from a 65536-entry int32 table (tvm_kernels/table.py's form of a 16-bit
    index's table), cast to `out_dtype`, vectorized `lanes` wide."""
    @T.prim_func
    def f(x: T.Buffer((n,), "int16"), tab: T.Buffer((65536,), "int32"), out: T.Buffer((n,), out_dtype)):
        for j in range(n // lanes):
            for i in T.vectorized(lanes):
                out[j * lanes + i] = T.Cast(out_dtype, tab[T.Cast("int32", x[j * lanes + i]) + 32768])
    return tvm.IRModule({"main": f})


@pytest.mark.parametrize("pipeline", [PIPELINE, GATHER_PIPELINE])
@pytest.mark.parametrize("lanes", [8, 16])
@pytest.mark.parametrize("out_dtype", ["int16", "int8", "int32"])
def test_wide_table_lookup_becomes_one_gather_with_the_same_values(out_dtype, lanes, pipeline):
    mod = _wide_gather(out_dtype, lanes)
    ours, theirs = _build(mod, pipeline), _build(mod, "default")
    assert re.search(r"\tvpgatherdd\t", _asm(ours))
    assert not re.search(r"\tvpgatherdd\t", _asm(theirs))     # TVM's pipeline: lane by lane
    if not HOST_HAS_AVX512:
        pytest.skip("the host has no AVX-512: the code is checked, not run")
    rng = np.random.default_rng(lanes)
    x = np.concatenate([[-32768, 32767, 0, -1], rng.integers(-32768, 32768, 1020)]).astype(np.int16)
    tab = rng.integers(np.iinfo(out_dtype).min, np.iinfo(out_dtype).max, 65536, dtype=np.int64).astype(np.int32)
    outs = []
    for lib in (ours, theirs):
        out = tvm.runtime.tensor(np.zeros(1024, out_dtype))
        lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(tab), out)
        outs.append(out.numpy())
    expected = tab[x.astype(np.int64) + 32768].astype(out_dtype)
    np.testing.assert_array_equal(outs[0], expected)
    np.testing.assert_array_equal(outs[1], expected)
