"""CompiledModel: run, benchmark, save to and load from one `.dyc` file.

A .dyc is a zip archive (fixed timestamps, so equal inputs give equal bytes) holding
`manifest.json` (versions, target, signature, sha256 of every member), `graph.mlir` (the
optimized IR as text) and `lib.bin` (the backend's compiled library). Never a pickle.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import statistics
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from compiler.diagnostics import ArtifactError, InvalidInput, Unsupported
from compiler.ir import Graph
from compiler.target import Target
from compiler.types import DType, TensorType
from compiler.version import __version__

FORMAT = 1
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Signature:
    inputs: tuple[tuple[str, TensorType], ...]
    outputs: tuple[tuple[str, TensorType], ...]

    @classmethod
    def of(cls, g: Graph) -> Signature:
        return cls(tuple((v.name, v.type) for v in g.inputs), tuple((v.name, v.type) for v in g.outputs))

    def to_json(self) -> dict[str, Any]:
        def enc(items):
            return [{"name": n, "shape": list(t.shape), "dtype": t.dtype.value} for n, t in items]
        return {"inputs": enc(self.inputs), "outputs": enc(self.outputs)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Signature:
        def dec(items):
            return tuple((i["name"], TensorType(tuple(i["shape"]), DType.parse(i["dtype"]))) for i in items)
        return cls(dec(d["inputs"]), dec(d["outputs"]))

    def bind(self, args: Sequence[Any], kwargs: dict[str, Any]) -> list[np.ndarray]:
        """Match positional or by-name arrays to the inputs, checking shape and dtype."""
        names = [n for n, _ in self.inputs]
        if args and kwargs:
            raise InvalidInput("pass inputs either positionally or by name, not both")
        if kwargs:
            unknown, missing = sorted(set(kwargs) - set(names)), [n for n in names if n not in kwargs]
            if unknown or missing:
                raise InvalidInput(f"inputs by name: unknown {unknown}, missing {missing}; "
                                   f"the model takes {names}")
            args = [kwargs[n] for n in names]
        if len(args) != len(names):
            raise InvalidInput(f"the model takes {len(names)} input(s) ({', '.join(names)}), got {len(args)}")
        out = []
        for (name, t), a in zip(self.inputs, args):
            a = _to_numpy(a)
            if a.shape != t.shape or a.dtype != t.dtype.numpy:
                raise InvalidInput(f"input '{name}' must be {t.dtype.value}{list(t.shape)}, "
                                   f"got {a.dtype}{list(a.shape)}")
            out.append(np.require(a, requirements="C"))
        return out


def to_container(a: np.ndarray, dt: DType) -> np.ndarray:
    """An array of IR type `dt` as a backend holds it: a float8 / float4 as its bits in a uint8, an int4 /
    int2 (uint4 / uint2) as its value in an int8 (uint8); every other type as it is."""
    if dt.is_narrow_float:
        return np.require(a, requirements="C").view(np.uint8)
    if dt.is_int and dt.bits < 8:
        return a.astype(np.uint8 if dt.is_unsigned else np.int8)
    return a


def from_container(a: np.ndarray, dt: DType) -> np.ndarray:
    """The inverse of `to_container`: a backend's array as an array of IR type `dt`."""
    if dt.is_narrow_float:
        return np.require(a, requirements="C").view(dt.numpy)
    if dt.is_int and dt.bits < 8:
        return a.astype(dt.numpy)
    return a


