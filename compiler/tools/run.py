"""`compile run MODEL.dyc`: run a compiled model once on inputs from files (or random data of
its signature), print a summary of each output and optionally save them all to an .npz."""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from compiler.diagnostics import InvalidInput
from compiler.tools.common import guarded, load_artifact, write_atomic
from compiler.tools.inputs import describe, gather_inputs

EPILOG = """\
examples:
  compile run model.dyc --random                         random inputs of the model's signature
  compile run model.dyc --input input=x.npy -o out.npz   one input from a file, outputs saved
  compile run model.dyc --input inputs.npz               every input by name from one .npz

exit codes: 0 ok, 2 invalid artifact or input (named, with what the model expects),
            3 unsupported (e.g. a cuda artifact without a GPU), 1 internal error
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compile run", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Run a compiled model (.dyc) once and summarize its outputs.",
                                epilog=EPILOG)
    p.add_argument("model", help="the compiled model (.dyc)")
    add_input_flags(p)
    p.add_argument("-o", "--output", metavar="OUT.npz",
                   help="save every output, by output name, to an .npz (or .npy for a one-output model)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads (default: the artifact's -num-threads, else all cores)")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    return p


def add_input_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", action="append", default=[], metavar="NAME=FILE.npy|FILE.npz",
                   help="an input from a .npy file, or every input by name from an .npz (also "
                        "NAME=FILE.npz for one array of it). Repeatable")
    p.add_argument("--random", action="store_true",
                   help="random data for every input not given by --input (floats: standard normal; "
                        "integers: 0 or 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of --random (default 0)")


def summarize(name: str, a: np.ndarray) -> str:
    """One line of statistics and the leading values of an output."""
    head = f"output '{name}' {a.dtype}{list(a.shape)}"
    if a.size == 0:
        return head + ": empty"
    if a.dtype == np.bool_:
        stats = f"true {int(a.sum())} of {a.size}"
    else:
        f = a.astype(np.float64)
        finite = f[np.isfinite(f)]
        stats = (f"min {finite.min():.6g}  max {finite.max():.6g}  mean {finite.mean():.6g}"
                 if finite.size else "no finite values")
        if finite.size != f.size:
            stats += f"  ({f.size - finite.size} inf/nan)"
        if a.ndim == 2 and a.dtype.kind == "f" and a.shape[1] > 1 and a.shape[0] <= 8:
            stats += f"  argmax {a.argmax(1).tolist()}"
    values = np.array2string(a, threshold=12, edgeitems=3, precision=5, separator=", ")
    values = "\n".join("  " + ln for ln in values.splitlines())
    return f"{head}: {stats}\n{values}"


def save_outputs(path: Path, names: Sequence[str], outs: Sequence[np.ndarray]) -> None:
    if path.suffix == ".npy":
        if len(outs) != 1:
            raise InvalidInput(f"--output {path}: the model has {len(outs)} outputs; an .npy holds one",
                               hint="save them to an .npz")
        write_atomic(path, lambda f: np.save(f, outs[0]))
    else:
        write_atomic(path, lambda f: np.savez(f, **dict(zip(names, outs))))


def _check_output_path(path: Path) -> None:
    if path.suffix not in (".npz", ".npy"):
        raise InvalidInput(f"--output {path}: expected a file name ending in .npz (or .npy)")
    if not (path.parent if str(path.parent) else Path(".")).is_dir():
        raise InvalidInput(f"--output {path}: folder {path.parent} does not exist")


def run(args: argparse.Namespace) -> int:
    out_path = Path(args.output) if args.output else None
    if out_path is not None:
        _check_output_path(out_path)
    cm = load_artifact(args.model, args.threads)
    inputs, sources = gather_inputs(cm.signature.inputs, args.input, args.random, args.seed)
    for (name, t), where in zip(cm.signature.inputs, sources):
        print(f"input '{name}' {describe(t)} ({where})", file=sys.stderr)
    t0 = time.perf_counter()
    outs = cm.executable.run(inputs)
    ms = (time.perf_counter() - t0) * 1e3
    names = [n for n, _ in cm.signature.outputs]
    for name, o in zip(names, outs):
        print(summarize(name, o))
    print(f"ran {Path(args.model).name} on {cm.target} in {ms:.3f} ms (first call, includes setup)",
          file=sys.stderr)
    if out_path is not None:
        save_outputs(out_path, names, outs)
        print(f"wrote {out_path} ({', '.join(names)})", file=sys.stderr)
    return 0


def run_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(lambda: run(args), args.debug)
