"""The TVM backend's NVIDIA GPU target: Graph -> Relax -> fused TIR scheduled with dlight's GPU
rules -> CUDA C (device) + llvm (host) -> Relax VM.

    lower_to_relax (generic lowerings only: the CPU fast path is off for cuda)
    -> LegalizeOps, AnnotateTIROpPattern, FoldConstant, FuseOps, FuseTIR, DeadCodeElimination
    -> "dlight.do_not_tensorize" on integer PrimFuncs (dlight's int8 WMMA path crashes in TVM 0.27)
    -> parallel loops of hand-written (block-free) PrimFuncs bound to blockIdx.x / threadIdx.x
    -> dlight ApplyDefaultSchedule(gpu.Matmul, GEMV, Reduction, GeneralReduction, Fallback)
       (Fallback alone for a PrimFunc whose rule-made schedule TVM then fails to lower)
    -> every PrimFunc must now be bound to GPU threads (an unscheduled one would silently run
       its loops on the host), else BackendToolError
    -> tvm.compile(Target({"kind": "cuda", "arch": arch}, host={"kind": "llvm"}))

No GPU is needed to build: without one TVM keeps the CUDA C source in the cuda module (and
`export_library` stores it); on a machine with a GPU the CUDA runtime compiles that source when
the module is loaded, through `tvm_callback_cuda_compile` (nvcc unless cuda-bindings is there for
NVRTC). PTX (`source("ptx")`) is produced with nvcc on demand and cached.
"""
from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import re
import shutil
import sys
import tempfile
import threading
import types
from collections.abc import Sequence

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.s_tir import dlight as dl

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


# -- the slow tensor-intrinsic import ------------------------------------------------------------
@contextlib.contextmanager
def _fast_tvmscript():
    """Memoize inspect.getmodule for frames/code by file while TVMScript is parsed: the
    tensor-intrinsic modules parse hundreds of prim_funcs and each parse scans sys.modules
    (~25 s -> ~2.5 s)."""
    orig, cache = inspect.getmodule, {}

    def getmodule(obj, _filename=None):
        if isinstance(obj, (types.FrameType, types.CodeType)):
            code = obj.f_code if isinstance(obj, types.FrameType) else obj
            key = (code.co_filename, _filename)
            if key not in cache:
                cache[key] = orig(obj, _filename)
            return cache[key]
        return orig(obj, _filename)

    inspect.getmodule = getmodule
    try:
        yield
    finally:
        inspect.getmodule = orig


_intrin_lock = threading.Lock()


def _preload_cuda_intrinsics() -> None:
    """dlight's tensor-core matmul rule imports tvm.s_tir.tensor_intrin.cuda (float16 operands)."""
    with _intrin_lock:
        if "tvm.s_tir.tensor_intrin.cuda" not in sys.modules:
            with _fast_tvmscript():
                import tvm.s_tir.tensor_intrin.cuda  # noqa: F401


# -- module passes -------------------------------------------------------------------------------
def _is_int(dtype: object) -> bool:
    return str(dtype).startswith(("int", "uint"))


def _no_int_tensorize(mod: tvm.IRModule) -> tvm.IRModule:
    """dlight's int8 tensor-core (WMMA) schedule crashes in InjectSoftwarePipeline: integer
    PrimFuncs get the SIMT schedule."""
    for gv, f in list(mod.functions_items()):
        if isinstance(f, tirx.PrimFunc) and any(_is_int(p.dtype) for p in f.params):
            mod[gv] = f.with_attr("dlight.do_not_tensorize", True)
    return mod


def _has_blocks(func: tirx.PrimFunc) -> bool:
    return "T.sblock(" in func.script()


class _Tolerant(dl.ScheduleRule):
    """A dlight rule that counts as not applicable where its own analysis fails: TVM 0.27's GEMV rule
    asserts on some int8 reductions (onnx's light DenseNet-121, integer-only) instead of declining."""

    def __init__(self, rule: dl.ScheduleRule):
        self.rule = rule

    def apply(self, func, target, tunable):
        try:
            return self.rule.apply(func, target, tunable)
        except AssertionError:
            return None


def _is_gpu_bound(func: tirx.PrimFunc) -> bool:
    """True if the PrimFunc launches on GPU threads (a thread-bound loop or launch_thread).
    TVM 0.27 exposes no TIR visitor to Python, so this reads the TVMScript."""
    text = func.script()
    return "T.thread_binding(" in text or "T.launch_thread(" in text


THREADS = 256


