"""Code generators: Graph -> executable. Only modules here may import tvm or iree."""
from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any

from compiler.diagnostics import Unsupported

BACKENDS = ("tvm", "mlir")


def get_backend(name: str) -> Any:
    """The backend object by name, imported on first use (tvm is slow to import)."""
    if name == "tvm":
        from compiler.backends.tvm import BACKEND
        return BACKEND
    if name == "mlir":
        try:
            from compiler.backends.mlir import BACKEND as MLIR
        except ImportError:
            raise Unsupported("the mlir backend needs iree-base-compiler and iree-base-runtime",
                              hint="pip install 'dyc[mlir]'") from None
        return MLIR
    raise Unsupported(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")


def get_loader(name: str) -> Any:
    """What loads a saved artifact of backend `name` (its `load(library, signature, target)`): the backend
    itself where its compiler is installed (its executables also emit code and profile), else its
    runtime-only loader, as in a runtime bundle: tvm_runtime (tvm_ffi + libtvm_runtime.so) or
    mlir_runtime (iree.runtime). DYC_RUNTIME_ONLY=1 picks the runtime loaders everywhere."""
    needs = {"tvm": ("tvm", "compiler.backends.tvm"), "mlir": ("iree.compiler", "compiler.backends.mlir")}
    if name in needs and (os.environ.get("DYC_RUNTIME_ONLY") == "1" or not all(map(_installed, needs[name]))):
        return importlib.import_module(f"compiler.backends.{name}_runtime")
    return get_backend(name)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:         # its parent package is missing
        return False
