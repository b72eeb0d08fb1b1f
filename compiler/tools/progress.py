"""Progress of long steps (timing loops, calibration batches, measurements) on stderr: a bar
redrawn in place when stderr is a terminal, otherwise plain lines (one at most every `interval`
seconds and a final one when the step took `quiet_below` seconds or more), so logs and pipes never
fill up with redraws."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Self, TextIO, TypeVar

T = TypeVar("T")


class Progress:
    """`p = Progress(total, "calibrating"); p.update(i, note); p.close()`, or a context manager.
    `enabled=False` (the CLI's -q) prints nothing."""

    def __init__(self, total: int, desc: str, *, stream: TextIO | None = None, enabled: bool = True,
                 interval: float | None = None, width: int = 28, quiet_below: float = 2.0):
        self.total, self.desc, self.width = max(total, 0), desc, width
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.quiet_below = quiet_below
        self.tty = enabled and _isatty(self.stream)
        self.interval = interval if interval is not None else (0.1 if self.tty else 10.0)
        self.t0 = self._last = time.perf_counter()
        self.n = 0
        self._closed = False
        self._lines = 0            # plain lines printed (not a terminal)

    def update(self, n: int, note: str = "") -> None:
        self.n = n
        now = time.perf_counter()
        if not self.enabled or (now - self._last < self.interval and n < self.total):
            return
        self._last = now
        if self.tty:
            frac = n / self.total if self.total else 1.0
            bar = "#" * int(self.width * frac)
            note = f" {note[:40]}" if note else ""
            self.stream.write(f"\r{self.desc} [{bar:<{self.width}}] {n}/{self.total} "
                              f"{now - self.t0:.1f}s{note}\x1b[K")
            self.stream.flush()
        elif n < self.total:
            self._lines += 1
            self._line(f"{self.desc}: {n}/{self.total} ({now - self.t0:.0f}s)" + (f" {note}" if note else ""))

    def close(self) -> None:
        if self._closed or not self.enabled:
            return
        self._closed = True
        el = time.perf_counter() - self.t0
        if self.tty:
            self._last = 0.0
            self.interval = 0.0
            self.update(self.n)
            self.stream.write("\n")
            self.stream.flush()
        elif self._lines or el >= self.quiet_below:     # a step that took a while says so once
            self._line(f"{self.desc}: {self.n}/{self.total} done in {el:.1f}s")

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(items: Iterable[T], desc: str, total: int | None = None, **kw) -> Iterator[T]:
    """Yield `items`, showing their progress (total from len(items) unless given)."""
    if total is None:
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, **kw) as p:
        for i, item in enumerate(items):
            yield item
            p.update(i + 1)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class PassBar:
    """A pass observer (passes.base.observe_passes) drawing each pipeline a compile runs as a bar with
    the running pass's name, on a terminal only: elsewhere the compile's own stage lines say where it
    is, so nothing is added. `enabled=False` (-q) draws nothing."""

    def __init__(self, desc: str = "passes", *, stream: TextIO | None = None, enabled: bool = True):
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and _isatty(self.stream)
        self.bar: Progress | None = None
        self._index = 0

    def before(self, name: str, index: int, total: int) -> None:
        if not self.enabled:
            return
        if index == 0 or self.bar is None:
            self.close()
            self.bar = Progress(total, self.desc, stream=self.stream, interval=0.0)
        self._index = index
        self.bar.update(index, name)

    def steps(self, total: int, desc: str):
        """The bar of a long loop inside the running pass (passes.base.steps), drawn below the pass
        bar; nothing off a terminal."""
        if not self.enabled:
            return Progress(total, desc, enabled=False)
        self.stream.write("\n")
        return Progress(total, f"  {desc}", stream=self.stream)

    def after(self, name: str, seconds: float) -> None:
        if self.bar is None:
            return
        self.bar.update(self._index + 1, name)
        if self._index + 1 >= self.bar.total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
