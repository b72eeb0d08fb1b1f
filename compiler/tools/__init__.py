"""The `compile` verbs that work on a compiled artifact (`run`, `bench`, `report`) and what they
share: loading inputs against a model's signature, error handling, atomic output, progress."""

from __future__ import annotations

from collections.abc import Sequence


def dispatch(verb: str, argv: Sequence[str]) -> int:
    """`compile VERB ...` -> the verb's main; returns the exit code."""
    if verb == "run":
        from compiler.tools.run import run_main
        return run_main(argv)
    if verb == "bench":
        from compiler.tools.bench import bench_main
        return bench_main(argv)
    if verb == "report":
        from compiler.tools.report import report_main
        return report_main(argv)
    raise ValueError(f"unknown verb {verb!r}")
