"""The TVM backend: Graph -> Relax IRModule -> fused, scheduled TIR -> llvm -> Relax VM.

Each op is lowered by the function registered for its OpDef in `tvm_lower` (`@lowers(op)`).
`build` runs LegalizeOps, AnnotateTIROpPattern, FoldConstant, FuseOps, FuseTIR, then schedules
every PrimFunc (dlight CPU rules, else our fallback) and compiles with `tvm.compile`.

Threads (measured on TVM 0.27): the CPU thread pool is created at the first parallel launch
with TVM_NUM_THREADS workers, default hardware_concurrency/2 (1 on a 2-core VM); after that
`runtime.config_threadpool(mode, n)` can only choose n up to that size. So importing this
module sets TVM_NUM_THREADS to every core in the affinity mask (unless the user set it), and
each run calls `config_threadpool(1, target.threads())` when the count changes.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Sequence

import numpy as np
import tvm
from tvm import relax

import compiler.backends.tvm_fused  # noqa: F401  (registers the kernel-level IR's lowerings)
from compiler.backends.byte_types import check_byte_types, is_byte_carried, widen_bf16
from compiler.backends.tvm_lower import LOWERINGS, LowerCtx, lowers
from compiler.backends.tvm_lower.registry import first_lines, lower_nodes, read, tvm_dtype
from compiler.backends.tvm_lower.schedule import schedule_module
from compiler.backends.tvm_byte_lookup import pipeline_for
from compiler.backends.tvm_arena import Arena, place_in_arena, relax_pipeline
from compiler.backends.tvm_memory import kernel_workspace_bytes, tvm_planner_bytes
from compiler.diagnostics import BackendToolError, SourceLoc, Unsupported
from compiler.host import llvm_target_config
from compiler.ir import Graph
from compiler.ops.registry import OpDef
from compiler.runtime import from_container, to_container
from compiler.target import Target
from compiler.types import DType
from passes.memory import l2_bytes

os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))

__all__ = ["BACKEND", "TVMBackend", "TVMExecutable", "emit_relax", "lowers", "LOWERINGS"]


def tvm_target(target: Target) -> tvm.target.Target:
    if target.kind == "cuda":
        from compiler.backends.tvm_cuda import cuda_target
        return cuda_target(target)
    if target.kind != "llvm":
        raise Unsupported(f"target {target.kind} is not supported by the tvm backend yet")
    return tvm.target.Target(llvm_target_config(target.cpu, target.threads()))


def _check_supported(g: Graph) -> None:
    missing = sorted({n.op.name for n in g.walk() if n.op not in LOWERINGS})
    if missing:
        raise Unsupported(f"{', '.join(missing)} has no lowering for 'tvm'",
                          SourceLoc(g.source), hint="use another backend or report the missing op")
    check_byte_types(g, "tvm")


def c_identifier(name: str) -> str:
    """`name` as a C identifier: generated kernels name their parameters after the graph's inputs, and an
    ONNX input may be called `gpu_0/data_0`. The VM passes arguments by position, so only code sees it."""
    name = re.sub(r"\W", "_", name)
    return name if name and not name[0].isdigit() else f"v_{name}"


def lower_to_relax(g: Graph, target: Target, symbols: dict | None = None, unscheduled: bool = False) -> tvm.IRModule:
    """The graph as a Relax module: `main(*inputs) -> tuple(outputs)`, constants embedded.
    `symbols`, when given, receives our kernels' symbols -> the top-level nodes that call them.
    `unscheduled`: our GPU kernels without their GPU schedules (LowerCtx.unscheduled)."""
    g = widen_bf16(g)
    _check_supported(g)
    bb = relax.BlockBuilder()
    params = [relax.Var(c_identifier(v.name), relax.TensorType(v.type.shape, tvm_dtype(v.type.dtype)))
              for v in g.inputs]
    env: dict[int, relax.Expr] = {id(v): p for v, p in zip(g.inputs, params)}
    ctx = LowerCtx(bb, g, target, unscheduled=unscheduled)
    with bb.function("main", params):
        with bb.dataflow():
            lower_nodes(ctx, g.nodes, env)
            result = bb.emit_output(relax.Tuple([read(env, v) for v in g.outputs]))
        bb.emit_func_output(result)
    if symbols is not None:
        symbols.update(ctx.symbols)
    return bb.get()


def emit_relax(g: Graph, target: Target) -> str:
    """The Relax text of `g` (what `compile --emit relax` prints)."""
    return lower_to_relax(g, target).script()


def optimize(mod: tvm.IRModule, target: tvm.target.Target, cpu: str) -> tvm.IRModule:
    """Legalize, fuse and schedule: the module tvm.compile turns into machine code."""
    seq = tvm.transform.Sequential([
        relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ])
    with target:
        mod = seq(mod)
    return schedule_module(mod, target, cpu)


def _run_tvm(what: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (Unsupported, BackendToolError):
        raise
    except Exception as e:  # noqa: BLE001
        raise BackendToolError(f"tvm failed to {what}: {first_lines(e)}") from None


class TVMExecutable:
    """A compiled graph on the Relax VM (CPU)."""

    def __init__(self, module: tvm.runtime.Module, g: Graph | None, target: Target,
                 relax_text: str | None = None, tir_text: str | None = None,
                 executable=None, library: bytes | None = None,
                 io_dtypes: tuple[list[DType], list[DType]] | None = None):
        self._module, self._graph, self._target = module, g, target
        # the IR element types of the inputs and outputs: what `run` converts to and from containers
        self._io = io_dtypes or (([v.type.dtype for v in g.inputs], [v.type.dtype for v in g.outputs])
                                 if g is not None else None)
        self._relax_text, self._tir_text = relax_text, tir_text
        self._executable = executable
        self._library = library
        self._vm = relax.VirtualMachine(module, tvm.cpu())
        self._main = self._vm["main"]
        self.arena = _arena_of(self._vm)
        self._staging: list | None = None
        self._lock = threading.Lock()
        self.memory_report: dict[str, int] = {}     # what the build learned of memory (tvm_memory)
        self.kernel_nodes: dict[str, list] = {}     # kernel symbol -> IR nodes calling it (after build)

    def _set_threads(self) -> None:
        n = self._target.threads()
        if n != _current_threads[0]:
            # mode 1 = kBig: n workers (capped at the pool size fixed by TVM_NUM_THREADS)
            tvm.get_global_func("runtime.config_threadpool")(1, n)
            _current_threads[0] = n

    def _containers(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The inputs as TVM holds them (float8 / float4 as bytes, int4 / int2 widened: to_container)."""
        if self._io is None:
            return list(inputs)
        return [to_container(np.asarray(x), dt) for x, dt in zip(inputs, self._io[0])]

    def _results(self, outs) -> list[np.ndarray]:
        """The VM's outputs as numpy arrays of their IR types (from_container)."""
        arrays = [o.numpy() for o in outs]
        if self._io is None:
            return arrays
        return [from_container(a, dt) for a, dt in zip(arrays, self._io[1])]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Inputs are copied into staging tensors allocated once (a fresh tvm tensor per call
        costs ~3x the copy); the lock keeps concurrent callers from sharing them."""
        inputs = self._containers(inputs)
        with self._lock:
            self._set_threads()
            if self._staging is None:
                self._staging = [tvm.runtime.empty(x.shape, x.dtype, tvm.cpu()) for x in inputs]
            for t, x in zip(self._staging, inputs):
                t.copyfrom(np.require(x, requirements="C"))
            outs = self._main(*self._staging, *self.arena.tensors)
            return self._results(outs)

    def profile(self, inputs: Sequence[np.ndarray], runs: int = 5) -> tuple[float, list[tuple[str, int, float]]]:
        """(wall ms per run, [(kernel, calls per run, ms per run)] slowest first): every VM call
        timed with a VM instrument (a few us of Python per call are included in each)."""
        import time

        from compiler.backends.tvm_runtime import kernel_times
        with self._lock:
            self._set_threads()
            vm = relax.VirtualMachine(self._module, tvm.cpu())
            args = [tvm.runtime.tensor(np.require(x, requirements="C"))
                    for x in self._containers(inputs)] + self.arena.tensors
            vm["main"](*args)
            t0 = time.perf_counter()
            rows = kernel_times(vm.set_instrument, lambda: vm["main"](*args), runs)
            wall = (time.perf_counter() - t0) / runs * 1e3
        return wall, rows

    def library_bytes(self) -> bytes:
        if self._library is None:
            self._library = export_library_bytes(self._executable)
        return self._library

    def source(self, kind: str) -> str:
        if self._graph is None and kind in ("relax", "tir") and \
                (self._relax_text if kind == "relax" else self._tir_text) is None:
            raise Unsupported(f"--emit {kind} needs the model, not a loaded library",
                              hint="compile the model again to see its generated code")
        if kind == "relax":
            if self._relax_text is None:
                self._relax_text = emit_relax(self._graph, self._target)
            return self._relax_text
        if kind == "tir":
            if self._tir_text is None:
                mod = lower_to_relax(self._graph, self._target)
                self._tir_text = optimize(mod, tvm_target(self._target), self._target.cpu).script()
            return self._tir_text
        if kind == "asm":
            return _asm_of(self._module)
        if kind in ("cuda", "ptx"):
            raise Unsupported(f"--emit {kind} needs --target cuda")
        raise Unsupported(f"--emit {kind} is not available for tvm; choose one of "
                          f"{', '.join(TVMBackend.EMIT_KINDS)}")


def _arena_of(vm: relax.VirtualMachine) -> Arena:
    """The arena `main` takes after its inputs (tvm_arena), from the module's own layout table."""
    try:
        layout = vm["arena_layout"]
    except (AttributeError, RuntimeError, ValueError):
        return Arena(np.zeros((0, 11), np.int64))
    return Arena(layout().numpy())


