"""The TVM cuda target's module passes: Relax fusion, then dlight's GPU schedules on every PrimFunc that
our own lowerings did not already schedule (see compiler/backends/tvm_cuda.py for the whole pipeline).
"""
from __future__ import annotations

import contextlib
import inspect
import sys
import threading
import types

import tvm
from tvm import relax, tirx
from tvm.s_tir import dlight as dl

from compiler.diagnostics import BackendToolError


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


def preload_cuda_intrinsics() -> None:
    """dlight's tensor-core matmul rule imports tvm.s_tir.tensor_intrin.cuda (float16 operands); our tensor-core
    schedule adds the mma.sync intrinsics it lacks (tvm_kernels/cuda_wmma.register_intrinsics)."""
    from compiler.backends.tvm_kernels.cuda_wmma import register_intrinsics
    with _intrin_lock, _fast_tvmscript():
        if "tvm.s_tir.tensor_intrin.cuda" not in sys.modules:
            import tvm.s_tir.tensor_intrin.cuda  # noqa: F401
        register_intrinsics()


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


class _ConvTensorCores(dl.ScheduleRule):
    """float16 convs on tensor cores (dlight's WMMA schedule) whatever their sizes: dlight's Matmul rule
    tensorizes only where rows, columns and reduction all exceed 64, so a 64-channel conv (ResNet's first
    stage, the stem) ran on plain FMA. Its tiles pad rows and columns to 128 and the reduction to 64."""

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc) or "float16" not in {str(p.dtype) for p in func.params}:
            return None
        if "dlight.do_not_tensorize" in func.attrs.keys() or 'T.sblock("conv2d' not in func.script():
            return None
        from tvm.s_tir.dlight.gpu.matmul import MatmulTensorization
        try:
            return MatmulTensorization().apply(func, target, tunable)
        except Exception:  # noqa: BLE001  (a conv the rule cannot normalize: the default rules take it)
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
            preload_cuda_intrinsics()
        if fallback_only:
            part = tvm.IRModule({gv: f for gv, f in mod.functions_items()
                                 if gv.name_hint in fallback_only})
            for gv, f in dl.ApplyDefaultSchedule(dl.gpu.Fallback())(part).functions_items():
                mod[gv] = f
        mod = dl.ApplyDefaultSchedule(_ConvTensorCores(), dl.gpu.Matmul(), _Tolerant(dl.gpu.GEMV()),
                                      dl.gpu.Reduction(),
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
