"""User-facing errors. Each carries an exit code (DESIGN.md: 2 invalid, 3 unsupported,
4 backend tool failed, 5 numerics mismatch, 1 internal) and renders as a short message."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceLoc:
    """Where a node came from: the model file and the original node name."""

    file: str | None = None
    node: str | None = None
    op: str | None = None

    def __str__(self) -> str:
        parts = [self.file or "<model>"]
        if self.node is not None:
            parts.append(f"node '{self.node}'")
        if self.op is not None:
            parts.append(f"op {self.op}")
        return ", ".join(parts)


class CompileError(Exception):
    """Base of every error a user can cause. `str(e)` is the full rendered message."""

    code = 1
    kind = "error"

    def __init__(self, message: str, loc: SourceLoc | None = None, hint: str | None = None):
        self.message, self.loc, self.hint = message, loc, hint
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.kind}: {self.message}"]
        if self.loc is not None:
            lines.append(f"  --> {self.loc}")
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


class InvalidModel(CompileError):
    """The model file or graph is malformed (exit code 2)."""

    code = 2
    kind = "invalid model"


class InvalidInput(CompileError):
    """Run-time inputs do not match the compiled signature (exit code 2)."""

    code = 2
    kind = "invalid input"


class Unsupported(CompileError):
    """A valid model uses an op or feature we do not support (exit code 3)."""

    code = 3
    kind = "unsupported"


class BackendToolError(CompileError):
    """A code generator (TVM, IREE, nvcc) failed (exit code 4)."""

    code = 4
    kind = "backend failed"


class NumericsMismatch(CompileError):
    """`--check` found the executable disagreeing with the reference interpreter (exit code 5)."""

    code = 5
    kind = "numerics mismatch"


class ArtifactError(CompileError):
    """A saved artifact is corrupt, tampered with or from another version (exit code 2)."""

    code = 2
    kind = "invalid artifact"
