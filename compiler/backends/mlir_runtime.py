"""The MLIR backend's run path on IREE's runtime alone (`iree.runtime`, not `iree.compiler`): a vmfb on
IREE's CPU drivers (`local-sync` for one thread, `local-task` otherwise) or its CUDA driver. The
backend (compiler/backends/mlir.py) builds what this runs; a runtime bundle loads artifacts with it.
$DYC_IREE_FLAGS passes IREE runtime flags (e.g. `--cuda_async_allocations=false`: the CUDA driver allocates
transients synchronously instead of stream-ordered) before the first device is made."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from compiler.diagnostics import BackendToolError, InvalidInput, Unsupported
from compiler.target import Target
from compiler.types import DType

_DEVICES: dict[str, object] = {}
FLAGS_ENV = "DYC_IREE_FLAGS"     # IREE runtime flags, parsed before the first device is made
_parsed: list[str] | None = None


def _parse_env_flags() -> None:
    """$DYC_IREE_FLAGS (space-separated IREE runtime flags, e.g. `--cuda_async_allocations=false`), once."""
    import os
    import shlex

    import iree.runtime as rt
    global _parsed
    if _parsed is not None:
        return
    flags = shlex.split(os.environ.get(FLAGS_ENV, ""))
    if flags:
        try:
            rt.flags.parse_flags(*flags)
        except Exception as e:  # noqa: BLE001  (IREE names the flag it did not recognize)
            raise InvalidInput(f"${FLAGS_ENV}: {_first_lines(str(e), 1)}",
                               hint="IREE runtime flags, e.g. --cuda_async_allocations=false") from None
    _parsed = flags


def _first_lines(text: str, n: int = 8) -> str:
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    return "\n".join(lines[:n]) if lines else "(no diagnostics)"


def config(target: Target) -> Any:
    """The IREE runtime configuration (driver and device) for `target`, made once per process."""
    import iree.runtime as rt
    _parse_env_flags()
    if target.kind == "cuda":
        if "cuda" not in _DEVICES:
            try:
                _DEVICES["cuda"] = rt.Config(device=rt.get_device("cuda"))
            except Exception as e:  # noqa: BLE001
                raise Unsupported("running a cuda executable needs an NVIDIA GPU; none is usable here "
                                  f"({_first_lines(str(e), 1)})",
                                  hint="save the artifact (library_bytes / .dyc) and run it on a GPU "
                                       "machine, or build for --target llvm") from None
        return _DEVICES["cuda"]
    n = target.threads()
    key = "local-sync" if n == 1 else f"local-task:{n}"
    if key not in _DEVICES:
        if n == 1:
            _DEVICES[key] = rt.Config("local-sync")
        else:
            rt.flags.parse_flags(f"--task_topology_group_count={n}")
            _DEVICES[key] = rt.Config("local-task")
    return _DEVICES[key]


_SUB_BYTE = (DType.I4, DType.U4, DType.I2, DType.U2)


def to_abi(x: np.ndarray, dt: DType | None = None) -> np.ndarray:
    """An array of IR type `dt` (by default its own) as the vmfb takes it: integers signless (an unsigned
    array viewed as signed), bfloat16 as its bits in an int16, float8 / float4 as their bits in an int8,
    int4 / int2 as their value in an int8, uint4 / uint2 as theirs in a uint8 viewed as int8."""
    x = np.require(x, requirements="C")          # ascontiguousarray would make a 0-d input 1-d
    dt = dt or DType.from_numpy(x.dtype)
    if dt is DType.BF16:
        return x.view(np.int16)
    if dt.is_narrow_float:
        return x.view(np.int8)
    if dt in _SUB_BYTE:
        return x.astype(np.uint8).view(np.int8) if dt.is_unsigned else x.astype(np.int8)
    return x.view(f"int{dt.bits}") if dt.is_unsigned else x


def from_abi(a: np.ndarray, dt: DType) -> np.ndarray:
    """The inverse of `to_abi`: a vmfb result as the array of IR type `dt` the interpreter gives."""
    a = np.require(a, requirements="C")
    if dt is DType.BF16 or dt.is_narrow_float:
        return a.view(dt.numpy)
    if dt in _SUB_BYTE:
        return (a.view(np.uint8) if dt.is_unsigned else a).astype(dt.numpy)
    if dt.is_unsigned:
        return a.view(dt.numpy)
    return a.astype(np.bool_) if dt is DType.BOOL else a


class VmfbExecutable:
    """A compiled vmfb; runs on IREE's CPU drivers (or CUDA where a GPU exists). It cannot emit code:
    compiler/backends/mlir.py's MLIRExecutable, built from the graph, can."""

    def __init__(self, vmfb: bytes, target: Target, out_dtypes: Sequence[DType]):
        self._vmfb, self._target = vmfb, target
        self._fn = None
        self._out_dtypes = list(out_dtypes)

    def _function(self):
        if self._fn is None:
            import iree.runtime as rt
            cfg = config(self._target)
            sc = rt.SystemContext(config=cfg)
            try:
                sc.add_vm_module(rt.VmModule.copy_buffer(sc.instance, self._vmfb))
            except Exception as e:  # noqa: BLE001
                raise BackendToolError(f"iree could not load the module: {_first_lines(str(e))}") from None
            self._ctx = sc
            self._fn = sc.modules.module["main"]
        return self._fn

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        fn = self._function()
        res = fn(*(to_abi(np.asarray(x)) for x in inputs))
        if not isinstance(res, (tuple, list)):
            res = [res]
        return [np.array(from_abi(np.asarray(r.to_host() if hasattr(r, "to_host") else r), dt))
                for r, dt in zip(res, self._out_dtypes)]

    def library_bytes(self) -> bytes:
        return self._vmfb

    def source(self, kind: str) -> str:
        raise Unsupported(f"--emit {kind} needs the model, not a loaded library",
                          hint="compile the model again to see its generated code")


def load(library: bytes, signature: Any, target: Target) -> VmfbExecutable:
    """An executable from a .dyc's lib.bin (the vmfb); it can run but not emit mlir/ptx."""
    if target.kind not in ("llvm", "cuda"):
        raise Unsupported(f"target {target.kind} is not supported by the mlir backend")
    return VmfbExecutable(bytes(library), target, [t.dtype for _, t in signature.outputs])
