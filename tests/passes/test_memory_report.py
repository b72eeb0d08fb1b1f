"""What the memory plan reports: the timeline PNG (compiler.memory_timeline) and what TVM Relax's own
static planner allocates for the same program (compiler.backends.tvm_memory)."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import linalg
from compiler.types import DType, TensorType
from passes.memory import Buffer, plan, plan_buffers
from tests.conftest import requires_tvm

PNG = b"\x89PNG\r\n\x1a\n"


def _hand_plan():
    bufs = [Buffer(("a",), 3 << 20, 0, 3), Buffer(("b",), 4 << 20, 2, 2), Buffer(("c",), 4 << 20, 2, 5),
            Buffer(("d",), 3 << 20, 3, 6), Buffer(("e",), 4 << 20, 5, 6)]
    return plan_buffers(bufs, benefit=[float(b.size) for b in bufs], fast_bytes=8 << 20)


def test_memory_timeline_draws_the_plan_and_its_manifest_json(tmp_path):
    from compiler.memory_timeline import draw
    p = _hand_plan()
    assert [r[2] for r in p.to_json()["timeline"]] == list(p.offsets)
    for k, (memory, tiered) in enumerate([(p, False), (p.to_json(), True)]):
        out = draw(memory, tmp_path / f"t{k}.png", tiered=tiered)
        assert out.read_bytes()[:8] == PNG and out.stat().st_size > 5000


def test_memory_timeline_refuses_a_plan_without_rows(tmp_path):
    from compiler.memory_timeline import draw
    with pytest.raises(ValueError, match="no timeline"):
        draw({"arena_bytes": 1, "lower_bound_bytes": 1}, tmp_path / "x.png")


@requires_tvm
def test_tvm_planner_bytes_of_a_chain_reuses_whole_storages():
    """a = x + x; b = a * a; c = b + b; d = c >> 1 (8x16 int32, 512 bytes each): Relax gives a and c
    one storage, b another, and leaves the output d unplanned: 1024 bytes."""
    import tvm
    from tvm import relax

    from compiler.backends.tvm_memory import storage_allocations, plan_like_relax, tvm_planner_bytes
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((8, 16), "int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.add(x, x))
            b = bb.emit(relax.op.multiply(a, a))
            c = bb.emit(relax.op.add(b, b))
            d = bb.emit_output(relax.op.right_shift(c, relax.const(1, "int32")))
        bb.emit_func_output(d)
    target = tvm.target.Target({"kind": "llvm"})
    mod = bb.get()
    assert storage_allocations(plan_like_relax(mod, target)) == [512, 512]
    assert tvm_planner_bytes(mod, target) == 1024


@pytest.mark.slow
@requires_tvm
def test_the_tvm_backend_records_relax_planner_bytes_next_to_the_arena(rng):
    """matmul -> exp -> matmul: the exp result lives between two kernels in both plans."""
    from compiler.api import lower_kernels
    from compiler.backends.tvm import BACKEND
    from compiler.target import Target
    g = Graph()
    x = g.add_input("x", TensorType((64, 64), DType.F32))
    w = [g.const(rng.standard_normal((64, 64)).astype(np.float32), f"w{k}") for k in range(2)]
    h = g.add1(ew.exp, [g.add1(linalg.matmul, [x, w[0]], "mm")], "h")
    g.outputs = [g.add1(linalg.matmul, [h, w[1]], "out")]
    results: dict = {}
    fg = lower_kernels(g, "llvm", results=results)
    exe = BACKEND.build(fg, Target.parse("llvm"))
    p = results["memory"]
    assert p == plan(fg, 64, fast_bytes=p.fast_tier.capacity_bytes)
    assert exe.memory_report["tvm_planner_bytes"] >= p.arena_bytes >= p.lower_bound_bytes > 0
