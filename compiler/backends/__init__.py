"""Code generators: Graph -> executable. Only modules here may import tvm or iree."""
from __future__ import annotations

from typing import Any

from compiler.diagnostics import Unsupported

BACKENDS = ("tvm",)


def get_backend(name: str) -> Any:
    """The backend object by name, imported on first use (tvm is slow to import)."""
    if name == "tvm":
        from compiler.backends.tvm import BACKEND
        return BACKEND
    raise Unsupported(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")
