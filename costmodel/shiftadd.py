"""Measured latency of the shift-and-add kernels (compiler/backends/tvm_kernels/shiftadd.py): the data behind
passes/shiftadd.py's choice of kernel per power-of-two layer (`choose_realization`: this prediction against the
learned model's int8 VNNI prediction, `costmodel.policy.predict_layer_latency`) and behind the latency that
mixed precision (passes/mixed_precision.py) gives a shift/add layer.

Each layer shape of :data:`CONVS` / :data:`MATMULS` (digits CNN at batch 1 and 360, the test models, ResNet-like
convs, BERT / ViT linear layers, seeded random shapes) is described as the int8 kernel it runs as
(`policy.layer_kernel_spec`, with the register tile the tile policy picks for it, which the shift kernel
reuses in a compile), built as the 1- and 2-term shift kernel and the VNNI kernel (through the tunable
kernels, compiler/tunable.py), and timed at 1 thread in CPU seconds of this process (the provider's
`cpu_timer`: a warm-up, then loops of >= 50 ms; CPU time, not the wall clock of its `time_kernels`, because
others share this 2-core machine: wall-clock rounds of one kernel differed by 2.4x at the median while they
ran tests, CPU time matched the quiet wall-clock time);
the whole list is timed `rounds` times in shuffled orders and the label is the median over rounds. The VNNI
time is kept only to check the choice, the model does not use it.

The model, per (kernel kind, terms), is linear in counts of the kernel's work (non-negative least squares on
the relative error):

    seconds = c_call + c_mac * MACs + c_code * code loads + c_data * data loads + c_out * outputs
              + c_far * code bytes read from beyond L2

with MACs over the padded channels, code loads = MACs * terms * entries / (16 * register-tile reuse of the code)
and data loads = MACs / (16 * register-tile reuse of the data) (the inner loop's vector loads of the exponent /
sign code and broadcasts of the data, :func:`workload`). The shipped file holds the measurements, the
coefficients, their held-out error (k-fold over shapes) and the machine and command that produced them. On
the shipped data (Zen 4): median error 1.12x, 90% of layers within 1.5x; the worst are linear layers with
over a million weights at 1-64 rows (code of 12-16 bytes per weight streamed from L3 / memory), predicted up
to 4x too fast.

    python -m costmodel.shiftadd --measure          # ~1-2 minutes on 2 cores; writes costmodel/data/...
    python -m costmodel.shiftadd                    # refit and print the held-out error of the shipped data
    python -m costmodel.shiftadd --check            # a few layers timed afresh beside the predictions
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "shiftadd_x86_64.json")
FORMAT = "dyc-shiftadd-costs"
TERMS = (1, 2)
KINDS = ("conv", "matmul")
WORK = ("call", "macs", "code_loads", "data_loads", "outputs", "code_far")
L2_DEFAULT = 1 << 20                # bytes of L2 where the machine does not say
FOLDS = 5

# (batch, ci, h, co, k, stride): digits CNN (examples/zoo.py TinyCNN) at batch 1 and 360 (the test set, as
# examples/shiftadd.py compiles it), tests/passes/test_shiftadd.py's small model, ResNet-like convs
CONVS = [(1, 1, 8, 16, 3, 1), (1, 16, 8, 32, 3, 1), (1, 32, 4, 32, 3, 1),
         (360, 1, 8, 16, 3, 1), (360, 16, 8, 32, 3, 1), (360, 32, 4, 32, 3, 1),
         (8, 3, 8, 16, 3, 1), (8, 16, 8, 16, 3, 2),
         (1, 64, 56, 64, 3, 1), (1, 64, 56, 64, 1, 1), (1, 64, 56, 256, 1, 1), (1, 128, 28, 128, 3, 1),
         (1, 128, 56, 128, 3, 2), (1, 256, 14, 256, 1, 1), (1, 256, 14, 256, 3, 1), (1, 512, 7, 512, 3, 1),
         (1, 3, 224, 64, 7, 2), (1, 1024, 14, 256, 1, 1)]
# (m, k, n): digits CNN head (batch 1 / 360), digits ViT (17 tokens, width 64), BERT linears (hidden 384 / 768)
MATMULS = [(1, 32, 10), (360, 32, 10), (17, 64, 192), (17, 64, 64), (17, 64, 128), (17, 128, 64),
           (128, 384, 1152), (128, 384, 384), (128, 384, 1536), (128, 1536, 384), (128, 768, 768),
           (1, 768, 768), (1, 768, 3072), (197, 768, 768), (16, 1024, 1024), (49, 768, 768), (1, 1024, 4096),
           (8, 768, 3072), (32, 1024, 1024), (1, 512, 2048), (64, 768, 3072)]
N_RANDOM = 10                       # seeded random shapes of each kind added to the lists


def _random_shapes(seed: int = 0, count: int = N_RANDOM) -> tuple[list[tuple], list[tuple]]:
    rng = random.Random(seed)
    convs: list[tuple] = []
    while len(convs) < count:
        k, s = rng.choice([1, 3, 3, 5]), rng.choice([1, 1, 2])
        ci, co = rng.choice([8, 16, 32, 48, 64, 96, 128, 192]), rng.choice([16, 32, 48, 64, 96, 128, 160])
        n, h = rng.choice([1, 1, 1, 4, 16]), rng.choice([7, 10, 14, 17, 20, 28, 35])
        if n * ci * co * h * h * k * k / (s * s) <= 1.5e8:
            convs.append((n, ci, h, co, k, s))
    mms: list[tuple] = []
    while len(mms) < count:
        m = rng.choice([1, 4, 8, 16, 32, 49, 64, 128, 196])
        k, n = rng.choice([64, 100, 128, 256, 384, 512, 768]), rng.choice([16, 48, 64, 128, 256, 384, 512, 1000])
        if m * k * n <= 1e8:
            mms.append((m, k, n))
    return convs, mms


def shapes() -> list[tuple[str, tuple, tuple, dict[str, Any]]]:
    """(kind, x_shape, w_shape, conv attributes) of every measured layer."""
    rc, rm = _random_shapes()
    out = []
    for n, ci, h, co, k, s in CONVS + rc:
        out.append(("conv", (n, ci, h, h), (co, ci, k, k), {"strides": (s, s), "pads": (k // 2,) * 4}))
    for m, k, n in MATMULS + rm:
        out.append(("matmul", (m, k), (k, n), {}))
    return out


# ----------------------------------------------------------------------------------------------------------------
# the work counts
# ----------------------------------------------------------------------------------------------------------------
def kernel_spec(kind: str, x_shape: Sequence[int], w_shape: Sequence[int], target: Any = None,
                **conv: Any) -> tuple[Any, tuple[int, int]]:
    """(int8 kernel spec, register tile) a layer runs with: the spec the VNNI kernel would get and the tile the
    tile policy picks for it (the shift kernel takes the same spec and tile). Raises
    `costmodel.policy.LatencyUnavailable` for layers no kernel covers (grouped, dilated, 1-D / 3-D convs)."""
    from . import policy
    spec, _note = policy.layer_kernel_spec(kind, tuple(x_shape), tuple(w_shape), **conv)
    tile = policy.choose(spec, None if target is None else str(target))[0]
    return spec, (int(tile[0]), int(tile[1]))


def workload(spec: Any, tile: Sequence[int], terms: int, l2_bytes: int = L2_DEFAULT) -> dict[str, float]:
    """The counts the model is linear in (:data:`WORK`) for the shift kernel of `spec` with `tile`, `terms`.
    code_far: bytes of code read from beyond L2 -- the whole code (4 bytes per entry) once per pass over it
    (a conv reads it once per image, a matmul once per tile of rows) where it does not fit in `l2_bytes`."""
    entries = terms * (3 if terms == 1 else 2)          # exponent, sign (and keep with one term) per term
    if hasattr(spec, "cop"):                            # conv: (reg_oc 16-channel blocks, reg_w output columns)
        oh = (spec.h + spec.pad[0] + spec.pad[2] - spec.kh) // spec.stride[0] + 1
        ow = (spec.w + spec.pad[1] + spec.pad[3] - spec.kw) // spec.stride[1] + 1
        outputs = spec.n * oh * ow * spec.cop
        macs = outputs * spec.cip * spec.kh * spec.kw
        code_reuse, data_reuse = tile[1], tile[0]
        code_bytes, passes = spec.cop * spec.cip * spec.kh * spec.kw * entries * 4, spec.n
    else:                                               # matmul: (rows, 16-column blocks)
        outputs = spec.m * spec.np_
        macs = outputs * spec.k
        code_reuse, data_reuse = tile[0], tile[1]
        code_bytes, passes = spec.np_ * spec.k * entries * 4, -(-spec.m // tile[0])
    return {"call": 1.0, "macs": float(macs), "code_loads": macs * entries / (16.0 * code_reuse),
            "data_loads": macs / (16.0 * data_reuse), "outputs": float(outputs),
            "code_far": float(code_bytes * passes) if code_bytes > l2_bytes else 0.0}


def l2_bytes() -> int:
    """This machine's L2 size per core (Linux sysfs), else :data:`L2_DEFAULT`."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    with contextlib.suppress(OSError, ValueError):
        for d in sorted(os.listdir(base)):
            with open(os.path.join(base, d, "level")) as f:
                if f.read().strip() != "2":
                    continue
            with open(os.path.join(base, d, "size")) as f:
                size = f.read().strip().upper()
            mult = {"K": 1 << 10, "M": 1 << 20}.get(size[-1], 1)
            return int(size.rstrip("KM")) * mult
    return L2_DEFAULT


