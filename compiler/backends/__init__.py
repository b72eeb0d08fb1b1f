"""Code generators: Graph -> executable. Only modules here may import tvm or iree."""
from __future__ import annotations

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
