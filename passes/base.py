"""Pass registry and pass manager.

A pass is a pure function `Graph -> Graph`, or `(Graph, PassContext) -> Graph` when it needs the
target, the calibration data, the budgets or the kernels' tunable interface, registered under a
name. `run_pipeline` runs a list of names, verifies the graph after each pass, times them, and
prints or dumps the IR on request. Observers installed with `observe_passes` (a pass-time record, a
progress bar) hear of every pass of every pipeline run inside the `with`, across compile stages,
without the stages passing them along.
"""
from __future__ import annotations

import inspect
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from compiler.diagnostics import CompileError, Unsupported
from compiler.ir import Graph
from compiler.verify import verify

PassFn = Callable[..., Graph]


@dataclass(frozen=True)
class Pass:
    name: str
    fn: PassFn
    doc: str
    wants_context: bool = False


PASSES: dict[str, Pass] = {}


def register_pass(name: str) -> Callable[[PassFn], PassFn]:
    def deco(fn: PassFn) -> PassFn:
        if name in PASSES:
            raise ValueError(f"pass {name} registered twice")
        wants = len(inspect.signature(fn).parameters) > 1
        PASSES[name] = Pass(name, fn, (fn.__doc__ or "").strip().splitlines()[0], wants)
        return fn
    return deco


@dataclass
class PassContext:
    """What a pass may ask for besides the graph, and how the pass manager reports.

    target: the compile target (compiler.target.Target), or None for target-free runs.
    calibration: input batches of a quantizing compile. budgets: the mixed-precision budgets.
    quant: what a quantizing compile asked for (passes.quantize.QuantRequest), or None.
    kernel_spec: the backend's tunable-kernel interface, node -> the spec the cost model ranks tiles
    of (None: no backend, so tiles stay the kernels' defaults).
    results: what analysis passes leave for the caller (calibration stats, the mixed-precision plan)."""

    target: Any = None
    calibration: Any = None
    budgets: dict[str, float] = field(default_factory=dict)
    quant: Any = None
    results: dict[str, Any] = field(default_factory=dict)
    kernel_spec: Callable[[Any], Any] | None = None
    verify_each: bool = True
    print_after: frozenset[str] = frozenset()      # pass names, or "all"
    dump_dir: Path | None = None
    out: TextIO = field(default_factory=lambda: sys.stderr)
    timings: list[tuple[str, float]] = field(default_factory=list)


class PassFailed(CompileError):
    """A pass raised an unexpected exception (an internal error, exit code 1)."""

    code = 1
    kind = "internal compiler error"


def resolve(pipeline: Sequence[str], passes: Sequence[str] | None = None,
            disable: Sequence[str] = ()) -> list[str]:
    """Apply --passes (replace the list) and --disable-pass (drop names) to a pipeline."""
    names = list(passes) if passes is not None else list(pipeline)
    for n in list(names) + list(disable):
        if n not in PASSES:
            raise Unsupported(f"unknown pass {n!r}", hint=f"known passes: {', '.join(sorted(PASSES))}")
    return [n for n in names if n not in set(disable)]


class PassObserver(Protocol):
    """Told of each pass `run_pipeline` runs: before it (its place in its pipeline) and after it (its
    wall time in seconds, verification excluded)."""

    def before(self, name: str, index: int, total: int) -> None: ...

    def after(self, name: str, seconds: float) -> None: ...


@dataclass
class PassTimes:
    """A PassObserver that records (pass, seconds) in the order the passes ran."""

    times: list[tuple[str, float]] = field(default_factory=list)

    def before(self, name: str, index: int, total: int) -> None:
        pass

    def after(self, name: str, seconds: float) -> None:
        self.times.append((name, seconds))


_OBSERVERS: ContextVar[tuple[PassObserver, ...]] = ContextVar("pass_observers", default=())


@contextmanager
def observe_passes(observer: PassObserver) -> Iterator[PassObserver]:
    """`with observe_passes(PassTimes()) as t: compiler.compile(...)`: `observer` hears of every pass
    run inside the block (in this thread or task)."""
    token = _OBSERVERS.set((*_OBSERVERS.get(), observer))
    try:
        yield observer
    finally:
        _OBSERVERS.reset(token)


class _NoSteps:
    def update(self, n: int, note: str = "") -> None:
        pass

    def __enter__(self) -> _NoSteps:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def steps(total: int, desc: str):
    """A progress reporter for a long loop inside a pass (calibration batches, a search's rollouts):
    `with steps(n, "calibrating") as s: ... s.update(i)`. The first installed observer with a `steps`
    method draws it (the CLI's bar on a terminal); otherwise it reports nothing."""
    for o in _OBSERVERS.get():
        make = getattr(o, "steps", None)
        if make is not None:
            return make(total, desc)
    return _NoSteps()


def run_pipeline(g: Graph, names: Sequence[str], ctx: PassContext | None = None) -> Graph:
    ctx = ctx or PassContext()
    observers = _OBSERVERS.get()
    for i, name in enumerate(names):
        p = PASSES[name]
        for o in observers:
            o.before(name, i, len(names))
        t0 = time.perf_counter()
        try:
            g = p.fn(g, ctx) if p.wants_context else p.fn(g)
        except CompileError:
            raise
        except Exception as e:  # noqa: BLE001  (any other exception is our bug: say which pass)
            fd, repro = tempfile.mkstemp(prefix=f"crash-{name}-", suffix=".mlir")
            with os.fdopen(fd, "w") as f:
                f.write(str(g))
            raise PassFailed(f"pass '{name}' crashed: {type(e).__name__}: {e}",
                             hint=f"its input IR is saved in {repro}; please report it "
                                  "(--debug shows the traceback)") from e
        ctx.timings.append((name, time.perf_counter() - t0))
        for o in observers:
            o.after(name, ctx.timings[-1][1])
        if ctx.verify_each:
            verify(g)
        if name in ctx.print_after or "all" in ctx.print_after:
            ctx.out.write(f"// ----- IR after {name} -----\n{g}")
        if ctx.dump_dir is not None:
            ctx.dump_dir.mkdir(parents=True, exist_ok=True)
            (ctx.dump_dir / f"{len(ctx.timings) - 1:02d}_{name}.mlir").write_text(str(g))
    return g
