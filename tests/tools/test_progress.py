"""Progress output: a redrawn bar on a terminal, plain lines otherwise, nothing with -q."""
from __future__ import annotations

import io

from compiler.tools.progress import Progress, track


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_a_bar_on_a_terminal():
    s = _Tty()
    for _ in track(range(5), "calibrating", stream=s, interval=0.0):
        pass
    text = s.getvalue()
    assert "\r" in text and "calibrating [" in text and "5/5" in text and text.endswith("\n")


def test_progress_is_plain_lines_when_not_a_terminal():
    s = io.StringIO()
    p = Progress(4, "measuring", stream=s, interval=0.0, quiet_below=0.0)
    for i in range(1, 5):
        p.update(i, note=f"kernel {i}")
    p.close()
    lines = s.getvalue().splitlines()
    assert "\r" not in s.getvalue() and "\x1b" not in s.getvalue()
    assert lines[0] == "measuring: 1/4 (0s) kernel 1" and lines[-1].startswith("measuring: 4/4 done in")


def test_progress_short_step_off_a_terminal_prints_nothing_and_disabled_never_does():
    s = io.StringIO()
    with Progress(3, "bench", stream=s) as p:
        p.update(3)
    assert s.getvalue() == ""
    t = _Tty()
    with Progress(3, "bench", stream=t, enabled=False) as p:
        p.update(3)
    assert t.getvalue() == ""
