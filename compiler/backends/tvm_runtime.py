"""The TVM backend's load path on TVM's runtime library alone: a .dyc's shared library on the Relax
VM through `tvm_ffi` and libtvm_runtime.so (plus libtvm_runtime_cuda.so for cuda), with neither the
`tvm` Python package nor libtvm_compiler.so. A runtime bundle (compiler/tools/runtime_bundle.py)
runs this; `compiler.backends.get_loader` picks it where apache-tvm is not installed.

The libraries are looked for in $TVM_LIBRARY_PATH, then in `lib/` beside the `compiler/` package (a
runtime bundle), then in the installed apache-tvm's `tvm/lib/` (found without importing tvm).

A cuda library built on a GPU-less host holds CUDA C, which TVM's CUDA runtime compiles when it
loads the module, through the global function `tvm_callback_cuda_compile`. Registered here, it reads
the kernels from the cache $DYC_CUDA_CACHE (default ~/.cache/dyc/cuda), file `cache_name(code,
arch)` (benchmarks/gpu_prepare.py fills it ahead of time), or else compiles them with nvcc.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# NOTE: with torch installed, importing tvm_ffi may JIT-compile a torch DLPack addon; a runtime compiles
# nothing (and needs no torch interop)
os.environ.setdefault("TVM_FFI_DISABLE_TORCH_C_DLPACK", "1")
import tvm_ffi

from compiler.diagnostics import BackendToolError, Unsupported
from compiler.host import request_amx
from compiler.runtime import from_container, to_container
from compiler.target import Target
from compiler.types import DType

# The arena table that the executable's `arena_layout` returns (tvm_arena.arena_table): one row per
# planned buffer: offset, index in ARENA_DTYPES, rank, dims (padded to ARENA_MAX_RANK).
ARENA_DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                "int64", "uint64", "bool", "bfloat16")
ARENA_MAX_RANK = 8
ALIGNMENT = 64          # TVM's kernels assume 64-byte aligned tensors: an unaligned one can crash them
_CPU, _CUDA = 1, 2      # DLPack device types
_POOLED = 2             # the VM's pooled allocator
NO_GPU_HINT = "run it on a machine with an NVIDIA GPU and its driver, or compile with --target llvm"

_libs: dict[str, ctypes.CDLL] = {}
_lock = threading.Lock()
_jit_arch: list[str] = ["sm_80"]                # the arch of the cuda module being loaded
_current_threads: list[int | None] = [None]     # the CPU thread pool is process-wide


def library_dirs() -> list[Path]:
    """Where libtvm_runtime.so is looked for, in order."""
    dirs = [Path(os.environ["TVM_LIBRARY_PATH"])] if os.environ.get("TVM_LIBRARY_PATH") else []
    dirs.append(Path(__file__).resolve().parents[2] / "lib")
    spec = importlib.util.find_spec("tvm")
    if spec is not None and spec.submodule_search_locations:
        dirs += [Path(p) / "lib" for p in spec.submodule_search_locations]
    return dirs


def _load_library(name: str, mode: int) -> ctypes.CDLL:
    with _lock:
        if name not in _libs:
            paths = [d / f"lib{name}.so" for d in library_dirs()]
            path = next((p for p in paths if p.exists()), None)
            if path is None:
                looked = ", ".join(str(p.parent) for p in paths)
                raise Unsupported(f"lib{name}.so not found (looked in {looked})",
                                  hint="install apache-tvm, use a runtime bundle (make runtime-bundle), "
                                       "or set TVM_LIBRARY_PATH to the folder holding it")
            # NOTE: TVM_NUM_THREADS sizes the thread pool at its first use (see compiler/backends/tvm.py)
            os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))
            _libs[name] = ctypes.CDLL(str(path), mode)
        return _libs[name]


def _runtime() -> None:
    """libtvm_runtime.so, loaded once, its symbols global (as `tvm` loads it); AMX state asked for where the
    host has it (a kernel built for an AMX CPU may use the tiles)."""
    _load_library("tvm_runtime", ctypes.RTLD_GLOBAL)
    request_amx()


def _cuda_runtime() -> None:
    """libtvm_runtime_cuda.so (the CUDA device API and module loader), or Unsupported saying why."""
    _runtime()
    try:
        _load_library("tvm_runtime_cuda", ctypes.RTLD_LOCAL)
    except OSError as e:        # no libcuda.so.1 (no driver) or no libcudart
        raise Unsupported(f"running a cuda executable needs an NVIDIA GPU and its driver: {e}",
                          hint=NO_GPU_HINT) from None
    try:
        found = _func("runtime.GetDeviceAttr")(_CUDA, 0, 0)      # 0 = kExist
    except Exception as e:  # noqa: BLE001  (the CUDA driver failed to start)
        raise Unsupported(f"running a cuda executable needs a working NVIDIA GPU: {e}",
                          hint=NO_GPU_HINT) from None
    if not found:
        raise Unsupported("running a cuda executable needs an NVIDIA GPU (none found)", hint=NO_GPU_HINT)
    tvm_ffi.register_global_func("tvm_callback_cuda_compile", lambda code: cuda_binary(code, _jit_arch[0]),
                                 override=True)


def _func(name: str) -> Any:
    return tvm_ffi.get_global_func(name)


# -- CUDA kernels: the JIT callback and its cache ---------------------------------------------------
def cuda_cache_dir() -> Path:
    return Path(os.environ.get("DYC_CUDA_CACHE") or Path.home() / ".cache" / "dyc" / "cuda")


def cache_name(code: str, arch: str) -> str:
    """The cache file of the kernels compiled from CUDA source `code` for `arch` (e.g. sm_90)."""
    return f"{hashlib.sha256(code.encode()).hexdigest()}-{arch}.fatbin"


def nvcc_command(src: str, out: str, arch: str) -> list[str]:
    """nvcc as TVM's own callback (tvm.support.nvcc, nvcc mode) runs it: SASS for `arch` + its PTX."""
    cc = arch.removeprefix("sm_")
    return ["nvcc", "--fatbin", "-O3", "-gencode", f"arch=compute_{cc},code=[sm_{cc},compute_{cc}]",
            "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
            "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
            "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math", "-o", out, src]


