"""`compile --help` names every verb with an example, and each verb's own --help has examples."""
from __future__ import annotations

import pytest

from compiler.cli import EPILOG, VERBS


def test_compile_help_gives_every_verb_an_example():
    for verb in (*VERBS, "tune-costmodel"):
        assert f"\n  compile {verb} " in EPILOG, verb
    assert "\n  compile model.onnx " in EPILOG


@pytest.mark.parametrize("verb", VERBS)
def test_each_verb_help_has_examples(verb, capsys):
    from compiler.tools import dispatch
    with pytest.raises(SystemExit) as e:
        dispatch(verb, ["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and f"compile {verb} model.dyc" in out and "examples:" in out