def export_library_bytes(executable) -> bytes:
    """The compiled tvm Executable as the bytes of a shared library (what a .dyc stores)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.so")
        with _captured_stderr() as log:
            try:
                executable.export_library(path)
            except Exception as e:  # noqa: BLE001
                raise BackendToolError(f"tvm failed to export the library: {first_lines(e)}\n"
                                       f"{log.read()[-2000:]}") from None
        with open(path, "rb") as f:
            return f.read()


@contextlib.contextmanager
def _captured_stderr():
    """Send the process's fd 2 to a temp file (TVM's C++ logging writes warnings such as
    'Scope Saving' there on every export); yields the file so errors can include it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield log
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)


_current_threads: list[int | None] = [None]   # the pool is process-wide (per calling thread)


def _asm_of(module: tvm.runtime.Module) -> str:
    """The assembly of the llvm module(s) under the VM executable."""
    texts = []
    stack = [module]
    while stack:
        m = stack.pop()
        if m.kind == "llvm":
            texts.append(m.inspect_source("asm"))
        stack.extend(m.imports)
    if not texts:
        raise Unsupported("assembly is not available for an executable loaded from a library",
                          hint="rebuild the model to see its assembly")
    return "\n".join(texts)


def _executable_memory(plan, arena: Arena) -> dict:
    """What the executable allocates for its intermediates: its arena, planned by our planner over the
    kernel outputs of the compiled program (tvm_arena); workspace_bytes (added by the caller) is the
    largest kernel's own scratch (tvm_memory.kernel_workspace_bytes)."""
    if plan is None:
        return {"arena_bytes": 0, "buffers": 0}
    out = {"arena_bytes": arena.nbytes, "lower_bound_bytes": plan.lower_bound_bytes, "buffers": len(plan.buffers),
           "planner": plan.planner, "optimal": plan.optimal}
    if plan.fast_tier is not None:        # the offsets in use are the two-level mapping's (-fast-tier)
        tier = plan.fast_tier
        out["fast_tier"] = {"capacity_bytes": tier.capacity_bytes, "buffers": len(tier.chosen),
                            "size_only_arena_bytes": plan.arena_bytes, "traffic_bytes": tier.traffic_bytes,
                            "saved_bytes": tier.saved_bytes}
    return out