def cuda_binary(code: str, arch: str) -> bytes:
    """The kernels of `code` for `arch`: from the cache, else compiled with nvcc (and cached)."""
    path = cuda_cache_dir() / cache_name(code, arch)
    if path.exists():
        return path.read_bytes()
    if shutil.which("nvcc") is None:
        raise RuntimeError(f"this cuda artifact holds CUDA C: its kernels are not in the cache ({path}) "
                           "and nvcc is not on PATH to compile them")
    with tempfile.TemporaryDirectory() as d:
        src, out = os.path.join(d, "kernels.cu"), os.path.join(d, "kernels.fatbin")
        Path(src).write_text(code)
        r = subprocess.run(nvcc_command(src, out, arch), capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"nvcc failed on the artifact's CUDA C: {r.stderr[-2000:]}")
        data = Path(out).read_bytes()
    with contextlib.suppress(OSError):      # a read-only cache is only slower
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return data


# -- tensors ---------------------------------------------------------------------------------------
def _empty(shape: Sequence[int], dtype: str, device: tvm_ffi.Device) -> Any:
    return _func("runtime.TVMTensorAllocWithScope")(tvm_ffi.Shape(shape), tvm_ffi.dtype(dtype), device, None)


def _numpy_dtype(dtype: str) -> np.dtype:
    try:
        return np.dtype(dtype)
    except TypeError:                   # bfloat16, float8_*: ml_dtypes' types, as DType names them
        return DType.parse(dtype).numpy