# ----------------------------------------------------------------------------------------------------------------
# measuring
# ----------------------------------------------------------------------------------------------------------------
def _kernels(spec: Any, tile: tuple[int, int]) -> dict[str, tuple[Any, list]]:
    """{"vnni" / "shift1" / "shift2": (built kernel, argument shapes)} of one layer (compiler/tunable.py)."""
    from compiler import tunable as T
    out = {"vnni": (T.kernel_of(spec).build(spec, tile), list(T.kernel_of(spec).arg_shapes(spec)))}
    for terms in TERMS:
        out[f"shift{terms}"] = T.provider().shift_kernel(spec, terms, tile)
    return out


def measure(rounds: int = 5, min_s: float = 0.05, seed: int = 0, log=print) -> dict[str, Any]:
    """Time the VNNI and the 1- / 2-term shift kernel of every layer of :func:`shapes` (1 thread, CPU time),
    `rounds` times in shuffled orders; rows hold each kernel's median over rounds and every round."""
    from compiler import tunable as T

    from .measure import machine_info
    target = T.provider().host_target(1)
    l2 = l2_bytes()
    layers = shapes()
    specs = [kernel_spec(kind, x, w, **conv) for kind, x, w, conv in layers]
    timers: dict[int, dict[str, Any]] = {}
    runs: dict[int, dict[str, list[float]]] = {i: {} for i in range(len(layers))}
    rng = random.Random(seed)
    t0 = time.perf_counter()
    for r in range(rounds):
        order = list(range(len(layers)))
        rng.shuffle(order)
        for i in order:
            if i not in timers:
                timers[i] = {name: T.provider().cpu_timer(func, sh, target, min_s)
                             for name, (func, sh) in _kernels(*specs[i]).items()}
            for name, timer in timers[i].items():
                runs[i].setdefault(name, []).append(timer())
        log(f"  round {r + 1}/{rounds} done, {time.perf_counter() - t0:.0f} s")
    rows = []
    for i, (kind, x, w, conv) in enumerate(layers):
        spec, tile = specs[i]
        for terms in TERMS:
            got = runs[i][f"shift{terms}"]
            rows.append({"kind": kind, "x_shape": list(x), "w_shape": list(w),
                         **{k: list(v) for k, v in conv.items()}, "terms": terms, "tile": list(tile),
                         "work": workload(spec, tile, terms, l2), "seconds": float(np.median(got)),
                         "rounds_s": got, "vnni_seconds": float(np.median(runs[i]["vnni"])),
                         "vnni_rounds_s": runs[i]["vnni"]})
    return {"format": FORMAT, "threads": 1, "rounds": rounds, "timer": "process CPU time", "rows": rows,
            "machine": {**machine_info(1), "l2_bytes": l2}, "seconds": time.perf_counter() - t0}


