"""The TVM kernels as tunable kernels (compiler/tunable.py): fp32 conv2d, matmul and attention, int8 VNNI
conv2d, matmul and batched matmul, each described for the cost model and built with a given tile.

This module is the default provider: importing it registers the six kinds. It also builds host targets,
times built kernels, builds whole graphs and the shift-and-add kernels, for the measuring tools (`compile
tune-costmodel`, `python -m costmodel.elementwise`, `python -m costmodel.shiftadd`).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import tvm

from compiler import tunable

from . import attention as A
from . import conv2d as C
from . import conv2d_schedule as CS
from . import matmul as M
from . import qbmm as QB
from . import qconv2d as Q
from . import qconv1x1_amx as QA1
from . import qconv2d_amx as QA
from . import qmatmul as QM
from .common import SCHEDULE_ATTR, host_target, prod  # noqa: F401  (host_target: part of the provider)
from .requant import Requant


def _known(cls: Any, f: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``f`` the dataclass ``cls`` has (rows written by a newer kernel spec with an extra
    field at its default still load; the default is what the older kernel did)."""
    names = {fl.name for fl in dataclasses.fields(cls)}
    return {k: v for k, v in f.items() if k in names}


def _with_requants(f: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """``f`` with its requant fields (dicts from JSON) made :class:`Requant`."""
    f = dict(f)
    for k in keys:
        if f.get(k) is not None:
            f[k] = Requant(**_known(Requant, f[k]))
    return f


# ----------------------------------------------------------------------------------------------------------
# the kernels
# ----------------------------------------------------------------------------------------------------------
class ConvKernel:
    """fp32 conv2d in NCHW{b}c; tile (reg_oc, reg_w)."""

    kind = "conv"
    spec_type = C.Conv2dSpec

    def describe(self, spec: C.Conv2dSpec) -> dict[str, float]:
        oh, ow = C.output_hw(spec)
        ob = C.weight_out_block(spec)
        kind = C.conv_kind(spec)
        red = spec.ci_per_group * spec.kh * spec.kw
        esz = 4
        bytes_ = esz * (spec.n * spec.ci * spec.h * spec.w + spec.co * red + spec.n * spec.co * oh * ow
                        * (2 if spec.has_residual else 1))
        return dict(batch=spec.n, rows=spec.n * oh * ow, cols=spec.co, red=red, h=spec.h, w=spec.w,
                    ci=spec.ci, co=spec.co, kh=spec.kh, kw=spec.kw, stride=spec.stride[1], groups=spec.groups,
                    oh=oh, ow=ow, n_ocb=spec.co // ob, ob=ob, flops=spec.flops, bytes=bytes_,
                    depthwise=kind == "depthwise", ksplit=0, esz=esz)

    def default_tile(self, spec: C.Conv2dSpec) -> tuple[int, ...]:
        _, ow = C.output_hw(spec)
        ob = C.weight_out_block(spec)
        max_acc = CS.MAX_ACC if C.conv_kind(spec) == "dense" else 8      # as schedule_conv2d picks it
        return tuple(CS.pick_tile(spec.co // ob, ow, max_acc))

    def arg_shapes(self, spec: C.Conv2dSpec) -> tunable.Shapes:
        dt = spec.dtype
        out = [(C.data_shape(spec), dt), (C.weight_shape(spec), dt)]
        if spec.has_bias:
            out.append((C.bias_shape(spec), dt))
        if spec.has_residual:
            out.append((C.out_shape(spec), dt))
        return out + [(C.out_shape(spec), dt)]

    def build(self, spec: C.Conv2dSpec, tile: tuple[int, ...] | None = None) -> Any:
        return C.make_conv2d(spec, tile)

    def from_fields(self, fields: dict[str, Any]) -> C.Conv2dSpec:
        return C.Conv2dSpec(**_known(C.Conv2dSpec, fields))


class QConvKernel:
    """int8 VNNI conv2d; tile (reg_oc, reg_w), reg_w dividing the output width."""

    kind = "qconv"
    spec_type = Q.QConvSpec

    def describe(self, spec: Q.QConvSpec) -> dict[str, float]:
        oh, ow = Q.output_hw(spec)
        red = spec.cip * spec.kh * spec.kw
        bytes_ = spec.n * spec.cip * spec.h * spec.w + spec.cop * red + spec.n * spec.cop * oh * ow
        return dict(batch=spec.n, rows=spec.n * oh * ow, cols=spec.co, red=red, h=spec.h, w=spec.w,
                    ci=spec.ci, co=spec.co, kh=spec.kh, kw=spec.kw, stride=spec.stride[1], groups=1, oh=oh,
                    ow=ow, n_ocb=spec.cop // 16, ob=16, flops=2 * spec.macs, bytes=bytes_, depthwise=False,
                    ksplit=0, esz=1)

    def default_tile(self, spec: Q.QConvSpec) -> tuple[int, ...]:
        _, ow = Q.output_hw(spec)
        if spec.amx and spec.kw == 1:       # (16-channel blocks,) per AMX call over a 16-pixel tile
            return tuple(QA1.pick_tile(spec.cop // 16))
        if spec.amx:            # (16-pixel tiles, 16-channel blocks) of one AMX block
            return tuple(QA.default_tile(spec, ow))
        return tuple(Q.pick_tile(spec.cop // 16, ow))

    def arg_shapes(self, spec: Q.QConvSpec) -> tunable.Shapes:
        def rq(r):
            return ((3, spec.cop // 16, 16), Q.requant_dtype(r))
        out = [(Q.data_shape(spec), spec.x_dtype), (Q.weight_shape(spec), "int8"),
               ((spec.cop // 16, 16), "int32")]
        out += [rq(r) for r in (spec.rq1, spec.rq1b) if r is not None]
        if spec.residual_dtype is not None:
            out.append((Q.out_shape(spec), spec.residual_dtype))
            out += [rq(r) for r in (spec.rq2, spec.rq3) if r is not None]
        out += [((256,), spec.table)] if spec.table is not None else []
        return out + [(Q.out_shape(spec), spec.out_dtype)]

    def build(self, spec: Q.QConvSpec, tile: tuple[int, ...] | None = None) -> Any:
        return Q.make_qconv2d(spec, tile)

    def from_fields(self, fields: dict[str, Any]) -> Q.QConvSpec:
        f = _with_requants(fields, ("rq1", "rq1b", "rq2", "rq3"))
        return Q.QConvSpec(**_known(Q.QConvSpec, f))


class MatmulKernel:
    """fp32 (batched) matmul; tile (reg_m, reg_n, lanes)."""

    kind = "matmul"
    spec_type = M.MatmulSpec

    def describe(self, spec: M.MatmulSpec) -> dict[str, float]:
        nbatch = prod(spec.batch)
        mtot = spec.m * nbatch if spec.b_is_const else spec.m
        bytes_ = 4 * (nbatch * spec.m * spec.k + (1 if spec.b_is_const else nbatch) * spec.k * spec.n
                      + nbatch * spec.m * spec.n)
        nb = M.b_block(spec)
        return dict(batch=nbatch, rows=nbatch * spec.m, cols=spec.n, red=spec.k, h=spec.m, w=spec.n,
                    ci=spec.k, co=spec.n, kh=1, kw=1, stride=1, groups=1, oh=mtot, ow=spec.n,
                    n_ocb=spec.n // nb, ob=nb, flops=spec.flops, bytes=bytes_, depthwise=False,
                    ksplit=M.k_split(spec) > 1, esz=4, mtot=mtot, outer=1 if spec.b_is_const else nbatch)

    def default_tile(self, spec: M.MatmulSpec) -> tuple[int, ...]:
        return tuple(M.pick_tile(spec))

    def arg_shapes(self, spec: M.MatmulSpec) -> tunable.Shapes:
        out = [(M.a_shape(spec), spec.dtype), (M.b_shape(spec), spec.dtype)]
        if spec.has_bias:
            out.append(((spec.n,), spec.dtype))
        return out + [(M.out_shape(spec), spec.dtype)]

    def build(self, spec: M.MatmulSpec, tile: tuple[int, ...] | None = None) -> Any:
        return M.make_matmul(spec, tile)

    def from_fields(self, fields: dict[str, Any]) -> M.MatmulSpec:
        return M.MatmulSpec(**_known(M.MatmulSpec, fields))


def _qmm_describe(spec: Any, batched: bool) -> dict[str, float]:
    """int8 VNNI matmul (``qmatmul``: one (m, k) x constant (k, n)) or batched activation x activation matmul
    (``qbmm``: bsz x (m, k) x (k, n)).  Laid out like a 1x1 VNNI conv with the rows as the output width: the
    register tile is rows x 16-column blocks, one vpdpbusd per (row, block) and 4-deep reduction step."""
    bsz = spec.bsz if batched else 1
    kp = spec.k if batched else spec.kp
    np_ = spec.n if batched else spec.np_
    osz = 1 if spec.rq is not None and spec.out_dtype != "int32" else 4
    # a (+ its shifted copy for int8), the packed weight / panel, the output; qbmm adds the per-column bias
    shifted = spec.a_dtype == "int8" or (not batched and spec.kp != spec.k)
    bytes_ = bsz * (spec.m * kp * (2 if shifted else 1) + kp * np_ + spec.m * np_ * osz
                    + (4 * np_ if batched else 0))
    return dict(batch=bsz, rows=bsz * spec.m, cols=spec.n, red=kp, h=spec.m, w=np_, ci=spec.k, co=spec.n,
                kh=1, kw=1, stride=1, groups=1, oh=1, ow=spec.m, n_ocb=np_ // 16, ob=16,
                flops=2 * bsz * spec.m * spec.k * spec.n, bytes=bytes_, depthwise=False, ksplit=0, esz=1,
                mtot=spec.m, outer=bsz)


class QMatmulKernel:
    """int8 VNNI matmul by a constant weight; tile (rm, rn) = (rows, 16-column blocks)."""

    kind = "qmatmul"
    spec_type = QM.QMatmulSpec

    def describe(self, spec: QM.QMatmulSpec) -> dict[str, float]:
        return _qmm_describe(spec, batched=False)

    def default_tile(self, spec: QM.QMatmulSpec) -> tuple[int, ...]:
        if spec.amx:            # (16-row tiles, 16-column blocks) of one AMX block
            return tuple(QM.pick_amx_tile(spec.mp, spec.np_ // 16))
        return tuple(QM.pick_tile(spec.m, spec.np_ // 16))

    def arg_shapes(self, spec: QM.QMatmulSpec) -> tunable.Shapes:
        out = [((spec.m, spec.k), spec.a_dtype), ((spec.np_ // 16, spec.kp // 4, 16, 4), "int8"),
               ((spec.np_,), "int32")]
        if spec.rq is not None:
            out.append(((3, spec.np_), Q.requant_dtype(spec.rq)))
        return out + [(QM.out_shape(spec), spec.out_dtype)]

    def build(self, spec: QM.QMatmulSpec, tile: tuple[int, ...] | None = None) -> Any:
        return QM.make_qmatmul(spec, tile)

    def from_fields(self, fields: dict[str, Any]) -> QM.QMatmulSpec:
        return QM.QMatmulSpec(**_known(QM.QMatmulSpec, _with_requants(fields, ("rq",))))


class QBmmKernel:
    """int8 VNNI batched activation x activation matmul; tile (rm, rn) = (rows, 16-column blocks)."""

    kind = "qbmm"
    spec_type = QB.QBmmSpec

    def describe(self, spec: QB.QBmmSpec) -> dict[str, float]:
        return _qmm_describe(spec, batched=True)

    def default_tile(self, spec: QB.QBmmSpec) -> tuple[int, ...]:
        if spec.amx:
            return tuple(QM.pick_amx_tile(spec.m, spec.n // 16))
        return tuple(QM.pick_tile(spec.m, spec.n // 16))

    def arg_shapes(self, spec: QB.QBmmSpec) -> tunable.Shapes:
        return [((spec.bsz, spec.m, spec.k), spec.a_dtype), (QB.panel_shape(spec), "int8"),
                ((spec.bsz, spec.n), "int32"), (QB.out_shape(spec), spec.out_dtype)]

    def build(self, spec: QB.QBmmSpec, tile: tuple[int, ...] | None = None) -> Any:
        return QB.make_qbmm(spec, tile)

    def from_fields(self, fields: dict[str, Any]) -> QB.QBmmSpec:
        return QB.QBmmSpec(**_known(QB.QBmmSpec, _with_requants(fields, ("rq",))))


class AttentionKernel:
    """fp32 attention in one pass over key blocks; tile (tq, tk) = (query block, key block)."""

    kind = "attention"
    spec_type = A.AttentionSpec

    def describe(self, spec: A.AttentionSpec) -> dict[str, float]:
        """Shapes in the columns' terms: rows = bh * lq queries, cols = dv, red = d, h / w = lq / lk, the
        flags is_depthwise = a mask tensor is read, k_split = causal, groups = query heads per K head."""
        bh, lq, lk, d, dv = spec.bh, spec.lq, spec.lk, spec.d, spec.dv
        causal = spec.causal >= 0
        # (query, key) pairs a query sees: all, or the causal prefix
        pairs = sum(min(lk, i + spec.causal + 1) for i in range(lq)) if causal else lq * lk
        mask = max(spec.mask_batch, 1) * max(spec.mask_rows, 1) * lk if spec.mask_batch else 0
        bytes_ = 4 * (bh * lq * d + bh // spec.k_group * lk * d + bh // spec.v_group * lk * dv
                      + bh * lq * dv + mask)
        return dict(batch=bh, rows=bh * lq, cols=dv, red=d, h=lq, w=lk, ci=d, co=dv, kh=1, kw=1, stride=1,
                    groups=spec.k_group, oh=lq, ow=lk, n_ocb=1, ob=dv, flops=2 * bh * pairs * (d + dv),
                    bytes=bytes_, depthwise=spec.mask_batch > 0, ksplit=causal, esz=4, lq=lq, lk=lk, d=d,
                    dv=dv, causal=spec.causal, pairs=pairs)

    def default_tile(self, spec: A.AttentionSpec) -> tuple[int, ...]:
        # imported here: importing passes/ registers every pass
        from passes.einsum import default_tile
        return tuple(default_tile(spec.lq, spec.lk))

    def arg_shapes(self, spec: A.AttentionSpec) -> tunable.Shapes:
        f32 = "float32"
        return [((spec.bh, spec.lq, spec.d), f32), ((spec.bh // spec.k_group, spec.lk, spec.d), f32),
                ((spec.bh // spec.v_group, spec.lk, spec.dv), f32),
                ((max(spec.mask_batch, 1), max(spec.mask_rows, 1), spec.lk), f32),
                ((spec.bh, spec.lq, spec.dv), f32)]

    def build(self, spec: A.AttentionSpec, tile: tuple[int, ...] | None = None) -> Any:
        tq, tk = self.default_tile(spec) if tile is None else tile
        func = A.make_attention(dataclasses.replace(spec, tq=int(tq), tk=int(tk)))
        return func.with_attr("global_symbol", "main")     # private in a Relax module; here built alone

    def from_fields(self, fields: dict[str, Any]) -> A.AttentionSpec:
        return A.AttentionSpec(**_known(A.AttentionSpec, fields))


for _kernel in (ConvKernel(), QConvKernel(), MatmulKernel(), QMatmulKernel(), QBmmKernel(), AttentionKernel()):
    tunable.register(_kernel)


# ----------------------------------------------------------------------------------------------------------
# measuring
# ----------------------------------------------------------------------------------------------------------
def schedule_of(func: Any) -> str | None:
    """The schedule a built kernel got ("tiled" / "simple" / "none"), None where it does not say."""
    return str(func.attrs[SCHEDULE_ATTR]) if SCHEDULE_ATTR in func.attrs else None


def toolchain() -> dict[str, str]:
    return {"tvm": tvm.__version__}


def build_graph(g: Any, target: Any) -> Any:
    """The TVM backend's executable of graph ``g`` for ``target`` (a compiler.target.Target)."""
    from compiler.backends.tvm import BACKEND
    return BACKEND.build(g, target)


def _args(shapes: tunable.Shapes) -> list[Any]:
    """Device tensors of ``shapes``: seeded normal floats, integer zeros."""
    rng = np.random.default_rng(0)
    return [tvm.runtime.tensor(rng.standard_normal(s).astype(dt) if dt.startswith("float")
                               else np.zeros(s, dt)) for s, dt in shapes]


def _evaluator(func: Any, args: list[Any], target: Any, repeat: int, min_repeat_ms: float) -> Any:
    """A ``time_evaluator`` of the compiled ``func`` whose ``number`` of calls lasts >= ``min_repeat_ms``."""
    lib = tvm.compile(tvm.IRModule({"main": func}), target)
    lib["main"](*args)                                       # warm-up (also page-faults the buffers in)
    t0 = time.perf_counter()
    lib["main"](*args)
    once = max(time.perf_counter() - t0, 1e-7)
    number = max(1, int(min_repeat_ms * 1e-3 / once))
    return lib.mod.time_evaluator("main", tvm.cpu(), number=number, repeat=repeat)


def time_kernels(funcs: Sequence[Any], shapes: tunable.Shapes, target: Any, repeat: int = 5,
                 min_repeat_ms: float = 15.0, interleaved: bool = True) -> list[list[float]]:
    """Seconds per call of each built kernel (taking arguments of ``shapes``) compiled for ``target``:
    ``repeat`` runs each.  ``interleaved``: every round times each kernel once, so a burst of load from
    another process hits all of them alike; else each kernel's runs back to back."""
    if not interleaved:
        out = []
        for func in funcs:
            args = _args(shapes)
            ev = _evaluator(func, args, target, repeat, min_repeat_ms)
            out.append([float(r) for r in ev(*args).results])
        return out
    args = _args(shapes)
    evs = [_evaluator(func, args, target, 1, min_repeat_ms) for func in funcs]
    runs: list[list[float]] = [[] for _ in funcs]
    for _ in range(repeat):
        for i, ev in enumerate(evs):
            runs[i].append(float(ev(*args).results[0]))
    return runs


def shift_kernel(spec: Any, terms: int, tile: tuple[int, ...] | None = None) -> tuple[Any, tunable.Shapes]:
    """(PrimFunc, argument shapes) of the shift-and-add conv / matmul (shiftadd.py) for the layer of the VNNI
    ``spec`` (QConvSpec / QMatmulSpec): the VNNI kernel's arguments, the int8 weight replaced by the code."""
    from . import shiftadd as S
    shapes = list(tunable.kernel_of(spec).arg_shapes(spec))
    if isinstance(spec, Q.QConvSpec):
        shapes[1] = (S.conv_code_shape(spec, terms), S.CODE_DTYPE)
        return S.make_shift_qconv2d(spec, terms, tile), shapes
    shapes[1] = (S.matmul_code_shape(spec, terms), S.CODE_DTYPE)
    return S.make_shift_qmatmul(spec, terms, tile), shapes


def cpu_timer(func: Any, shapes: tunable.Shapes, target: Any, min_s: float = 0.05) -> Any:
    """CPU seconds of this process per call of ``func`` on zero-filled arguments (the integer kernels' time does
    not depend on the values), over a loop of >= ``min_s`` s, per call of the returned function. Load from
    other processes is not counted, as it is by the wall clock of :func:`time_kernels`."""
    threads = tvm.get_global_func("runtime.NumThreads")()
    if threads != 1:
        raise RuntimeError(f"the TVM runtime runs {threads} threads: time with TVM_NUM_THREADS=1")
    fn = tvm.compile(tvm.IRModule({"main": func}), target)["main"]
    args = [tvm.runtime.tensor(np.zeros(s, dt)) for s, dt in shapes]
    fn(*args)                                               # warm-up (also page-faults the buffers in)
    t0 = time.process_time()
    fn(*args)
    number = max(1, int(min_s / max(time.process_time() - t0, 1e-6)))

    def run() -> float:
        t = time.process_time()
        for _ in range(number):
            fn(*args)
        return (time.process_time() - t) / number
    return run