def _copy_in(t: Any, x: np.ndarray) -> None:
    x = np.require(x, requirements="C")
    _func("runtime.TVMTensorCopyFromBytes")(t, x.ctypes.data_as(ctypes.c_void_p), x.nbytes)


def _copy_out(t: Any) -> np.ndarray:
    """A new numpy array holding tensor `t` (on any device), in its own element type."""
    a = np.empty(tuple(t.shape), _numpy_dtype(str(t.dtype)))
    _func("runtime.TVMTensorCopyToBytes")(t, a.ctypes.data_as(ctypes.c_void_p), a.nbytes)
    return a


class Arena:
    """The executable's arena (compiler/backends/tvm_arena.py): one 64-byte-aligned allocation and a
    tensor at each planned offset (each with its own data pointer, as the kernels expect no byte
    offset), made once from the table `arena_layout` returns."""

    def __init__(self, table: np.ndarray, alignment: int = ALIGNMENT):
        table = np.asarray(table, np.int64).reshape(-1, 3 + ARENA_MAX_RANK)
        dtypes = [ARENA_DTYPES[r[1]] for r in table]
        sizes = [int(np.prod(r[3:3 + r[2]], dtype=np.int64)) * _numpy_dtype(dt).itemsize
                 for r, dt in zip(table, dtypes)]
        self.nbytes = max((int(r[0]) + n for r, n in zip(table, sizes)), default=0)
        raw = np.empty(self.nbytes + alignment, np.uint8)
        start = -raw.ctypes.data % alignment
        self._raw = raw
        self.bytes = raw[start:start + self.nbytes]
        view = _func("runtime.TVMTensorCreateView")
        self.tensors = []
        for r, n, dt in zip(table, sizes, dtypes):
            off, shape = int(r[0]), tvm_ffi.Shape([int(d) for d in r[3:3 + r[2]]])
            flat = tvm_ffi.from_dlpack(self.bytes[off:off + n], require_alignment=alignment)
            self.tensors.append(view(flat, shape, tvm_ffi.dtype(dt), 0))


