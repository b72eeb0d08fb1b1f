"""Build a cost-model dataset by compiling and timing real kernels on this machine.

A *task* is one kernel spec (fp32 conv, int8 VNNI conv, fp32 matmul, int8 VNNI matmul, int8 batched matmul, fp32
attention); for each task every candidate register tile (attention: query and key block)
(:func:`costmodel.features.candidate_tiles`, at most ``max_candidates``) is built through the tunable-kernel
interface (compiler/tunable.py), compiled for the host and timed by the kernels' provider: one warm-up call, then
``repeat`` repeats of ``number`` calls each (``number`` chosen so one repeat lasts >= ``min_repeat_ms``); the
label is the **median** repeat.  Compilation is serial too (the machine is small and shared: timing while
compiling would add noise).  Tasks are measured in a shuffled order and the run stops at ``budget_s`` seconds, so
a short budget still covers every kernel kind.

Output: JSON lines, one per measured candidate::

    {"task": "conv:1x64x56x56->64 k3 s1 ...", "spec": {...}, "tile": [2, 8], "latency_s": 1.2e-3,
     "runs_s": [...], "schedule": "tiled", "feature_version": 1, "machine": {...}}

``python -m costmodel.measure --out data.jsonl --budget 480`` (or ``compile tune-costmodel``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from compiler import tunable as T
from compiler.host import host_cpu_name
from compiler.layouts import choose_blocks, int_in_block

from . import features as F

# (ci, h, co, k, stride, pad, count) -- all distinct convs of torchvision ResNet-50 (v1.5), batch 1, 224x224
RESNET50_CONVS = [
    (3, 224, 64, 7, 2, 3, 1),
    (64, 56, 64, 1, 1, 0, 1),
    (64, 56, 64, 3, 1, 1, 3),
    (64, 56, 256, 1, 1, 0, 4),
    (256, 56, 64, 1, 1, 0, 2),
    (256, 56, 128, 1, 1, 0, 1),
    (128, 56, 128, 3, 2, 1, 1),
    (128, 28, 512, 1, 1, 0, 4),
    (256, 56, 512, 1, 2, 0, 1),
    (512, 28, 128, 1, 1, 0, 3),
    (128, 28, 128, 3, 1, 1, 3),
    (512, 28, 256, 1, 1, 0, 1),
    (256, 28, 256, 3, 2, 1, 1),
    (256, 14, 1024, 1, 1, 0, 6),
    (512, 28, 1024, 1, 2, 0, 1),
    (1024, 14, 256, 1, 1, 0, 5),
    (256, 14, 256, 3, 1, 1, 5),
    (1024, 14, 512, 1, 1, 0, 1),
    (512, 14, 512, 3, 2, 1, 1),
    (512, 7, 2048, 1, 1, 0, 3),
    (1024, 14, 2048, 1, 2, 0, 1),
    (2048, 7, 512, 1, 1, 0, 2),
    (512, 7, 512, 3, 1, 1, 2),
]
# (batch, m, n, k, b_is_const, transpose_b) -- BERT-base-like encoder (seq 128) and classifier heads
BERT_MATMULS = [
    ((1,), 128, 384, 384, True, False), ((1,), 128, 1536, 384, True, False), ((1,), 128, 384, 1536, True, False),
    ((1, 6), 128, 128, 64, False, True), ((1, 6), 128, 64, 128, False, False), ((), 1, 1000, 2048, True, True),
    ((1,), 128, 768, 768, True, False), ((1,), 128, 3072, 768, True, False),
]
# (k, n) of the int8 linear layers (qmatmul) of a BERT encoder: hidden 384 (QKV fused, out proj, FFN up, FFN
# down) and hidden 768; m = 128 (sequence) and the other row counts below
BERT_QLINEARS = [(384, 1152), (384, 384), (384, 1536), (1536, 384), (768, 2304), (768, 768), (768, 3072),
                 (3072, 768)]
QLINEAR_ROWS = (1, 49, 64, 197, 256)
# (bsz, m, k, n, transpose_b) of the attention matmuls (qbmm): Q K^T and P V, 6 / 12 heads, sequence 128
BERT_QBMMS = [(6, 128, 64, 128, True), (6, 128, 128, 64, False), (12, 128, 64, 128, True),
              (12, 128, 128, 64, False)]
# (heads, lq, lk, causal) of the fp32 attention kernel (d = dv = 64): 12 / 6 heads at 64..2048, and short
# lengths no listed block divides (ViT 197, CLIP 77, ...), where one block may hold the whole sequence
ATTENTIONS = [(h, n, n, c) for h in (12, 6) for n in (64, 128, 256, 512, 1024, 2048) for c in (False, True)] + \
    [(12, 197, 197, False), (6, 197, 197, True), (12, 77, 77, True), (12, 50, 50, False), (6, 100, 100, False),
     (12, 384, 384, False), (12, 128, 512, False)]
KIND_NAMES = ("conv", "qconv", "matmul", "qmatmul", "qbmm", "attention")


# ----------------------------------------------------------------------------------------------------------------
# task lists
# ----------------------------------------------------------------------------------------------------------------
def conv_spec(ci, h, co, k, s, p, n=1, groups=1, w=None):
    """fp32 conv with bias + relu in the blocked layouts the layout pass chooses."""
    ib, ob = choose_blocks(ci, co, groups)
    return F.make_spec("conv", n=n, ci=ci, h=h, w=w or h, co=co, kh=k, kw=k, stride=(s, s), pad=(p,) * 4,
                       groups=groups, in_block=ib, out_block=ob, has_bias=True, activation="relu")


def _requant(qmin: int, qmax: int, dtype: str, **form: str) -> dict[str, Any]:
    """A fused requant's scalar fields (the spec's nested form, as in the JSON)."""
    return dict(in_zp=0, out_zp=0, qmin=qmin, qmax=qmax, dtype=dtype, **form)


# the form of a conv's requant to 8 bits on the fast path (shift >= 33 for every ResNet-50 conv): the kernel the
# data describes is the one that runs
QCONV_RQ_FORM = "hi"


def qconv_spec(ci, h, co, k, s, p, n=1, w=None):
    """uint8 VNNI conv requantized to uint8."""
    return F.make_spec("qconv", n=n, ci=ci, h=h, w=w or h, co=co, kh=k, kw=k, stride=(s, s), pad=(p,) * 4,
                       x_dtype="uint8", in_block=int_in_block(ci),
                       rq1=_requant(0, 255, "uint8", form=QCONV_RQ_FORM))


def matmul_spec(batch, m, n, k, const=True, tb=False):
    """fp32 matmul; a constant weight comes with a bias."""
    return F.make_spec("matmul", batch=tuple(batch), m=m, n=n, k=k, b_is_const=const, transpose_b=tb,
                       has_bias=const)


def qmatmul_spec(m, k, n, a_dtype="int8"):
    """int8 linear layer, requantized to int8 (what the integer-only encoder runs)."""
    return F.make_spec("qmatmul", m=m, k=k, n=n, a_dtype=a_dtype, a_zp=0, rq=_requant(-128, 127, "int8"))


def qbmm_spec(bsz, m, k, n, tb=False, a_dtype="int8"):
    """int8 x int8 batched matmul requantized to int8 (attention's Q K^T with ``tb``, P V without)."""
    return F.make_spec("qbmm", bsz=bsz, m=m, k=k, n=n, a_dtype=a_dtype, a_zp=0, b_dtype="int8", b_zp=0,
                       transpose_b=bool(tb), rq=_requant(-128, 127, "int8"), rq_m=1 << 14, rq_c=20)


def attention_spec(heads, lq, lk, causal=False, d=64, dv=None):
    """fp32 attention of one batch: K as (heads, keys, d) (as the backend passes it), causal or unmasked; its blocks the
    default ones (as the backend describes a kernel before its tile is chosen)."""
    spec = F.make_spec("attention", bh=heads, lq=lq, lk=lk, d=d, dv=dv or d, scale=1.0 / d ** 0.5, tq=lq, tk=lk,
                       causal=0 if causal else -1)
    tq, tk = F.default_tile(spec)
    return dataclasses.replace(spec, tq=tq, tk=tk)


def _random_convs(rng: random.Random, count: int) -> list[tuple]:
    out = []
    while len(out) < count:
        k = rng.choice([1, 1, 3, 3, 5])
        s = rng.choice([1, 1, 2])
        ci = rng.choice([16, 32, 48, 64, 96, 128, 192, 256, 384])
        co = rng.choice([16, 32, 48, 64, 96, 128, 160, 256, 320])
        h = rng.choice([7, 10, 12, 14, 17, 20, 24, 28, 30, 35, 40])
        if ci * co * h * h * k * k / (s * s) > 6e8:   # keep each run cheap
            continue
        out.append((ci, h, co, k, s, k // 2))
    return out


def _random_matmuls(rng: random.Random, count: int) -> list[tuple]:
    out = []
    while len(out) < count:
        m = rng.choice([1, 8, 16, 32, 49, 64, 96, 128, 196, 256])
        n = rng.choice([64, 128, 192, 256, 384, 512, 768, 1024])
        k = rng.choice([64, 128, 256, 384, 512, 768, 1024])
        if m * n * k > 1.5e8:
            continue
        out.append(((1,), m, n, k, True, False))
    return out


def _random_qlinears(rng: random.Random, count: int) -> list[tuple]:
    out = []
    while len(out) < count:
        m = rng.choice([1, 4, 8, 16, 32, 49, 64, 96, 128, 196, 256])
        k = rng.choice([64, 100, 128, 256, 384, 512, 768, 1024])
        n = rng.choice([16, 48, 64, 128, 192, 256, 384, 512, 768, 1000, 1024])
        if m * n * k > 1.5e8:
            continue
        out.append((m, k, n))
    return out


def _random_qbmms(rng: random.Random, count: int) -> list[tuple]:
    out = []
    while len(out) < count:
        bsz = rng.choice([1, 2, 4, 8, 12])
        m = rng.choice([16, 32, 49, 64, 128, 197, 256])
        k = rng.choice([32, 64, 128, 256])
        n = rng.choice([32, 64, 128, 256])
        if bsz * m * n * k > 6e7:
            continue
        out.append((bsz, m, k, n, rng.random() < 0.5))
    return out


def _random_depthwise(rng: random.Random, count: int) -> list[tuple]:
    """(channels, size, kernel, stride) of MobileNet-like depthwise convs."""
    out = []
    while len(out) < count:
        c = rng.choice([16, 32, 64, 96, 128, 144, 192, 240, 384, 576, 960])
        h = rng.choice([7, 10, 14, 17, 20, 28, 35, 56, 112])
        k = rng.choice([3, 3, 5])
        s = rng.choice([1, 1, 2])
        if c * h * h > 1.6e6:                       # keep each run cheap (a 96-channel 112x112 is the largest)
            continue
        out.append((c, h, k, s))
    return out


def qmm_tasks(seed: int = 0, n_random: int = 10) -> list[Any]:
    """The int8 matmul kernels: BERT linear layers (m = 128, hidden 384 and 768), the hidden-384 layers at the
    other row counts, the attention matmuls, and ``n_random`` random-but-valid shapes of each kind."""
    rng = random.Random(seed + 7919)           # independent of the other kinds' random shapes
    tasks: list[Any] = [qmatmul_spec(128, k, n) for k, n in BERT_QLINEARS]
    tasks += [qmatmul_spec(m, k, n) for m in QLINEAR_ROWS for k, n in BERT_QLINEARS[:4]]
    tasks += [qmatmul_spec(*s) for s in _random_qlinears(rng, n_random)]
    tasks += [qbmm_spec(*s) for s in BERT_QBMMS]
    tasks += [qbmm_spec(*s) for s in _random_qbmms(rng, n_random)]
    return tasks


def default_tasks(seed: int = 0, n_random: int = 10, kinds: Sequence[str] | None = None) -> list[Any]:
    """ResNet-50 convs (fp32 and int8), BERT-like matmuls (fp32 and int8), the attention matmuls, a few depthwise
    convs, fp32 attention (:data:`ATTENTIONS`), and random-but-valid others (``n_random`` per kind, half as many
    random depthwise convs); ``kinds``: only these kernel kinds (default all)."""
    rng = random.Random(seed)
    tasks: list[Any] = []
    tasks += [conv_spec(*c[:6]) for c in RESNET50_CONVS]
    tasks += [conv_spec(c, h, c, 3, s, 1, groups=c) for c, h, s in ((32, 112, 1), (96, 56, 2), (144, 28, 1),
                                                                     (384, 14, 1), (960, 7, 1))]
    tasks += [conv_spec(*c) for c in _random_convs(rng, n_random)]
    # their own random stream, so the other kinds' random shapes stay what they were
    dw = _random_depthwise(random.Random(seed + 104729), n_random // 2)
    tasks += [conv_spec(c, h, c, k, st, k // 2, groups=c) for c, h, k, st in dw]
    tasks += [qconv_spec(*c[:6]) for c in RESNET50_CONVS]
    tasks += [qconv_spec(*c) for c in _random_convs(rng, n_random)]
    tasks += [matmul_spec(*m) for m in BERT_MATMULS]
    tasks += [matmul_spec(*m) for m in _random_matmuls(rng, n_random)]
    tasks += qmm_tasks(seed, n_random)
    tasks += [attention_spec(*a) for a in ATTENTIONS]
    seen, uniq = set(), []
    for t in tasks:
        if kinds is not None and F.kind_of(t) not in kinds:
            continue
        if t not in seen:
            seen.add(t)
            uniq.append(t)
    return uniq


def interleave_kinds(tasks: Sequence[Any]) -> list[Any]:
    """``tasks`` reordered round-robin over their kernel kinds (each kind's own order kept), so a measuring budget
    that runs out cuts every kind short instead of leaving the last kinds unmeasured."""
    by: dict[str, list[Any]] = {}
    for t in tasks:
        by.setdefault(F.kind_of(t), []).append(t)
    out: list[Any] = []
    for i in range(max((len(v) for v in by.values()), default=0)):
        out += [v[i] for v in by.values() if i < len(v)]
    return out


def task_name(spec: Any) -> str:
    d = F.describe(spec)
    kind = F.kind_of(spec)
    if kind == "attention":
        causal = "" if spec.causal < 0 else " causal" if spec.causal == 0 else f" causal+{spec.causal}"
        mask = f" mask {spec.mask_batch}x{spec.mask_rows}" if spec.mask_batch else ""
        groups = f" g{spec.k_group}/{spec.v_group}" if (spec.k_group, spec.v_group) != (1, 1) else ""
        dv = f" dv{spec.dv}" if spec.dv != spec.d else ""
        return f"attention:b{spec.bh} {spec.lq}x{spec.lk} d{spec.d}{dv}{causal}{mask}{groups}"
    if kind == "qmatmul":
        rq = f" rq {spec.rq.dtype}" if spec.rq is not None else ""
        return f"qmatmul:{spec.m}x{spec.k}->{spec.n} {spec.a_dtype}{rq}"
    if kind == "qbmm":
        rq = f" rq {spec.rq.dtype}" if spec.rq is not None else ""
        return (f"qbmm:b{spec.bsz} {spec.m}x{spec.k}x{spec.n}{' tB' if spec.transpose_b else ''} "
                f"{spec.a_dtype}x{spec.b_dtype}{rq}")
    if kind == "matmul":
        return (f"matmul:b{'x'.join(map(str, spec.batch)) or '-'} {spec.m}x{spec.n}x{spec.k}"
                f"{' const' if spec.b_is_const else ''}{' tB' if spec.transpose_b else ''}")
    g = f" g{d['groups']}" if d["groups"] > 1 else ""
    return (f"{kind}:{spec.n}x{spec.ci}x{spec.h}x{spec.w}->{spec.co} k{spec.kh}x{spec.kw} "
            f"s{spec.stride[0]} p{spec.pad[0]}{g}")


# ----------------------------------------------------------------------------------------------------------------
# machine description
# ----------------------------------------------------------------------------------------------------------------
def machine_info(threads: int) -> dict[str, Any]:
    """The machine a measurement ran on (CPU, cores, threads, code generator and Python versions)."""
    name = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": name, "mcpu": host_cpu_name(), "cores": os.cpu_count(), "threads": threads,
            **T.provider().toolchain(), "python": platform.python_version(), "machine": platform.machine()}


# ----------------------------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------------------------
def arg_shapes(spec: Any) -> list[tuple[tuple[int, ...], str]]:
    """(shape, dtype) of every parameter of the kernel of ``spec``, output last (the ``make_*`` order)."""
    return T.kernel_of(spec).arg_shapes(spec)


def time_func(func, spec: Any, target, repeat: int = 5, min_repeat_ms: float = 15.0) -> tuple[float, list[float]]:
    """(median seconds, per-repeat seconds) of the built kernel ``func`` of ``spec`` compiled for ``target``
    (the provider's, e.g. ``host_target(threads)``): one warm-up call, then ``repeat`` repeats of calls
    lasting >= ``min_repeat_ms``."""
    runs = T.provider().time_kernels([func], arg_shapes(spec), target, repeat, min_repeat_ms,
                                     interleaved=False)[0]
    return float(np.median(runs)), runs


def time_funcs_interleaved(funcs: Sequence[Any], spec: Any, target, repeat: int = 5,
                           min_repeat_ms: float = 15.0) -> list[tuple[float, list[float]]]:
    """(median seconds, per-round seconds) of each built kernel of one ``spec``, timed in ``repeat``
    interleaved rounds: every round times each candidate once (``number`` calls, >= ``min_repeat_ms``), so a
    burst of load from another process hits all candidates of the task alike instead of a contiguous few (the
    within-task ranking is what the policy needs)."""
    runs = T.provider().time_kernels(funcs, arg_shapes(spec), target, repeat, min_repeat_ms, interleaved=True)
    return [(float(np.median(r)), r) for r in runs]


def measure(tasks: Sequence[Any], out_path: str, budget_s: float = 480.0, max_candidates: int = 32,
            repeat: int = 5, threads: int = 1, seed: int = 0,
            progress: Callable[[int, int, str], None] | None = None, append: bool = False,
            interleave: bool = True) -> dict[str, Any]:
    """Measure every candidate tile of ``tasks`` (shuffled) into ``out_path`` (JSON lines), stopping after
    ``budget_s`` seconds.  ``interleave``: time the candidates of a task in interleaved rounds
    (:func:`time_funcs_interleaved`); else one after the other (:func:`time_func`).  Returns a summary
    {rows, tasks, seconds, failures}."""
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))
    target = T.provider().host_target(threads)
    machine = machine_info(threads)
    order = list(tasks)
    random.Random(seed).shuffle(order)
    todo = [(spec, tile) for spec in order for tile in F.candidate_tiles(spec, limit=max_candidates)]
    # a budget cut leaves whole tasks: measure task by task
    start = time.perf_counter()
    rows = failures = 0
    done_tasks = 0
    os.makedirs(os.path.dirname(os.path.abspath(out_path)) or ".", exist_ok=True)
    protocol = "interleaved" if interleave else "sequential"

    def row(name, spec, tile, lat, runs, sched):
        return json.dumps({"task": name, "spec": F.spec_to_json(spec), "tile": list(tile), "latency_s": lat,
                           "runs_s": runs, "schedule": sched, "feature_version": F.FEATURE_VERSION,
                           "protocol": protocol, "machine": machine}) + "\n"

    with open(out_path, "a" if append else "w") as f:
        i = 0
        for spec in order:
            if time.perf_counter() - start > budget_s:
                break
            name = task_name(spec)
            tiles = F.candidate_tiles(spec, limit=max_candidates)
            built = []
            for tile in tiles:
                i += 1
                if progress:
                    progress(i, len(todo), name)
                try:
                    func = F.build_func(spec, tile)
                    sched = T.provider().schedule_of(func) or "?"
                    if sched != "tiled":
                        failures += 1
                        continue
                    if interleave:
                        built.append((tile, func, sched))
                        continue
                    lat, runs = time_func(func, spec, target, repeat=repeat)
                except Exception as e:  # noqa: BLE001 - an invalid candidate is data, not a crash
                    failures += 1
                    print(f"[measure] {name} tile {tile}: {type(e).__name__}: {str(e)[:120]}", file=sys.stderr)
                    continue
                f.write(row(name, spec, tile, lat, runs, sched))
                f.flush()
                rows += 1
            if interleave and built:
                try:
                    res = time_funcs_interleaved([b[1] for b in built], spec, target, repeat=repeat)
                except Exception as e:  # noqa: BLE001
                    failures += len(built)
                    print(f"[measure] {name}: {type(e).__name__}: {str(e)[:120]}", file=sys.stderr)
                    res = []
                for (tile, _func, sched), (lat, runs) in zip(built, res):
                    f.write(row(name, spec, tile, lat, runs, sched))
                    rows += 1
                f.flush()
            done_tasks += 1
    return {"rows": rows, "tasks": done_tasks, "seconds": time.perf_counter() - start, "failures": failures}


def combine_sessions(paths: Sequence[str], out_path: str) -> dict[str, Any]:
    """Merge independent measurement sessions of the same candidates (files of :func:`measure`) into one
    dataset with less label noise.  Load from other processes on a shared machine shifts a whole task (or a
    stretch of its candidates) between sessions, so per task the candidates' log-latencies are taken relative
    to that session's task median, the per-candidate median of those deviations is the within-task shape, and
    the quietest session's task median is the level (load only ever slows down).  Only candidates present in
    every session are kept; ``runs_s`` holds all sessions' repeats, ``sessions`` their count."""
    runs = [{(r["task"], tuple(r["tile"])): r for r in load_jsonl(p)} for p in paths]
    keys = [k for k in runs[-1] if all(k in R for R in runs)]
    by_task: dict[str, list] = {}
    for k in keys:
        by_task.setdefault(k[0], []).append(k)
    n = 0
    with open(out_path, "w") as f:
        for ks in by_task.values():
            lat = np.log([[R[k]["latency_s"] for k in ks] for R in runs])     # sessions x candidates
            med = np.median(lat, axis=1, keepdims=True)
            dev = np.median(lat - med, axis=0)
            level = float(med.min())
            for j, k in enumerate(ks):
                r = dict(runs[-1][k])
                r["latency_s"] = float(np.exp(level + dev[j]))
                r["runs_s"] = [x for R in runs for x in R[k]["runs_s"]]
                r["sessions"] = len(runs)
                f.write(json.dumps(r) + "\n")
                n += 1
    return {"rows": n, "tasks": len(by_task), "sessions": len(runs)}


def union_datasets(paths: Sequence[str], out: str) -> dict[str, int]:
    """Write the rows of every task of ``paths`` into ``out``: a task measured in several files keeps the rows of
    the first file that has it (datasets of different kernels, e.g. the shipped file and sessions of more random
    shapes, become one; for repeated sessions of the same kernels use :func:`combine_sessions`)."""
    rows, owner = [], {}
    for i, path in enumerate(paths):
        for r in load_jsonl(path):
            if owner.setdefault(r["task"], i) == i:
                rows.append(r)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, out)
    return {"rows": len(rows), "tasks": len(owner), "files": len(paths)}


def load_jsonl(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def text_progress(width: int = 30) -> Callable[[int, int, str], None]:
    """Measuring progress on stderr (compiler/tools/progress.py): a bar redrawn in place on a terminal,
    otherwise a plain line every 10 s, so logs do not fill with redraws."""
    from compiler.tools.progress import Progress
    bars: list[Progress] = []

    def show(i: int, total: int, name: str) -> None:
        if not bars:
            bars.append(Progress(total, "measuring", width=width))
        bars[0].update(i, name)
        if i == total:
            bars[0].close()
    return show


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(description="measure kernel candidates into a cost-model dataset")
    p.add_argument("--out", default="costmodel_data.jsonl")
    p.add_argument("--budget", type=float, default=480.0, help="seconds of measuring (default 480)")
    p.add_argument("--max-candidates", type=int, default=32)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random", type=int, default=10, help="random shapes per kernel kind")
    p.add_argument("--kinds", help=f"comma-separated kernel kinds to measure (default all: {','.join(KIND_NAMES)})")
    p.add_argument("--sequential", action="store_true",
                   help="time candidates one after the other (default: interleaved rounds per task)")
    p.add_argument("--combine", nargs="+", metavar="SESSION.jsonl",
                   help="do not measure: merge these sessions of the same candidates into --out")
    p.add_argument("--skip-measured", metavar="DATA.jsonl",
                   help="measure only the kernels this dataset does not have yet")
    p.add_argument("--union", nargs="+", metavar="DATA.jsonl",
                   help="do not measure: write every task of these datasets into --out (a task in several "
                        "files keeps the first file's rows)")
    a = p.parse_args(argv)
    if a.combine:
        print(json.dumps(combine_sessions(a.combine, a.out)))
        return 0
    if a.union:
        print(json.dumps(union_datasets(a.union, a.out)))
        return 0
    kinds = None
    if a.kinds:
        kinds = tuple(k.strip() for k in a.kinds.split(",") if k.strip())
        bad = [k for k in kinds if k not in KIND_NAMES]
        if bad:
            p.error(f"unknown kernel kind(s) {bad}; known: {', '.join(KIND_NAMES)}")
    tasks = default_tasks(a.seed, a.random, kinds)
    if a.skip_measured:
        have = {r["task"] for r in load_jsonl(a.skip_measured)}
        tasks = [t for t in tasks if task_name(t) not in have]
        print(f"{len(tasks)} kernels not in {a.skip_measured}", file=sys.stderr)
    s = measure(tasks, a.out, a.budget, a.max_candidates, a.repeat, a.threads, a.seed, text_progress(),
                interleave=not a.sequential)
    print(json.dumps(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ----------------------------------------------------------------------------------------------------------------
# `compile tune-costmodel`
# ----------------------------------------------------------------------------------------------------------------
def tune_main(argv: Sequence[str] | None = None) -> int:
    """compile tune-costmodel --target llvm [--budget SECONDS] [--out MODEL.json] [--data DATA.jsonl]

    Measures the candidate tiles of the default kernel set on this machine (progress bar on stderr), retrains
    the XGBoost model on those measurements and writes it; the tile policy then prefers it over the shipped
    model (``~/.cache/dyc/costmodel.json`` is the default output and the first place the policy looks)."""
    import argparse

    from .policy import USER_MODEL
    p = argparse.ArgumentParser(prog="compile tune-costmodel", description=tune_main.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="llvm", help="only 'llvm' (the host CPU) is supported")
    p.add_argument("--budget", type=float, default=300.0, help="seconds of measuring (default 300)")
    p.add_argument("--out", default=USER_MODEL, help=f"model file to write (default {USER_MODEL})")
    p.add_argument("--data", help="where to keep the measurements (default: OUT with .jsonl)")
    p.add_argument("--threads", type=int, default=1, help="TVM threads while timing (default 1)")
    p.add_argument("--max-candidates", type=int, default=32)
    p.add_argument("--random", type=int, default=10, help="random shapes per kernel kind (default 10)")
    p.add_argument("--objective", default="reg", choices=["reg", "rank"])
    a = p.parse_args(argv)
    if not a.target.split()[0] == "llvm":
        print(f"error: tune-costmodel supports --target llvm only (got {a.target!r})", file=sys.stderr)
        return 3
    if a.budget <= 0:
        print("error: --budget must be > 0 seconds", file=sys.stderr)
        return 2
    data = a.data or os.path.splitext(a.out)[0] + ".jsonl"
    print(f"measuring kernels for at most {a.budget:.0f} s -> {data}", file=sys.stderr)
    summary = measure(interleave_kinds(default_tasks(0, a.random)), data, a.budget, a.max_candidates,
                      threads=a.threads, progress=text_progress())
    sys.stderr.write("\n")
    print(f"measured {summary['rows']} candidates of {summary['tasks']} kernels in {summary['seconds']:.0f} s "
          f"({summary['failures']} invalid)", file=sys.stderr)
    if summary["rows"] < 20:
        print("error: too few measurements to train a model; raise --budget", file=sys.stderr)
        return 4
    from .model import holdout_report, train_full
    rows = load_jsonl(data)
    metrics = None
    if len({r["task"] for r in rows}) >= 8:
        metrics = holdout_report(rows, a.objective, seeds=(0,))["mean"]
        print("held-out kernels: spearman within task {spearman_within_task:.3f}, median regret "
              "{regret_median:.1%}".format(**metrics), file=sys.stderr)
    model = train_full(rows, a.objective, metrics=metrics)
    model.save(a.out)
    print(f"wrote {a.out} (kernel kinds: {', '.join(model.kinds)})", file=sys.stderr)
    missing = [k for k in KIND_NAMES if k not in model.kinds]
    if missing:
        print(f"warning: no {', '.join(missing)} kernels were measured within the budget; with this model those "
              "kernels use their hand-written tiles (raise --budget to cover them)", file=sys.stderr)
    return 0
