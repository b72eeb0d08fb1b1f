"""The tunable-kernel interface: what the cost model may ask of a kernel, with no backend imported.

A tunable kernel kind ("conv", "qconv", "matmul", "qmatmul", "qbmm", "attention") is described by a
:class:`TunableKernel`: the shape-level description the features are computed from, the kernel's own
(hand-written) tile, its argument shapes, how to build it with a tile, and how to rebuild its spec from
the JSON fields the cost model's data stores. A backend registers one per kind (:func:`register`); the
module that does so is the *provider*, named by :data:`PROVIDER` and imported by name the first time a
kernel is asked for: `costmodel/` imports no backend, and no backend imports `costmodel/`.

The provider module also offers what measuring needs (:class:`Provider`): which schedule a built
kernel got, a target for this machine, timing built kernels on it, and building a whole graph.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any, Protocol, cast

PROVIDER = "compiler.backends.tvm_kernels.tunable"   # the TVM kernels; $DYC_TUNABLE_PROVIDER overrides

Shapes = list[tuple[tuple[int, ...], str]]           # (shape, dtype) per kernel parameter, output last


class TunableKernel(Protocol):
    """One kind of kernel whose register tile the cost model chooses. ``spec`` is a frozen dataclass of
    ``spec_type``; a tile is a tuple of ints whose meaning the kind documents."""

    kind: str
    spec_type: type

    def describe(self, spec: Any) -> dict[str, float]:
        """Shape-level description (rows, cols, reduction length, blocks, flops, bytes, ...)."""
        ...

    def default_tile(self, spec: Any) -> tuple[int, ...]:
        """The kernel's hand-written tile (what it builds with when given none)."""
        ...

    def arg_shapes(self, spec: Any) -> Shapes:
        """(shape, dtype) of every parameter of the built kernel, output last."""
        ...

    def build(self, spec: Any, tile: tuple[int, ...] | None = None) -> Any:
        """The scheduled kernel with ``tile`` (None: the default tile)."""
        ...

    def from_fields(self, fields: dict[str, Any]) -> Any:
        """The spec whose (JSON-decoded) dataclass fields are ``fields``; fields the spec does not know are
        dropped, so rows written by a newer spec still load."""
        ...


class Provider(Protocol):
    """The module-level functions of a provider, beyond registering its kernels."""

    def schedule_of(self, func: Any) -> str | None:
        """Which schedule a built kernel got ("tiled", "simple", "none"), None if it does not say."""
        ...

    def host_target(self, num_cores: int | None = None) -> Any:
        """The provider's target for this machine with ``num_cores`` threads."""
        ...

    def time_kernels(self, funcs: Sequence[Any], shapes: Shapes, target: Any, repeat: int,
                     min_repeat_ms: float, interleaved: bool) -> list[list[float]]:
        """Seconds per call of each built kernel (``repeat`` runs each), compiled for ``target``."""
        ...

    def toolchain(self) -> dict[str, str]:
        """Name -> version of the code generator (recorded with every measurement)."""
        ...

    def build_graph(self, g: Any, target: Any) -> Any:
        """An executable of the graph ``g`` (``run(inputs)``), built for ``target``."""
        ...

    def shift_kernel(self, spec: Any, terms: int, tile: tuple[int, ...] | None = None) -> tuple[Any, Shapes]:
        """(built kernel, argument shapes) of the shift-and-add kernel that runs `terms`-term power-of-two
        weights of the layer the int8 ``qconv`` / ``qmatmul`` kernel of ``spec`` runs, with ``tile``."""
        ...

    def cpu_timer(self, func: Any, shapes: Shapes, target: Any, min_s: float = 0.05) -> Any:
        """A callable giving the CPU seconds of this process per call of the built kernel ``func`` (a loop of
        >= ``min_s`` s); needs a runtime of 1 thread (the kernel then runs on the calling thread)."""
        ...


_kinds: dict[str, TunableKernel] = {}
_types: dict[type, TunableKernel] = {}


def register(kernel: TunableKernel) -> TunableKernel:
    """Make ``kernel`` the tunable kernel of its kind and of its spec type."""
    _kinds[kernel.kind] = kernel
    _types[kernel.spec_type] = kernel
    return kernel


def provider() -> Provider:
    """The provider module (imported, and so registered, on first use)."""
    return cast(Provider, importlib.import_module(os.environ.get("DYC_TUNABLE_PROVIDER") or PROVIDER))


def kernel(kind: str) -> TunableKernel:
    """The tunable kernel of ``kind``. Raises KeyError for an unknown kind."""
    if kind not in _kinds:
        provider()
    if kind not in _kinds:
        raise KeyError(f"no tunable kernel of kind {kind!r}; known: {', '.join(sorted(_kinds))}")
    return _kinds[kind]


def kernel_of(spec: Any) -> TunableKernel:
    """The tunable kernel ``spec`` describes. Raises TypeError when no registered kernel takes it."""
    if type(spec) not in _types:
        provider()
    if type(spec) not in _types:
        raise TypeError(f"no tunable kernel takes a {type(spec).__name__}")
    return _types[type(spec)]
