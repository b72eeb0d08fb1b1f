"""plan_memory: liveness (aliases, in-place), the live-bytes lower bound, and offsets that never let two
live buffers overlap; the search on interval sets whose optimum is known by brute force."""
from __future__ import annotations

import itertools
import json
import random
import zipfile

import numpy as np
import pytest

from compiler.ir import Graph
from compiler.ops import elementwise as ew
from compiler.ops import kernel, linalg, shape
from compiler.types import DType, TensorType
from passes import PassContext, memory
from passes.fusion import fuse
from passes.memory import Buffer, buffers_of, lower_bound, plan, plan_buffers
from tests.conftest import has_module, requires_tvm

F32 = DType.F32


def _assert_valid(p: memory.MemoryPlan) -> None:
    """Brute force: every pair of buffers live at the same time is disjoint in the arena."""
    for (a, oa), (b, ob) in itertools.combinations(zip(p.buffers, p.offsets), 2):
        if a.overlaps(b):
            assert oa + a.size <= ob or ob + b.size <= oa, (a, oa, b, ob)
    for b, o in zip(p.buffers, p.offsets):
        assert o % p.alignment == 0 and o + b.size <= p.arena_bytes
    assert p.arena_bytes >= p.lower_bound_bytes == lower_bound(list(p.buffers))
    assert p.arena_bytes <= p.greedy_bytes


def _optimum(bufs: list[Buffer]) -> int:
    """The least arena over every integer offset assignment (independent of the planner's theory)."""
    n, best = len(bufs), [sum(b.size for b in bufs)]
    off = [0] * n

    def rec(i: int, h: int) -> None:
        if h >= best[0]:
            return
        if i == n:
            best[0] = h
            return
        for o in range(best[0] - bufs[i].size):
            if all(not bufs[i].overlaps(bufs[j]) or o + bufs[i].size <= off[j] or off[j] + bufs[j].size <= o
                   for j in range(i)):
                off[i] = o
                rec(i + 1, max(h, o + bufs[i].size))

    rec(0, 0)
    return best[0]


def _chain() -> tuple[Graph, dict[str, str]]:
    """x -> relu -> reshape -> neg -> exp (kept) -> add(exp, neg) -> out; names of the values."""
    g = Graph()
    x = g.add_input("x", TensorType((4, 16), F32))
    r = g.add1(ew.relu, [x], "r")                  # reads a graph input: a new buffer
    v = g.add1(shape.reshape, [r], "v", shape=(64,))
    n = g.add1(ew.neg, [v], "n")                   # v (= r's bytes) dies here: n may overwrite it
    e = g.add1(ew.exp, [n], "e")                   # n is still read by the add: no in-place
    a = g.add1(ew.add, [e, n], "a")
    g.outputs = [g.add1(ew.relu, [a], "out")]
    return g, {"r": r.name, "v": v.name, "n": n.name, "e": e.name, "a": a.name}


def test_reshape_aliases_and_elementwise_writes_into_a_dying_input():
    g, names = _chain()
    bufs = {v: b for b in buffers_of(g) for v in b.values}
    assert bufs[names["v"]] is bufs[names["r"]] is bufs[names["n"]]    # view, then in place
    assert bufs[names["e"]] is not bufs[names["n"]]                     # n outlives exp
    assert bufs[names["a"]] in (bufs[names["e"]], bufs[names["n"]])    # both die at the add
    assert "x" not in bufs and "out" not in bufs                        # graph inputs/outputs
    assert len({id(b) for b in bufs.values()}) == 2
    assert lower_bound(list(set(bufs.values()))) == 2 * 256


def test_plan_of_a_hand_built_graph_is_the_bound():
    g, _ = _chain()
    p = plan(g, alignment=64)
    _assert_valid(p)
    assert (p.arena_bytes, p.optimal) == (512, True)
    assert set(p.offset_of()) == {v for b in p.buffers for v in b.values}


def test_fused_kernel_overwrites_its_residual_operand_not_its_conv_input(rng):
    g = Graph()
    x = g.add_input("x", TensorType((1, 8, 6, 6), F32))
    h = g.add1(ew.relu, [x], "h")                              # the conv reads it: never overwritten
    s = g.add1(ew.neg, [x], "s")                               # the residual, dies at the kernel
    w = g.const((rng.standard_normal((8, 8, 3, 3)) / 3).astype(np.float32), "w")
    b = g.const(np.zeros(8, np.float32), "b")
    c = g.add1(linalg.conv, [h, w, b], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))
    y = g.add1(ew.relu, [g.add1(ew.add, [c, s])], "y")
    g.outputs = [g.add1(shape.transpose, [y], "o", perm=(0, 2, 3, 1))]
    fg, _ = fuse(g)
    (k,) = [n for n in fg.nodes if n.op is kernel.fused]
    names = [v.name for v in k.inputs]
    assert memory._in_place_operands(k) == [names.index("s")]
    bufs = {v: bb for bb in buffers_of(fg) for v in bb.values}
    assert bufs["s"] is bufs[k.outputs[0].name] and bufs["h"] is not bufs["s"]