class TVMBackend:
    name = "tvm"
    EMIT_KINDS = ("relax", "tir", "asm", "cuda", "ptx")     # cuda, ptx: --target cuda

    def supported_ops(self) -> frozenset[OpDef]:
        return frozenset(LOWERINGS)

    def build(self, g: Graph, target: Target) -> TVMExecutable:
        if target.kind == "cuda":
            from compiler.backends import tvm_cuda
            carried = sorted({v.type.dtype.value for v in (*g.inputs, *g.outputs) if is_byte_carried(v.type.dtype)})
            if carried:
                raise Unsupported(f"tvm on cuda: {', '.join(carried)} inputs or outputs (carried as bytes, which "
                                  "only the CPU executable converts)", SourceLoc(g.source))
            return tvm_cuda.build(g, target)
        tt = tvm_target(target)
        symbols: dict[str, list] = {}
        mod = lower_to_relax(g, target, symbols)
        relax_text = mod.script()
        mod = _run_tvm("optimize the relax module", optimize, mod, tt, target.cpu)
        tir_text = mod.script()
        relax_bytes = _run_tvm("plan memory as Relax does", tvm_planner_bytes, mod, tt)
        workspace = max(kernel_workspace_bytes(mod).values(), default=0)
        fast = None if target.fast_tier == "off" else l2_bytes() if target.fast_tier == "l2" else int(target.fast_tier)
        mod, plan = _run_tvm("place the intermediates in the arena", place_in_arena, mod, tt, fast_bytes=fast)
        ex = _run_tvm("compile for llvm", tvm.compile, mod, target=tt, tir_pipeline=pipeline_for(target.cpu),
                      relax_pipeline=relax_pipeline())
        exe = TVMExecutable(ex.mod, g, target, relax_text, tir_text, executable=ex)
        exe.memory_report = {"tvm_planner_bytes": relax_bytes,
                             "executable": {**_executable_memory(plan, exe.arena), "workspace_bytes": workspace}}
        exe.kernel_nodes = symbols
        return exe

    def load(self, library: bytes, signature: object, target: Target) -> TVMExecutable:
        """An executable from `library_bytes()`; it can run but not re-emit relax/tir/asm."""
        if target.kind == "cuda":
            from compiler.backends import tvm_cuda
            return tvm_cuda.load(library, target)
        tvm_target(target)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "model.so")
            with open(path, "wb") as f:
                f.write(library)
            with _captured_stderr():           # TVM logs a 'Scope Loaded' warning per constant
                module = _run_tvm("load the library", tvm.runtime.load_module, path)
        io = None if signature is None else \
            ([t.dtype for _, t in signature.inputs], [t.dtype for _, t in signature.outputs])
        return TVMExecutable(module, None, target, library=library, io_dtypes=io)


BACKEND = TVMBackend()
