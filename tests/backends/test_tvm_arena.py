"""The executable's arena (compiler/backends/tvm_arena.py): our planner places every intermediate of the
compiled program at an offset in one allocation, views extend the lifetime of what they alias, returned
tensors stay out of the arena, and a saved artifact rebuilds the same arena from its own library."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")

import tvm  # noqa: E402
from tvm import relax  # noqa: E402

from compiler.backends.tvm_arena import Arena, find_buffers, lower_calls, place_in_arena  # noqa: E402

TARGET = tvm.target.Target({"kind": "llvm"})
R = relax.op


def _module(build) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((8, 16), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(build(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def _chain(bb, x):
    """a = x + x; b = a * a; c = b + b; d = c - x: a, b, c are 512-byte intermediates, d the output."""
    a = bb.emit(R.add(x, x))
    b = bb.emit(R.multiply(a, a))
    c = bb.emit(R.add(b, b))
    return R.subtract(c, x)


def _aliased(bb, x):
    """v = reshape(x + x) is read last, after b and c: x + x must outlive them although `a` itself is not."""
    a = bb.emit(R.add(x, x))
    v = bb.emit(R.reshape(a, (16, 8)))
    b = bb.emit(R.exp(x))
    c = bb.emit(R.add(b, b))
    return R.add(v, R.reshape(c, (16, 8)))


def _run(mod: tvm.IRModule, x: np.ndarray) -> tuple[np.ndarray, Arena]:
    placed, plan = place_in_arena(mod, TARGET)
    vm = relax.VirtualMachine(tvm.compile(placed, target=TARGET), tvm.cpu())
    arena = Arena(vm["arena_layout"]().numpy())
    assert arena.nbytes == plan.arena_bytes
    out = vm["main"](tvm.runtime.tensor(x), *arena.tensors)
    return out.numpy(), arena


def test_the_chain_reuses_bytes_and_leaves_the_output_out():
    allocs = find_buffers(lower_calls(_module(_chain), TARGET)["main"])
    assert [a.nbytes for a in allocs] == [512, 512, 512]          # d is returned: not in the arena
    x = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    got, arena = _run(_module(_chain), x)
    np.testing.assert_array_equal(got, (x + x) * (x + x) * 2 - x)
    assert arena.nbytes == 1024                                   # a and c share 512 bytes
    base = arena.bytes.ctypes.data
    assert base % 64 == 0
    assert {t.data_ptr() - base for t in arena.tensors} == {0, 512}


def test_a_view_keeps_what_it_aliases_alive():
    allocs = find_buffers(lower_calls(_module(_aliased), TARGET)["main"])
    first = min(allocs, key=lambda a: a.time)                     # x + x
    assert first.last == max(a.last for a in allocs)              # read through the view at the end
    x = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)
    got, _ = _run(_module(_aliased), x)
    np.testing.assert_allclose(got, (x + x).reshape(16, 8) + (2 * np.exp(x)).reshape(16, 8), rtol=1e-6)


def test_the_fast_tier_placement_puts_its_buffers_below_the_capacity():
    """-fast-tier: the two-level mapping's offsets are the ones the executable uses. With room for one
    512-byte buffer at a time, a and c (never live together) share the fast region and b goes above it."""
    allocs = find_buffers(lower_calls(_module(_chain), TARGET)["main"])
    assert [a.touches for a in allocs] == [2, 2, 2]               # each written by one kernel, read by one
    placed, plan = place_in_arena(_module(_chain), TARGET, fast_bytes=512)
    tier = plan.fast_tier
    assert sorted(tier.chosen) == [0, 2] and tier.saved_bytes == 2048 and tier.traffic_bytes == 3072
    vm = relax.VirtualMachine(tvm.compile(placed, target=TARGET), tvm.cpu())
    arena = Arena(vm["arena_layout"]().numpy())
    offsets = [t.data_ptr() - arena.bytes.ctypes.data for t in arena.tensors]
    assert offsets == list(tier.offsets) and offsets[0] < 512 and offsets[2] < 512 and offsets[1] >= 512
    x = np.random.default_rng(3).standard_normal((8, 16)).astype(np.float32)
    got = vm["main"](tvm.runtime.tensor(x), *arena.tensors).numpy()
    np.testing.assert_array_equal(got, (x + x) * (x + x) * 2 - x)


@pytest.mark.slow
def test_a_compiled_cnn_runs_in_its_arena_and_a_saved_artifact_rebuilds_it(tmp_path):
    """The executable's arena holds every kernel output; it is at most what Relax's planner allocates,
    results equal the interpreter's, and loading the artifact gives the same arena and results."""
    import compiler
    from compiler import interp
    cm = compiler.compile("examples/models/digits_cnn.onnx", target="llvm")
    mem = cm.memory
    exe = mem["executable"]
    assert 0 < exe["arena_bytes"] <= mem["tvm_planner_bytes"]
    assert exe["arena_bytes"] == cm.executable.arena.nbytes and exe["buffers"] == len(cm.executable.arena.tensors)
    x = np.random.default_rng(2).standard_normal((1, 1, 8, 8)).astype(np.float32)
    want = interp.run(cm.graph, x)
    got = cm.run(x)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    loaded = compiler.load(cm.save(tmp_path / "m.dyc"))
    assert loaded.executable.arena.nbytes == exe["arena_bytes"]
    np.testing.assert_array_equal(loaded.run(x)[0], got[0])


def test_the_planned_parameters_skip_the_vms_per_call_checks():
    """relax_pipeline drops the dtype / shape checks of main's planned parameters (views made once from the
    layout table), keeps the input's, and the result is unchanged."""
    from compiler.backends.tvm_arena import relax_pipeline
    placed, _ = place_in_arena(_module(_chain), TARGET)
    with TARGET:
        lowered = relax_pipeline()(placed)["main"].script()
    checks = [ln for ln in lowered.splitlines() if "vm.builtin.check_tensor_info" in ln or "vm.builtin.match_shape" in ln]
    assert len(checks) == 2 and all("param=x," in ln for ln in checks)
    x = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    vm = relax.VirtualMachine(tvm.compile(placed, target=TARGET, relax_pipeline=relax_pipeline()), tvm.cpu())
    arena = Arena(vm["arena_layout"]().numpy())
    got = vm["main"](tvm.runtime.tensor(x), *arena.tensors).numpy()
    np.testing.assert_allclose(got, 8 * x * x - x, rtol=1e-6)
