"""Progress output: a redrawn bar on a terminal, plain lines otherwise, nothing with -q."""
from __future__ import annotations

import io

from compiler.tools.progress import PassBar, Progress, track


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


def test_pass_bar_draws_each_pipeline_on_a_terminal_and_nothing_elsewhere():
    from passes.base import PassTimes, observe_passes, run_pipeline
    from tests.tools.conftest import DIGITS
    from compiler.api import import_model
    g = import_model(DIGITS)
    names = ["fold_constants", "remove_identity", "dead_code"]
    tty, pipe = _Tty(), io.StringIO()
    with observe_passes(PassTimes()) as times, observe_passes(PassBar(stream=tty)), \
            observe_passes(PassBar(stream=pipe)), observe_passes(PassBar(stream=_Tty(), enabled=False)):
        run_pipeline(g, names)
        run_pipeline(g, names[:1])
    assert [n for n, _ in times.times] == names + names[:1]
    text = tty.getvalue()
    assert "passes [" in text and "3/3" in text and "1/1" in text and text.count("\n") == 2
    assert pipe.getvalue() == ""


def test_long_loops_inside_passes_draw_their_own_bar_on_a_terminal_only():
    """Calibration batches and the memory search's rollouts report through passes.base.steps: the
    CLI's bar draws them on a terminal; without an observer, or off a terminal, nothing is written."""
    import numpy as np

    from compiler.api import import_model
    from passes.base import observe_passes
    from passes.memory import Buffer
    from passes.memory_search import conflicts, greedy, tree_search
    from passes.quantize import calibrate
    from tests.tools.conftest import DIGITS
    g = import_model(DIGITS)
    batches = [[np.zeros(v.type.shape, v.type.dtype.numpy) for v in g.inputs] for _ in range(3)]
    items = [Buffer(("a",), 3, 0, 3), Buffer(("b",), 4, 2, 2), Buffer(("c",), 4, 2, 5),
             Buffer(("d",), 3, 3, 6), Buffer(("e",), 4, 5, 6)]
    tty, pipe = _Tty(), io.StringIO()
    with observe_passes(PassBar(stream=tty)), observe_passes(PassBar(stream=pipe)):
        calibrate(g, batches)
        tree_search(items, conflicts(items), greedy(items, conflicts(items)), bound=0, rollouts=20)
    text = tty.getvalue()
    assert "calibrating [" in text and "3/3" in text
    assert "memory search [" in text and "20/20" in text
    assert pipe.getvalue() == ""
    calibrate(g, batches)                       # no observer: nothing to draw on, no error