def _to_numpy(a: Any) -> np.ndarray:
    if type(a).__module__.startswith("torch"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {"compiler": __version__, "numpy": np.__version__}
    for pkg in ("apache-tvm", "apache-tvm-ffi"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


class CompiledModel:
    """An executable model. `run(*arrays)` or `run(**by_name)` -> list of numpy arrays."""

    def __init__(self, executable: Any, signature: Signature, target: Target, backend: str,
                 graph_text: str, graph: Graph | None = None):
        self.executable = executable
        self.signature = signature
        self.target = target
        self.backend = backend
        self.graph_text = graph_text
        self.graph = graph              # the optimized IR (None after load)
        self.report = None              # per-layer quantization report (quantized compiles)
        self.memory_plan = None         # passes.memory.MemoryPlan of the final IR (None after load)
        self._memory: dict[str, Any] | None = None     # the manifest's memory object, after load
        self._energy: dict[str, Any] | None = None     # the manifest's energy object, after load
        self._kernels: dict[str, Any] | None = None    # the manifest's kernels object, after load

    @property
    def memory(self) -> dict[str, Any] | None:
        """The arena plan as the manifest records it: arena_bytes, lower_bound_bytes, ratio, planner,
        optimal (proven minimal), alignment, buffers, greedy_bytes, timeline, fast_tier and
        tvm_planner_bytes (tvm on llvm); None when plan_memory did not run."""
        if self.memory_plan is not None:      # + what the backend measured (tvm_planner_bytes)
            return {**self.memory_plan.to_json(), **getattr(self.executable, "memory_report", {})}
        return self._memory

    def memory_timeline(self, path: str | os.PathLike, *, tiered: bool = False) -> Path:
        """Draw the memory plan as a PNG at `path`: each buffer a rectangle in (time, address), the
        lower bound marked; `tiered`: the two-level mapping's placement (compiler.memory_timeline)."""
        from compiler.memory_timeline import draw
        if self.memory is None:
            raise Unsupported("this model has no memory plan (plan_memory did not run)")
        return draw(self.memory, path, tiered=tiered)

    @property
    def energy(self) -> dict[str, Any] | None:
        """The energy estimate of one inference (compiler.energy): pJ_per_inference, by_op, activations,
        totals, table, table_source, uncounted. Counted on the final IR when this process compiled it,
        read from the manifest after load; None for an artifact saved without one."""
        if self.graph is not None:
            from compiler.energy import estimate
            plan = self.memory_plan
            return estimate(self.graph, plan.arena_bytes if plan is not None else None)
        return self._energy

    @property
    def kernels(self) -> dict[str, Any] | None:
        """Which IR node each compiled kernel runs, with its op and operation and byte counts
        (compiler.tools.kernels): what the per-kernel profile is read against. None when the backend
        does not name its kernels (mlir) or the artifact was saved without it."""
        nodes = getattr(self.executable, "kernel_nodes", None)
        if self.graph is not None and nodes:
            from compiler.tools.kernels import kernel_facts
            return kernel_facts(self.graph, nodes)
        return self._kernels

    @property
    def input_names(self) -> list[str]:
        return [n for n, _ in self.signature.inputs]

    def run(self, *args: Any, **kwargs: Any) -> list[Any]:
        """Numpy (or torch) arrays in, a list of numpy arrays out (torch tensors if torch came in)."""
        outs = self.executable.run(self.signature.bind(args, kwargs))
        if any(type(a).__module__.startswith("torch") for a in (*args, *kwargs.values())):
            import torch
            return [torch.from_numpy(o) for o in outs]
        return outs

    __call__ = run

    def benchmark(self, *args: Any, warmup: int = 3, repeat: int = 20, **kwargs: Any) -> dict[str, float]:
        """Wall-clock latency of `run` in milliseconds: median, min, max, mean over `repeat` calls."""
        inputs = self.signature.bind(args, kwargs)
        for _ in range(warmup):
            self.executable.run(inputs)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            self.executable.run(inputs)
            times.append((time.perf_counter() - t0) * 1e3)
        return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
                "mean_ms": statistics.fmean(times), "repeat": repeat}

    def profile(self, *args: Any, runs: int = 5, **kwargs: Any) -> dict[str, Any]:
        """Time per kernel (tvm backend): {'wall_ms', 'kernels': [(name, calls, ms per run)]}."""
        prof = getattr(self.executable, "profile", None)
        if prof is None:
            raise Unsupported(f"profiling is available for the tvm backend on CPU, not {self.backend} "
                              f"on {self.target}")
        wall, rows = prof(self.signature.bind(args, kwargs), runs)
        return {"wall_ms": wall, "kernels": rows}

    # -- artifact -------------------------------------------------------------
    def manifest(self, members: dict[str, bytes]) -> dict[str, Any]:
        return {"format": FORMAT, "versions": versions(), "target": str(self.target),
                "backend": self.backend, "signature": self.signature.to_json(),
                "sha256": {k: hashlib.sha256(v).hexdigest() for k, v in sorted(members.items())},
                **({"memory": self.memory} if self.memory is not None else {}),
                **({"energy": self.energy} if self.energy is not None else {}),
                **({"kernels": self.kernels} if self.kernels is not None else {})}

    def to_bytes(self) -> bytes:
        members = {"graph.mlir": self.graph_text.encode(), "lib.bin": self.executable.library_bytes()}
        manifest = json.dumps(self.manifest(members), indent=2, sort_keys=True).encode()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in [("manifest.json", manifest), *sorted(members.items())]:
                info = zipfile.ZipInfo(name, _ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, data)
        return buf.getvalue()

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a failure leaves no partial file behind."""
        path = Path(path)
        data = self.to_bytes()
        fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def load(path: str | os.PathLike, *, threads: int | None = None) -> CompiledModel:
    """Load a .dyc; refuses corrupt files, hash mismatches and other compiler/TVM versions.
    `threads` overrides the CPU thread count the artifact was built with (`-num-threads`)."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"no such file: {path}")
    try:
        with zipfile.ZipFile(path) as z:
            manifest = json.loads(z.read("manifest.json"))
            members = {n: z.read(n) for n in ("graph.mlir", "lib.bin")}
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as e:
        raise ArtifactError(f"{path} is not a compiled model (.dyc): {e}") from None
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: artifact format {manifest.get('format')}, this compiler reads {FORMAT}")
    for name, data in members.items():
        if hashlib.sha256(data).hexdigest() != manifest["sha256"].get(name):
            raise ArtifactError(f"{path}: {name} does not match its hash; the file is corrupt or modified")
    here = versions()
    diff = {k: (v, here.get(k)) for k, v in manifest["versions"].items() if not _compatible(k, v, here.get(k))}
    if diff:
        desc = ", ".join(f"{k} {a} (installed: {b})" for k, (a, b) in diff.items())
        raise ArtifactError(f"{path} was built with {desc}", hint="recompile the model with this installation")
    target = Target.parse(manifest["target"])
    _check_host(path, target)
    if threads is not None:
        if threads < 1:
            raise InvalidInput(f"threads must be >= 1, got {threads}")
        target = replace(target, num_threads=threads)
    signature = Signature.from_json(manifest["signature"])
    from compiler.backends import get_loader
    exe = get_loader(manifest["backend"]).load(members["lib.bin"], signature, target)
    cm = CompiledModel(exe, signature, target, manifest["backend"], members["graph.mlir"].decode())
    cm._memory = manifest.get("memory")
    cm._energy = manifest.get("energy")
    cm._kernels = manifest.get("kernels")
    return cm


def _compatible(package: str, built: str, installed: str | None) -> bool:
    """Whether an artifact built with `package` `built` loads with `installed`: the compiler and TVM
    exactly (the library's ABI); numpy by its major version (it only carries the arrays)."""
    if package == "numpy" and installed is not None:
        return built.split(".")[0] == installed.split(".")[0]
    return built == installed


def _check_host(path: Path, target: Target) -> None:
    """Refuse a CPU artifact whose -mcpu has instruction-set extensions (AVX-512, VNNI, AMX...) this
    host lacks: running it would die on an illegal instruction instead of saying why."""
    if target.kind != "llvm":
        return
    from compiler.host import host_cpu_name, missing_features
    missing = missing_features(target.cpu)
    if missing:
        raise ArtifactError(f"{path} was built for '{target}', which uses CPU features this host "
                            f"({host_cpu_name()}) lacks: {', '.join(missing)}",
                            hint="recompile the model here (--target llvm builds for this host's CPU)")