def test_a_conv_never_writes_into_what_it_reads(rng):
    g = Graph()
    x = g.add_input("x", TensorType((1, 8, 6, 6), F32))
    h = g.add1(ew.relu, [x], "h")
    w = g.const((rng.standard_normal((8, 8, 3, 3)) / 3).astype(np.float32), "w")
    b = g.const(np.zeros(8, np.float32), "b")
    c = g.add1(linalg.conv, [h, w, b], strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1))
    g.outputs = [g.add1(shape.transpose, [c], "o", perm=(0, 2, 3, 1))]
    fg, _ = fuse(g)
    (k,) = [n for n in fg.nodes if n.op is kernel.fused]
    assert memory._in_place_operands(k) == []
    assert len(buffers_of(fg)) == 2            # h and the conv's result, live together at the kernel


def test_greedy_is_suboptimal_and_the_exact_search_finds_the_optimum():
    bufs = [Buffer(("a",), 3, 0, 3), Buffer(("b",), 4, 2, 2), Buffer(("c",), 4, 2, 5),
            Buffer(("d",), 3, 3, 6), Buffer(("e",), 4, 5, 6)]
    p = plan_buffers(bufs)
    _assert_valid(p)
    assert _optimum(bufs) == 11 == p.lower_bound_bytes
    assert p.greedy_bytes == 14                   # every greedy order and fit
    assert (p.arena_bytes, p.optimal, p.planner) == (11, True, "exact branch-and-bound")


def test_exact_search_matches_brute_force_on_random_interval_sets():
    rng = random.Random(0)
    for _ in range(25):
        bufs = [Buffer((f"v{k}",), rng.randint(1, 5), s, s + rng.randint(0, 3))
                for k, s in enumerate(rng.randint(0, 6) for _ in range(rng.randint(3, 6)))]
        p = plan_buffers(bufs)
        _assert_valid(p)
        assert p.optimal and p.arena_bytes == _optimum(bufs)


def _random_buffers(seed: int, n: int) -> list[Buffer]:
    rng, out = random.Random(seed), []
    for k in range(n):
        start = rng.randint(0, n // 2)
        end = start + rng.randint(0, 6)
        out.append(Buffer((f"v{k}",), 64 * rng.choice([1, 2, 3, 5, 8, 13]), start, end))
    return out


def test_an_exhausted_exact_search_does_not_claim_optimality():
    p = plan_buffers(_random_buffers(2, 60), 64, exact_budget=50, local_evals=30)
    _assert_valid(p)
    assert p.greedy_bytes > p.lower_bound_bytes and not p.optimal


def test_local_search_on_a_large_problem_reaches_the_bound_greedy_misses():
    p = plan_buffers(_random_buffers(0, 200), 64)
    _assert_valid(p)
    assert p.greedy_bytes > p.arena_bytes == p.lower_bound_bytes
    assert (p.planner, p.optimal) == ("local search over orders", True)


def test_the_plan_is_deterministic_and_the_pass_keeps_the_graph():
    g, _ = _chain()
    ctx = PassContext()
    assert memory.plan_memory(g, ctx) is g
    assert ctx.results["memory"] == plan(g, 64) and json.dumps(ctx.results["memory"].to_json())


@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory):
    """examples.zoo.small_resnet exported to ONNX."""
    if not has_module("torch"):
        pytest.skip("needs torch to export the model")
    import torch

    from examples import zoo
    torch.manual_seed(0)
    return str(zoo.export_onnx(zoo.randomize_batch_norm(zoo.small_resnet()), torch.randn(1, 3, 32, 32),
                               tmp_path_factory.mktemp("cnn") / "r.onnx"))


def test_small_cnn_final_ir(small_cnn):
    from compiler.api import final_ir
    results: dict = {}
    g, _ = final_ir(small_cnn, "llvm", results=results)
    p = results["memory"]
    _assert_valid(p)
    assert p == plan(g, 64) and p.alignment == 64
    assert p.arena_bytes <= 1.03 * p.lower_bound_bytes
    named = {v.name for n in g.nodes for v in n.outputs} - {v.name for v in g.outputs}
    assert set(p.offset_of()) == named          # every intermediate has a place
    assert sum(len(b.values) > 1 for b in p.buffers) >= 3   # blocked residual kernels write in place


@pytest.mark.slow
@requires_tvm
def test_compiled_model_and_manifest_report_the_plan(small_cnn, tmp_path):
    import compiler
    cm = compiler.compile(small_cnn, target="llvm")
    assert cm.memory == cm.memory_plan.to_json() and cm.memory["arena_bytes"] >= cm.memory["lower_bound_bytes"]
    saved = cm.save(tmp_path / "m.dyc")
    with zipfile.ZipFile(saved) as z:
        assert json.loads(z.read("manifest.json"))["memory"] == cm.memory
    assert compiler.load(saved).memory == cm.memory
    assert compiler.compile(small_cnn, target="llvm").to_bytes() == cm.to_bytes()


@pytest.mark.slow
def test_resnet50_within_three_percent_of_the_bound():
    from benchmarks.common import export_model
    from compiler.api import final_ir
    path, _ = export_model("resnet50")
    g, _ = final_ir(str(path), "llvm")
    p = plan(g, 64)
    _assert_valid(p)
    assert p.arena_bytes <= 1.03 * p.lower_bound_bytes
