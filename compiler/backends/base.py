"""What every backend provides. A backend compiles a verified Graph for a Target into an
Executable; the runtime wraps it in a CompiledModel and stores its library bytes in the artifact."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from compiler.ir import Graph
from compiler.ops.registry import OpDef
from compiler.target import Target

if TYPE_CHECKING:
    from compiler.runtime import Signature


class NotFusable(Exception):
    """A fused node's body asks for something its one-kernel lowering cannot do; the node is lowered op by op."""


class Executable(Protocol):
    """A compiled model, ready to run on this machine (or only to be saved, for a GPU target
    on a host without a GPU)."""

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]: ...

    def library_bytes(self) -> bytes:
        """The compiled library as bytes (stored in the .dyc artifact)."""
        ...

    def source(self, kind: str) -> str:
        """Generated code as text: kind in the backend's EMIT_KINDS."""
        ...


class Backend(Protocol):
    name: str
    EMIT_KINDS: tuple[str, ...]

    def supported_ops(self) -> frozenset[OpDef]: ...

    def build(self, g: Graph, target: Target) -> Executable: ...

    def load(self, library: bytes, signature: "Signature", target: Target) -> Executable:
        """Rebuild an Executable from `library_bytes()`; `signature` gives input and output types."""
        ...