@contextlib.contextmanager
def _quiet_stderr():
    """fd 2 to /dev/null meanwhile (TVM logs a 'Scope Loaded' warning per constant it loads)."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def kernel_times(set_instrument: Any, call: Any, runs: int, sync: Any = None) -> list[tuple[str, int, float]]:
    """[(VM call, calls per run, ms per run)], slowest first, over `runs` calls of `call()`: every call the VM
    makes timed by a VM instrument (`set_instrument`, the VM's own), `sync()` around each one (a device)."""
    total: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    start: dict[str, float] = {}

    def instrument(func, name, before, ret, *a):
        if sync is not None:
            sync()
        if before:
            start[name] = time.perf_counter()
        else:
            total[name] += time.perf_counter() - start[name]
            calls[name] += 1
        return 0
    set_instrument(instrument)
    try:
        for _ in range(runs):
            call()
        if sync is not None:
            sync()
    finally:
        set_instrument(None)
    rows = [(k, calls[k] // runs, v / runs * 1e3) for k, v in total.items()]
    return sorted(rows, key=lambda r: -r[2])


# -- the executable --------------------------------------------------------------------------------
class RuntimeExecutable:
    """A .dyc's TVM library on the Relax VM, on the CPU or (a cuda target) on GPU 0. It runs; it
    cannot emit code or profile kernels (that needs apache-tvm: compiler/backends/tvm.py)."""

    def __init__(self, library: bytes, target: Target, io_dtypes: tuple[list[DType], list[DType]]):
        self._library, self._target, self._io = library, target, io_dtypes
        self._lock = threading.Lock()
        self._main: Any = None
        self._staging: list | None = None
        self.arena: Arena | None = None

    def _start(self) -> None:
        """Load the library into a VM (a cuda one only where a GPU is: run() says why not)."""
        if self._main is not None:
            return
        cuda = self._target.kind == "cuda"
        _cuda_runtime() if cuda else _runtime()
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "model.so")
            with open(path, "wb") as f:
                f.write(self._library)
            try:
                with _lock, _quiet_stderr():
                    _jit_arch[0] = self._target.arch
                    vm = tvm_ffi.load_module(path)["vm_load_executable"]()
            except Exception as e:  # noqa: BLE001  (the loader's and the CUDA JIT's errors)
                raise BackendToolError(f"the tvm runtime could not load the library: {e}") from None
        devices = [(_CUDA, 0), (_CPU, 0)] if cuda else [(_CPU, 0)]
        vm["vm_initialization"](*[a for dev_type, index in devices for a in (dev_type, index, _POOLED)])
        self._device = tvm_ffi.device("cuda" if cuda else "cpu", 0)
        if vm.implements_function("arena_layout"):
            self.arena = Arena(_copy_out(vm["arena_layout"]()))
        self._vm, self._main = vm, vm["main"]

    def _set_threads(self) -> None:
        n = self._target.threads()
        if self._target.kind == "llvm" and n != _current_threads[0]:
            _func("runtime.config_threadpool")(1, n)        # 1 = kBig: n workers
            _current_threads[0] = n

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Inputs are copied into tensors allocated once (aligned; on the GPU for cuda), outputs
        copied back to numpy in their IR types (compiler.runtime.from_container)."""
        inputs = [to_container(np.asarray(x), dt) for x, dt in zip(inputs, self._io[0])]
        with self._lock:
            self._start()
            self._set_threads()
            if self._staging is None:
                self._staging = [_empty(x.shape, str(x.dtype), self._device) for x in inputs]
            for t, x in zip(self._staging, inputs):
                _copy_in(t, x)
            outs = self._main(*self._staging, *(self.arena.tensors if self.arena else ()))
            return [from_container(_copy_out(o), dt) for o, dt in zip(outs, self._io[1])]

    def _sync(self) -> None:
        if self._target.kind == "cuda":
            _func("runtime.Device_StreamSync")(self._device, 0)

    def _resident_args(self, inputs: Sequence[np.ndarray]) -> list:
        self.run(inputs)                                    # loads, stages the inputs
        return [*self._staging, *(self.arena.tensors if self.arena else ())]

    def time_resident(self, inputs: Sequence[np.ndarray], warmup: int = 3, repeat: int = 20) -> float:
        """Median ms of one call with the inputs already in the executable's tensors (on the GPU for
        cuda) and the outputs left there, the device synchronized after each call: the kernels' time
        without the host copies that run() adds."""
        args = self._resident_args(inputs)
        times = []
        with self._lock:
            for i in range(warmup + repeat):
                t0 = time.perf_counter()
                self._main(*args)
                self._sync()
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    def profile(self, inputs: Sequence[np.ndarray], runs: int = 3) -> list[tuple[str, int, float]]:
        """[(kernel, calls per run, ms per run)], slowest first: each VM call timed with the device
        synchronized before and after it (its launch and a few microseconds of Python included)."""
        args = self._resident_args(inputs)
        with self._lock:
            return kernel_times(self._vm["set_instrument"], lambda: self._main(*args), runs, self._sync)

    def library_bytes(self) -> bytes:
        return self._library

    def source(self, kind: str) -> str:
        raise Unsupported(f"--emit {kind} needs the compiler (apache-tvm), not the runtime alone",
                          hint="compile the model again where apache-tvm is installed")


def load(library: bytes, signature: Any, target: Target) -> RuntimeExecutable:
    """An executable from a .dyc's lib.bin; a CPU one is loaded now, a cuda one at its first run."""
    if target.kind not in ("llvm", "cuda"):
        raise Unsupported(f"target {target.kind} is not supported by the tvm backend")
    io = ([t.dtype for _, t in signature.inputs], [t.dtype for _, t in signature.outputs])
    exe = RuntimeExecutable(bytes(library), target, io)
    if target.kind == "llvm":
        exe._start()
    return exe