def _bind_parallel_loops(func: tirx.PrimFunc) -> tirx.PrimFunc | None:
    """A hand-written block-free PrimFunc (e.g. integer pow) whose outer loops are `parallel`:
    each such loop becomes `blockIdx.x * THREADS + threadIdx.x` with a bounds check."""
    changed = []

    def bind(loop: tirx.For) -> tirx.Stmt:
        ext = loop.extent
        dt = str(loop.loop_var.ty)
        if not isinstance(ext, tirx.IntImm):
            raise TypeError("a parallel loop of non-constant extent")
        threads = min(THREADS, max(int(ext.value), 1))
        nblocks = tirx.const(-(-max(int(ext.value), 1) // threads), dt)
        bx, tx = tirx.Var("bx", dt), tirx.Var("tx", dt)
        idx = bx * tirx.const(threads, dt) + tx + loop.min
        body = tirx.IfThenElse(loop.loop_var < loop.min + ext, loop.body, None)
        body = tirx.SeqStmt([tirx.LetStmt(loop.loop_var, idx), body])   # the old loop var = index

        def thread(var, extent, tag, inner):
            iv = tirx.IterVar(tvm.ir.Range(0, extent), var, tirx.IterVar.ThreadIndex, tag)
            return tirx.For(var, tirx.const(0, dt), extent, tirx.ForKind.THREAD_BINDING, inner,
                            thread_binding=iv)
        changed.append(1)
        return thread(bx, nblocks, "blockIdx.x", thread(tx, tirx.const(threads, dt), "threadIdx.x", body))

    def outermost(stmt: tirx.Stmt) -> tirx.Stmt:
        if isinstance(stmt, tirx.For) and stmt.kind == tirx.ForKind.PARALLEL:
            return bind(stmt)
        if isinstance(stmt, tirx.SeqStmt):
            return tirx.SeqStmt([outermost(s) for s in stmt.seq])
        return stmt

    new_body = outermost(func.body)
    if not changed:
        return None
    return func.with_body(new_body)


def _bind_blockless(mod: tvm.IRModule) -> tvm.IRModule:
    for gv, f in list(mod.functions_items()):
        if isinstance(f, tirx.PrimFunc) and not _has_blocks(f) and not _is_gpu_bound(f):
            new = _bind_parallel_loops(f)
            if new is not None:
                mod[gv] = new.with_attr("tirx.is_scheduled", True)
    return mod


def fuse_cuda(mod: tvm.IRModule, tt: tvm.target.Target) -> tvm.IRModule:
    """Legalize and fuse; integer PrimFuncs marked for SIMT, block-free loops bound to threads."""
    fuse = tvm.transform.Sequential([
        relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ])
    with tt:
        return _bind_blockless(_no_int_tensorize(fuse(mod)))


def schedule_cuda(mod: tvm.IRModule, tt: tvm.target.Target,
                  fallback_only: frozenset[str] = frozenset()) -> tvm.IRModule:
    """dlight's GPU rules on every PrimFunc (only `Fallback` for those named in `fallback_only`:
    a rule's schedule that TVM cannot lower); every PrimFunc must end up on GPU threads."""
    mod = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)    # a copy
    with tt:
        if any(isinstance(f, tirx.PrimFunc) and "float16" in {str(p.dtype) for p in f.params}
               for _, f in mod.functions_items()):
            _preload_cuda_intrinsics()
        if fallback_only:
            part = tvm.IRModule({gv: f for gv, f in mod.functions_items()
                                 if gv.name_hint in fallback_only})
            for gv, f in dl.ApplyDefaultSchedule(dl.gpu.Fallback())(part).functions_items():
                mod[gv] = f
        mod = dl.ApplyDefaultSchedule(dl.gpu.Matmul(), _Tolerant(dl.gpu.GEMV()), dl.gpu.Reduction(),
                                      dl.gpu.GeneralReduction(), dl.gpu.Fallback())(mod)
    host = sorted(gv.name_hint for gv, f in mod.functions_items()
                  if isinstance(f, tirx.PrimFunc) and not _is_gpu_bound(f))
    if host:
        raise BackendToolError(f"no GPU schedule for {', '.join(host)}: its loops would run on the "
                               "host", hint="report the model; --target llvm compiles it for the CPU")
    return mod


def _unlowerable(mod: tvm.IRModule, tt: tvm.target.Target) -> frozenset[str]:
    """The PrimFuncs whose schedule TVM fails to compile (each one built alone)."""
    bad = set()
    for gv, f in mod.functions_items():
        if isinstance(f, tirx.PrimFunc):
            try:
                tvm.compile(tvm.IRModule({gv: f.with_attr("global_symbol", gv.name_hint)}), target=tt)
            except Exception:  # noqa: BLE001
                bad.add(gv.name_hint)
    return frozenset(bad)


def compile_cuda(mod: tvm.IRModule, tt: tvm.target.Target):
    """(scheduled module, tvm Executable). A PrimFunc whose dlight schedule TVM cannot lower
    (e.g. a cross-thread reduction dlight placed badly) is rescheduled with Fallback alone."""
    fused = fuse_cuda(mod, tt)
    scheduled = schedule_cuda(fused, tt)
    try:
        return scheduled, tvm.compile(scheduled, target=tt)
    except Exception:
        bad = _unlowerable(scheduled, tt)
        if not bad:
            raise
    scheduled = schedule_cuda(fused, tt, bad)
    return scheduled, tvm.compile(scheduled, target=tt)


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


def load(library: bytes, target: Target) -> CudaExecutable:
    """The library is only loaded when run on a GPU: on a host without one TVM has no cuda
    loader, and the clear 'needs an NVIDIA GPU' error belongs to run()."""
    cuda_target(target)
    return CudaExecutable(target, library=library)
