"""The Python API: compile(model) -> CompiledModel; import_model and optimize for finer control."""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from compiler.diagnostics import InvalidModel, Unsupported
from compiler.ir import Graph
from compiler.pipeline import pipeline_for
from compiler.runtime import CompiledModel, Signature
from compiler.target import Target

Progress = Callable[[str], None]


def _is_torch_module(model: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def import_model(model: Any, input_shapes: dict[str, Sequence[int]] | None = None,
                 example_inputs: Any = None) -> Graph:
    """An ONNX path or ModelProto, or a torch.nn.Module with `example_inputs` (or an already
    imported Graph) -> Graph."""
    if isinstance(model, Graph):
        return model
    if _is_torch_module(model):
        if example_inputs is None:
            raise InvalidModel(f"compiling a {type(model).__name__} needs example_inputs=(tensor, ...)")
        from frontends.torch import load_torch
        return load_torch(model, example_inputs)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if path.suffix.lower() == ".dyc":
            raise InvalidModel(f"{path} is already compiled; load it with compiler.load()")
        from frontends.onnx import load_onnx
        return load_onnx(path, _shapes(input_shapes))
    if type(model).__name__ == "ModelProto":
        from frontends.onnx import load_onnx
        return load_onnx(model, _shapes(input_shapes))
    raise Unsupported(f"cannot compile a {type(model).__name__}; expected an ONNX file path, an "
                      "onnx.ModelProto or a torch.nn.Module")


def _shapes(shapes: dict[str, Sequence[int]] | None) -> dict[str, tuple[int, ...]] | None:
    return {k: tuple(int(d) for d in v) for k, v in shapes.items()} if shapes else None


def optimize(g: Graph, target: Target | str = "llvm", *, passes: Sequence[str] | None = None,
             disable_passes: Sequence[str] = (), print_after: Sequence[str] = (),
             verify_each: bool = True, dump_dir: str | os.PathLike | None = None) -> Graph:
    """Run the target's pass pipeline (edited by `passes` / `disable_passes`)."""
    from passes import PassContext, run_pipeline
    from passes.base import resolve
    target = Target.parse(target) if isinstance(target, str) else target
    names = resolve(pipeline_for(target), passes, disable_passes)
    resolve(names, list(print_after))      # validates the names
    ctx = PassContext(verify_each=verify_each, print_after=frozenset(print_after),
                      dump_dir=Path(dump_dir) if dump_dir else None)
    return run_pipeline(g, names, ctx)


def compile(model: Any, target: Target | str = "llvm", *, backend: str = "tvm",
            example_inputs: Any = None, input_shapes: dict[str, Sequence[int]] | None = None,
            passes: Sequence[str] | None = None, disable_passes: Sequence[str] = (),
            print_after: Sequence[str] = (), verify_each: bool = True,
            dump_dir: str | os.PathLike | None = None,
            progress: Progress | None = None) -> CompiledModel:
    """Compile a model for `target` ("llvm", "llvm -mcpu=znver4 -num-threads=1") and return a
    CompiledModel. `model` is an ONNX path or ModelProto, or a torch.nn.Module traced on
    `example_inputs`. Raises InvalidModel (bad file), InvalidInput, Unsupported (op or feature),
    BackendToolError."""
    from compiler.backends import get_backend
    say = progress or (lambda _msg: None)
    target = Target.parse(target) if isinstance(target, str) else target
    be = get_backend(backend)
    t0 = time.perf_counter()
    g = import_model(model, input_shapes, example_inputs)
    say(f"imported {len(g.nodes)} nodes in {time.perf_counter() - t0:.2f}s")
    t0 = time.perf_counter()
    g = optimize(g, target, passes=passes, disable_passes=disable_passes, print_after=print_after,
                 verify_each=verify_each, dump_dir=dump_dir)
    say(f"optimized to {len(g.nodes)} nodes in {time.perf_counter() - t0:.2f}s")
    missing = sorted({n.op.name for n in g.nodes} - {op.name for op in be.supported_ops()})
    if missing:
        raise Unsupported(f"backend {backend} cannot lower: {', '.join(missing)}")
    t0 = time.perf_counter()
    exe = be.build(g, target)
    say(f"generated code for {target} in {time.perf_counter() - t0:.2f}s")
    return CompiledModel(exe, Signature.of(g), target, backend, str(g), g)


def stderr_progress(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)
