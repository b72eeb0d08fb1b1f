"""What the verbs share: the error guard (typed errors -> message and exit code, anything else
-> an internal-error report), atomic file output and loading an artifact with a thread count."""
from __future__ import annotations

import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

from compiler.diagnostics import ArtifactError, CompileError, InvalidInput


def guarded(fn: Callable[[], int], debug: bool = False) -> int:
    """Run a verb's body; return its exit code. Same contract as `compile MODEL.onnx`: a
    CompileError prints its short message and exits with its code (2 invalid, 3 unsupported,
    ...), an unexpected exception is an internal error (exit 1) with a crash file."""
    try:
        return fn()
    except CompileError as e:
        if debug:
            traceback.print_exc()
        print(e.render(), file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001  (anything else is our bug)
        fd, path = tempfile.mkstemp(prefix="compile-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(f"argv: {sys.argv}\n\n{traceback.format_exc()}")
        if debug:
            traceback.print_exc()
        print(f"internal compiler error: {sys.exc_info()[1]!r}\n  please report it with {path}",
              file=sys.stderr)
        return 1


def write_atomic(path: str | os.PathLike, write: Callable[[object], None]) -> Path:
    """Call write(binary file) on a temporary file next to `path`, then rename it into place:
    a failure leaves neither a partial file nor the temporary one."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InvalidInput(f"cannot write {path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_artifact(path: str | os.PathLike, threads: int | None = None):
    """compiler.load, refusing a path that is not a .dyc before importing any backend."""
    from compiler.runtime import load
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        raise ArtifactError(f"{path} is an ONNX model, not a compiled one",
                            hint=f"compile it first: compile {path} -o {path.stem}.dyc")
    return load(path, threads=threads)


def is_integer_graph(graph_text: str) -> bool:
    """Whether the optimized IR computes in integers (it holds quantized conv/matmul ops)."""
    return any(f'"q.{op}"' in graph_text for op in ("conv", "matmul", "requant"))