# (kind, x shape, w shape, conv attributes) --check times afresh: the digits CNN's middle conv at the test-set
# batch, a ViT and a BERT linear layer
CHECK = [("conv", (360, 16, 8, 8), (32, 16, 3, 3), {"strides": (1, 1), "pads": (1, 1, 1, 1)}),
         ("matmul", (17, 64), (64, 192), {}), ("matmul", (128, 384), (384, 384), {})]


def check(layers: Sequence[tuple] = CHECK, rounds: int = 3) -> list[dict[str, Any]]:
    """The shift kernel of `layers` (1 and 2 terms) timed afresh as `measure` does (the median of `rounds`),
    beside the model's predictions (needs TVM_NUM_THREADS=1)."""
    from compiler import tunable as T
    target = T.provider().host_target(1)
    out = []
    for kind, x, w, conv in layers:
        spec, tile = kernel_spec(kind, x, w, **conv)
        kernels = _kernels(spec, tile)
        for terms in TERMS:
            timer = T.provider().cpu_timer(*kernels[f"shift{terms}"], target)
            got = float(np.median([timer() for _ in range(rounds)]))
            pred = predict_layer_latency(kind, x, w, terms, **conv)[0]
            out.append({"kind": kind, "x_shape": list(x), "w_shape": list(w), "terms": terms, "seconds": got,
                        "predicted": pred, "ratio": pred / got})
    return out


