"""The TVM backend's NVIDIA GPU target: Graph -> Relax -> fused TIR scheduled with dlight's GPU
rules -> CUDA C (device) + llvm (host) -> Relax VM.

    lower_to_relax (generic lowerings: the CPU fast path is off for cuda; q.conv (2-D, ungrouped)
       and q.matmul by a constant weight are our int8 implicit GEMMs on tensor cores, or with dp4a
       under -int8=dp4a: tvm_lower/cuda_gemm.py; a fused node's GEMM computes its epilogue (requant,
       residual, table; a float16 conv's bias and activation) in its write-back: tvm_fused/cuda.py)
    -> LegalizeOps, AnnotateTIROpPattern, FoldConstant, FuseOps, FuseTIR, DeadCodeElimination
    -> "dlight.do_not_tensorize" on integer PrimFuncs (dlight's int8 WMMA path crashes in TVM 0.27)
    -> parallel loops of hand-written (block-free) PrimFuncs bound to blockIdx.x / threadIdx.x
    -> dlight ApplyDefaultSchedule(every float16 conv on WMMA tensor cores, gpu.Matmul, GEMV,
       Reduction, GeneralReduction, Fallback) (Fallback alone for a PrimFunc whose rule-made
       schedule TVM then fails to lower); tvm_cuda_schedule.py
    -> every PrimFunc must now be bound to GPU threads (an unscheduled one would silently run
       its loops on the host), else BackendToolError
    -> tvm.compile(Target({"kind": "cuda", "arch": arch}, host={"kind": "llvm"}))

No GPU is needed to build: without one TVM keeps the CUDA C source in the cuda module (and
`export_library` stores it); on a machine with a GPU the CUDA runtime compiles that source when
the module is loaded, through `tvm_callback_cuda_compile` (nvcc unless cuda-bindings is there for
NVRTC). PTX (`source("ptx")`) is produced with nvcc on demand and cached.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Sequence

import numpy as np
import tvm
from tvm import relax

from compiler.backends import tvm_cuda_source  # noqa: F401  (registers TVM's CUDA source postproc hook)
from compiler.backends.tvm_cuda_schedule import compile_cuda
from compiler.diagnostics import BackendToolError, Unsupported
from compiler.ir import Graph
from compiler.target import Target

# The CUDA runtime JIT-compiles the stored CUDA C through this callback; its default (NVRTC)
# needs the cuda-bindings package, so use nvcc when that is missing.
if importlib.util.find_spec("cuda") is None or importlib.util.find_spec("cuda.bindings") is None:
    os.environ.setdefault("TVM_CUDA_COMPILE_MODE", "nvcc")
from tvm.support import nvcc  # importing it registers tvm_callback_cuda_compile

ARCHS = ("sm_70", "sm_75", "sm_80", "sm_86", "sm_87", "sm_89", "sm_90")
NO_GPU = ("running a cuda executable needs an NVIDIA GPU (none found); the artifact was built "
          "and can be run where one is")
NO_GPU_HINT = "copy the .dyc to a machine with an NVIDIA GPU, or compile with --target llvm"


def cuda_target(target: Target) -> tvm.target.Target:
    if target.arch not in ARCHS:
        raise Unsupported(f"cuda architecture {target.arch!r} is not supported by the tvm backend",
                          hint=f"use one of {', '.join(ARCHS)}, e.g. --target 'cuda -arch=sm_90'")
    return tvm.target.Target({"kind": "cuda", "arch": target.arch}, host={"kind": "llvm"})


def gpu_available() -> bool:
    try:
        return bool(tvm.cuda(0).exist)
    except Exception:  # noqa: BLE001  (no CUDA runtime at all)
        return False


# -- the executable ------------------------------------------------------------------------------
KERNEL_RE = re.compile(r'__global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(')


def nvcc_error(message: str, n: int = 8) -> str:
    """nvcc's own error lines first (`file(line): error: ...`), then the rest of the message, at most
    `n` lines in all."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.search(r"\berror\b", ln)]
    rest = [ln for ln in lines if ln not in errors]
    return "\n".join((errors + rest)[:n]) or "no message"


def cuda_module(module: tvm.runtime.Module) -> tvm.runtime.Module | None:
    stack = [module]
    while stack:
        m = stack.pop()
        if m.kind == "cuda":
            return m
        stack.extend(m.imports)
    return None