# ----------------------------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------------------------
def _key(kind: str, terms: int) -> str:
    return f"{kind}/{terms}"


def fit(rows: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """{"conv/1": coefficients of :data:`WORK` (seconds per count), ...}: non-negative least squares of the
    relative error, per (kind, terms) present in `rows`."""
    from scipy.optimize import nnls
    out = {}
    for kind in KINDS:
        for terms in TERMS:
            sel = [r for r in rows if r["kind"] == kind and r["terms"] == terms]
            if not sel:
                continue
            a = np.array([[r["work"][k] for k in WORK] for r in sel], np.float64)
            t = np.array([r["seconds"] for r in sel], np.float64)
            scale = a.max(axis=0)                                 # columns on one scale for the solver
            scale[scale == 0] = 1.0
            c, _ = nnls(a / scale / t[:, None], np.ones(len(t)))
            out[_key(kind, terms)] = [float(x) for x in c / scale]
    return out


def predict_work(coefs: dict[str, list[float]], kind: str, terms: int, work: dict[str, float],
                 names: Sequence[str] = WORK) -> float:
    return float(sum(c * work[k] for c, k in zip(coefs[_key(kind, terms)], names)))


def holdout(rows: Sequence[dict[str, Any]], folds: int = FOLDS, seed: int = 0) -> dict[str, Any]:
    """Held-out error: layer shapes split into `folds` groups (both term counts of a shape together), each
    group predicted by the model fitted on the others. Returns the ratios predicted / measured and summaries
    (median and 90th-percentile |log ratio| as a factor, the worst factor), overall and per (kind, terms)."""
    shapes_ = sorted({(r["kind"], tuple(r["x_shape"]), tuple(r["w_shape"])) for r in rows})
    random.Random(seed).shuffle(shapes_)
    group = {s: i % folds for i, s in enumerate(shapes_)}
    ratio = np.zeros(len(rows))
    for f in range(folds):
        train = [r for r in rows if group[(r["kind"], tuple(r["x_shape"]), tuple(r["w_shape"]))] != f]
        coefs = fit(train)
        for i, r in enumerate(rows):
            if group[(r["kind"], tuple(r["x_shape"]), tuple(r["w_shape"]))] == f:
                ratio[i] = predict_work(coefs, r["kind"], r["terms"], r["work"]) / r["seconds"]

    def summary(idx: list[int]) -> dict[str, float]:
        e = np.abs(np.log(np.maximum(ratio[idx], 1e-12)))
        return {"n": len(idx), "median_factor": float(np.exp(np.median(e))),
                "p90_factor": float(np.exp(np.percentile(e, 90))), "max_factor": float(np.exp(e.max()))}
    out: dict[str, Any] = {"folds": folds, "all": summary(list(range(len(rows))))}
    for kind in KINDS:
        for terms in TERMS:
            idx = [i for i, r in enumerate(rows) if r["kind"] == kind and r["terms"] == terms]
            if idx:
                out[_key(kind, terms)] = summary(idx)
    out["ratios"] = [float(x) for x in ratio]
    return out


class ShiftAddModel:
    """Coefficients per (kind, terms) of :data:`WORK`; `predict` gives seconds at 1 thread."""

    def __init__(self, coefs: dict[str, list[float]], meta: dict[str, Any] | None = None,
                 work: Sequence[str] = WORK):
        self.coefs, self.meta, self.work = dict(coefs), dict(meta or {}), tuple(work)

    def predict(self, kind: str, spec: Any, tile: Sequence[int], terms: int) -> float:
        from .policy import LatencyUnavailable
        if _key(kind, terms) not in self.coefs:
            raise LatencyUnavailable(f"no shift-kernel measurements of {kind} layers with {terms} term(s)")
        l2 = int((self.meta.get("machine") or {}).get("l2_bytes") or L2_DEFAULT)
        return predict_work(self.coefs, kind, terms, workload(spec, tile, terms, l2), self.work)

    @classmethod
    def load(cls, path: str) -> ShiftAddModel:
        with open(path) as f:
            obj = json.load(f)
        if obj.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file")
        return cls(obj["coefficients"], {"machine": obj.get("machine"), "path": path}, obj.get("work", WORK))


_UNSET: Any = object()
_model: Any = _UNSET


@lru_cache(maxsize=None)
def _load(path: str) -> ShiftAddModel | None:
    try:
        return ShiftAddModel.load(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def default_model() -> ShiftAddModel | None:
    """The model in use: the one `use_model` set, else ``$DYC_SHIFTADD_COSTS`` (a path, or "off"), else the
    shipped :data:`DATA`; None without one."""
    if _model is not _UNSET:
        return _model
    env = os.environ.get("DYC_SHIFTADD_COSTS")
    if env and env.lower() in ("off", "none", "0"):
        return None
    return _load(env or DATA)


@contextlib.contextmanager
def use_model(model: Any) -> Iterator[None]:
    """Temporarily use `model` (anything with ``predict(kind, spec, tile, terms)``; None: no model)."""
    global _model
    old, _model = _model, model
    try:
        yield
    finally:
        _model = old


def predict_layer_latency(kind: str, x_shape: Sequence[int], w_shape: Sequence[int], terms: int,
                          target: Any = None, **conv: Any) -> tuple[float, str]:
    """(predicted seconds, note) of an integer ``conv`` / ``matmul`` layer with `terms`-term power-of-two weights
    on the shift-and-add kernel, as `costmodel.policy.predict_layer_latency` for the VNNI kernel (same layer
    arguments). Raises `costmodel.policy.LatencyUnavailable` without a model or for a layer no kernel covers."""
    from .policy import LatencyUnavailable
    model = default_model()
    if model is None:
        raise LatencyUnavailable("no shift-kernel cost data (costmodel/data/shiftadd_x86_64.json missing, or "
                                 "DYC_SHIFTADD_COSTS=off)")
    spec, tile = kernel_spec(kind, x_shape, w_shape, target, **conv)
    return float(model.predict(kind, spec, tile, terms)), f"{terms}-term shift kernel (measured linear model)"


# ----------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------
def _print_holdout(h: dict[str, Any]) -> None:
    for key in ("all", *(_key(k, t) for k in KINDS for t in TERMS)):
        if key in h:
            s = h[key]
            print(f"  {key:9s} n={s['n']:3d}  median x{s['median_factor']:.2f}  p90 x{s['p90_factor']:.2f}  "
                  f"worst x{s['max_factor']:.2f}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--measure", action="store_true", help="measure on this machine (else refit the data)")
    ap.add_argument("--out", default=DATA)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--check", action="store_true",
                    help="time the CHECK layers afresh and print them beside the predictions (JSON)")
    args = ap.parse_args(argv)
    if args.check:
        os.environ.setdefault("TVM_NUM_THREADS", "1")
        print(json.dumps(check()))
        return 0
    if args.measure:
        os.environ.setdefault("TVM_NUM_THREADS", "1")
        print(f"measuring the shift and VNNI kernels of {len(shapes())} layers, {args.rounds} rounds",
              file=sys.stderr)
        data = measure(args.rounds, log=lambda m: print(m, file=sys.stderr))
        data["command"] = " ".join(["python -m costmodel.shiftadd", *(sys.argv[1:] if argv is None else argv)])
    else:
        with open(args.out) as f:
            data = json.load(f)
    data["coefficients"] = fit(data["rows"])
    data["work"] = list(WORK)
    data["holdout"] = holdout(data["rows"])
    print(f"held-out error ({FOLDS}-fold over layer shapes, predicted / measured):", file=sys.stderr)
    _print_holdout(data["holdout"])
    from compiler.tools.common import write_atomic
    write_atomic(args.out, lambda f: f.write(json.dumps(data, indent=1, sort_keys=True).encode()))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