class CudaExecutable:
    """A graph compiled for an NVIDIA GPU. It builds and saves anywhere; it runs only where
    `tvm.cuda(0).exist` (inputs are copied to the GPU, outputs back to numpy)."""

    def __init__(self, target: Target, module: tvm.runtime.Module | None = None,
                 executable=None, library: bytes | None = None,
                 relax_text: str | None = None, tir_text: str | None = None):
        self._target = target
        self._module, self._executable, self._library = module, executable, library
        self._relax_text, self._tir_text = relax_text, tir_text
        self._ptx: str | None = None
        self._vm = None
        self._main = None
        self._lock = threading.Lock()

    # -- running ------------------------------------------------------------------
    def _ensure_vm(self) -> None:
        if self._main is not None:
            return
        if not gpu_available():
            raise Unsupported(NO_GPU, hint=NO_GPU_HINT)
        from compiler.backends.tvm import _captured_stderr, _run_tvm
        module = self._module
        if module is None or not _runnable_here(module):
            # A library built on a GPU-less host holds CUDA C; loading it here lets the CUDA
            # runtime compile it (tvm_callback_cuda_compile) for this GPU.
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "model.so")
                with open(path, "wb") as f:
                    f.write(self.library_bytes())
                with _captured_stderr():
                    module = _run_tvm("load the cuda library", tvm.runtime.load_module, path)
        dev = tvm.cuda(0)
        self._vm = _run_tvm("start the VM on the GPU", relax.VirtualMachine, module, [dev, tvm.cpu()])
        self._main = self._vm["main"]
        self._dev = dev

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            self._ensure_vm()
            args = [tvm.runtime.tensor(np.ascontiguousarray(x), self._dev) for x in inputs]
            outs = self._main(*args)                  # main returns a tuple of GPU tensors
            return [o.numpy() for o in outs]          # .numpy() copies back (and synchronizes)

    # -- artifact -----------------------------------------------------------------
    def library_bytes(self) -> bytes:
        if self._library is None:
            from compiler.backends.tvm import export_library_bytes
            self._library = export_library_bytes(self._executable)
        return self._library

    # -- generated code -----------------------------------------------------------
    def cuda_source(self) -> str:
        m = cuda_module(self._module) if self._module is not None else None
        if m is None:
            raise Unsupported("the CUDA source is not available for an executable loaded from a "
                              "library", hint="compile the model again to see its generated code")
        return m.inspect_source("cuda")

    def kernels(self) -> list[str]:
        """The __global__ kernel names (the source declares each one before defining it)."""
        return list(dict.fromkeys(KERNEL_RE.findall(self.cuda_source())))

    def launches(self) -> list[str]:
        """The kernels one run launches, in order: the VM program's calls that are not its own builtins (a reshape
        between kernels is a view, vm.builtin.reshape, not a launch)."""
        if self._executable is None:
            raise Unsupported("the VM program is not available for an executable loaded from a library",
                              hint="compile the model again")
        text = self._executable.as_text()
        main = text[text.index("@main"):]
        main = main[:main.find("\n@", 1)] if "\n@" in main[1:] else main
        return [name for name in re.findall(r"^\s*call\s+(\S+)\s+in:", main, re.M) if not name.startswith("vm.")]

    def ptx(self) -> str:
        if self._ptx is None:
            cu = self.cuda_source()
            if shutil.which("nvcc") is None and not os.path.exists(
                    os.path.join(nvcc.find_cuda_path() or "", "bin", "nvcc")):
                raise Unsupported("--emit ptx needs nvcc (the CUDA toolkit)",
                                  hint="install the CUDA toolkit or put nvcc on PATH")
            try:
                with cuda_target(self._target):   # compile_cuda reads Target.current()
                    ptx = nvcc.compile_cuda(cu, target_format="ptx", arch=self._target.arch,
                                            compiler="nvcc")
            except Exception as e:  # noqa: BLE001
                raise BackendToolError(f"nvcc failed to compile the CUDA source to PTX: "
                                       f"{nvcc_error(str(e))}") from None
            self._ptx = bytes(ptx).decode()
        return self._ptx

    def source(self, kind: str) -> str:
        from compiler.backends.tvm import TVMBackend, _asm_of
        if kind in ("relax", "tir"):
            text = self._relax_text if kind == "relax" else self._tir_text
            if text is None:
                raise Unsupported(f"--emit {kind} needs the model, not a loaded library",
                                  hint="compile the model again to see its generated code")
            return text
        if kind == "cuda":
            return self.cuda_source()
        if kind == "ptx":
            return self.ptx()
        if kind == "asm":
            if self._module is None:
                raise Unsupported("assembly is not available for an executable loaded from a library",
                                  hint="rebuild the model to see its assembly")
            return _asm_of(self._module)
        raise Unsupported(f"--emit {kind} is not available for tvm; choose one of "
                          f"{', '.join(TVMBackend.EMIT_KINDS)}")


def _runnable_here(module: tvm.runtime.Module) -> bool:
    m = cuda_module(module)
    return m is None or bool(m.is_runnable())


def build(g: Graph, target: Target) -> CudaExecutable:
    from compiler.backends.tvm import _run_tvm, lower_to_relax
    tt = cuda_target(target)
    mod = lower_to_relax(g, target)
    relax_text = mod.script()
    mod, ex = _run_tvm(f"compile for cuda {target.arch}", compile_cuda, mod, tt)
    return CudaExecutable(target, ex.mod, ex, None, relax_text, mod.script())


def build_for_cpu(g: Graph, target: Target):
    """The GPU program of `g` for `target` built unscheduled for the CPU: the same kernels (our GEMMs with their
    fused epilogues, every op's lowering for cuda) without the GPU schedules, whose primitives keep a PrimFunc's
    meaning. A function numpy inputs -> numpy outputs; slow (nothing is parallel or tiled): what the tests check
    the cuda lowering's arithmetic with on a machine without a GPU."""
    from compiler.backends.tvm import _run_tvm, lower_to_relax
    cuda_target(target)
    mod = lower_to_relax(g, target, unscheduled=True)
    ex = _run_tvm("build the cuda program for the cpu", tvm.compile, mod, target="llvm")
    main = relax.VirtualMachine(ex, tvm.cpu())["main"]

    def run(*inputs: np.ndarray) -> list[np.ndarray]:
        outs = main(*[tvm.runtime.tensor(np.ascontiguousarray(x)) for x in inputs])
        return [o.numpy() for o in outs]
    return run


def load(library: bytes, target: Target) -> CudaExecutable:
    """The library is only loaded when run on a GPU: on a host without one TVM has no cuda
    loader, and the clear 'needs an NVIDIA GPU' error belongs to run()."""
    cuda_target(target)
    return CudaExecutable(target, library=library)
