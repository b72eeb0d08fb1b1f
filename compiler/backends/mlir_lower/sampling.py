"""MLIR lowerings of grid_sample and roi_align: one linalg.generic over the output each, whose body
evaluates the ops' coordinate formulas (compiler/ops/sampling.py, given scalar arith / math builders as
its `Math`) in float32 as the references, and reads the pixels with tensor.extract at the (clamped)
indices they compute; the sums run in float32 (float64 for float64 data).

roi_align's samples per bin are a loop in the body (scf.for over the bin's rows, then its columns), so
the adaptive sampling_ratio 0, ceil(bin size) samples computed from the RoI, loops exactly that often.
"""
from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Callable
from typing import Any

from iree.compiler import ir
from iree.compiler.dialects import arith, linalg, math, scf, tensor

from compiler.backends.mlir_lower.registry import (
    PAR,
    LowerCtx,
    amap,
    elem_of,
    generic,
    is_float_type,
    lowers,
    scalar,
    shape_of,
)
from compiler.ir import Node
from compiler.ops import sampling

_INT_LIMIT = float(2 ** 30)        # to_int clamps its float to +-this first (fptosi past i32 is poison)


def _f32() -> ir.Type:
    return ir.F32Type.get()


def _i32() -> ir.Type:
    return ir.IntegerType.get_signless(32)


class _S:
    """An MLIR scalar with Python's arithmetic and comparisons (arith ops at the current insertion
    point), so the shared formulas run on it; Python numbers beside it become constants of its type,
    and an integer beside a float is converted to that float type (as numpy promotes it)."""
    __slots__ = ("v",)

    def __init__(self, v: ir.Value) -> None:
        self.v = v

    @property
    def is_float(self) -> bool:
        return is_float_type(self.v.type)

    def __neg__(self) -> _S:
        return _S(arith.negf(self.v) if self.is_float else arith.subi(scalar(0, self.v.type), self.v))


def _common(*xs: Any) -> ir.Type:
    """The element type an operation on xs (_S or Python numbers) computes in: a float operand's type,
    else the integer operand's; float32 for Python numbers alone."""
    ts = [x.v.type for x in xs if isinstance(x, _S)]
    floats = [t for t in ts if is_float_type(t)]
    return (floats or ts or [_f32()])[0]


def _val(x: Any, et: ir.Type) -> ir.Value:
    """x (an _S or a Python number) as a scalar of `et`."""
    if not isinstance(x, _S):
        return scalar(x, et)
    if is_float_type(et) and not x.is_float:
        return arith.sitofp(et, x.v)
    return x.v


def _binary(fop: Callable, iop: Callable) -> tuple[Callable, Callable]:
    def op(a: Any, b: Any) -> _S:
        et = _common(a, b)
        return _S((fop if is_float_type(et) else iop)(_val(a, et), _val(b, et)))
    return op, lambda a, b: op(b, a)


def _compare(fp: str, ip: str) -> Callable:
    def op(a: Any, b: Any) -> _S:
        et = _common(a, b)
        if is_float_type(et):          # ordered: false where either is NaN, as numpy
            return _S(arith.cmpf(getattr(arith.CmpFPredicate, fp), _val(a, et), _val(b, et)))
        return _S(arith.cmpi(getattr(arith.CmpIPredicate, ip), _val(a, et), _val(b, et)))
    return op


_S.__add__, _S.__radd__ = _binary(arith.addf, arith.addi)
_S.__sub__, _S.__rsub__ = _binary(arith.subf, arith.subi)
_S.__mul__, _S.__rmul__ = _binary(arith.mulf, arith.muli)
_S.__truediv__, _S.__rtruediv__ = _binary(arith.divf, arith.divsi)
_S.__lt__, _S.__le__ = _compare("OLT", "slt"), _compare("OLE", "sle")
_S.__gt__, _S.__ge__ = _compare("OGT", "sgt"), _compare("OGE", "sge")


def _where(c: _S, a: Any, b: Any) -> _S:
    et = _common(a, b)
    return _S(arith.select(c.v, _val(a, et), _val(b, et)))


def _to_int(x: _S) -> _S:
    """Truncation toward zero to i32 (numpy's astype), of the float clamped into +-2^30 (NaN: -2^30)."""
    if not x.is_float:
        return x
    x = _where(x > _INT_LIMIT, _INT_LIMIT, _where(x >= -_INT_LIMIT, x, -_INT_LIMIT))
    return _S(arith.fptosi(_i32(), x.v))


MLIR = sampling.Math(where=_where, floor=lambda x: _S(math.floor(x.v)),
                     rint=lambda x: _S(math.roundeven(x.v)), to_int=_to_int,
                     both=lambda a, b: _S(arith.andi(a.v, b.v)), scope=sampling.Lets)   # SSA names values


def _convert(v: ir.Value, et: ir.Type) -> ir.Value:
    """A float scalar in float type `et` (extended or truncated)."""
    src = v.type
    if src == et:
        return v
    wider = isinstance(et, ir.F64Type) or (isinstance(et, ir.F32Type) and isinstance(src, ir.F16Type))
    return arith.extf(et, v) if wider else arith.truncf(et, v)


def _acc_type(et: ir.Type) -> ir.Type:
    """What the sums run in: float64 for float64 data, else float32 (the references sum in float64)."""
    return et if isinstance(et, ir.F64Type) else _f32()


def _index(v: _S) -> ir.Value:
    return arith.index_cast(ir.IndexType.get(), v.v)


def _loops(n: int) -> list[ir.Value]:
    return [linalg.IndexOp(d).result for d in range(n)]


# -- grid_sample -------------------------------------------------------------------------------
@lowers(sampling.grid_sample)
def _grid_sample(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    """out[n, c, o...] = sum over the tap window's corners of the weight product times x[n, c, taps]
    (0 where zeros padding leaves the image); the grid is read once per spatial axis, each through an
    indexing map onto its component (grid[..., 0] is the innermost axis)."""
    x, grid = args
    a, et = node.attrs, elem_of(x)
    spatial = shape_of(x)[2:]
    nd, out = len(spatial), node.outputs[0].type.shape
    rank, acc_t = len(out), _acc_type(et)
    maps = [amap(rank, [0, *range(2, rank), ir.AffineConstantExpr.get(nd - 1 - d)]) for d in range(nd)]

    def body(*vals: ir.Value) -> ir.Value:
        vals, n, c = vals[:nd], *_loops(2)
        coords = [sampling.grid_coord(_S(_convert(g, _f32())), s, a, MLIR) for g, s in zip(vals, spatial)]
        taps = [sampling.grid_taps(u, s, a, MLIR) for u, s in zip(coords, spatial)]
        total = None
        for corner in itertools.product(*taps):
            v = _convert(tensor.ExtractOp(x, [n, c, *[_index(t.index) for t in corner]]).result, acc_t)
            weights = [_S(_convert(t.weight.v, acc_t)) for t in corner if isinstance(t.weight, _S)]  # nearest: 1
            if weights:
                v = arith.mulf(functools.reduce(operator.mul, weights).v, v)
            inside = [t.inside for t in corner if t.inside is not None]
            if inside:
                v = arith.select(functools.reduce(MLIR.both, inside).v, v, scalar(0.0, acc_t))
            total = v if total is None else arith.addf(total, v)
        return _convert(total, et)
    ident = amap(rank, range(rank))
    return generic([grid] * nd, [ctx.empty(out, et)], [*maps, ident], [PAR] * rank, body)


# -- roi_align ---------------------------------------------------------------------------------
def _for(count: Any, init: ir.Value, step: Callable[[ir.Value, ir.Value], ir.Value]) -> ir.Value:
    """scf.for i in [0, count) carrying acc = step(i, acc) (i as float32); count a Python int or an i32 _S."""
    idx = ir.IndexType.get()
    ub = _index(count) if isinstance(count, _S) else arith.ConstantOp(idx, count).result
    loop = scf.ForOp(arith.ConstantOp(idx, 0).result, ub, arith.ConstantOp(idx, 1).result, [init])
    with ir.InsertionPoint(loop.body):
        i = arith.sitofp(_f32(), arith.index_cast(_i32(), loop.induction_variable))
        scf.YieldOp([step(i, loop.inner_iter_args[0])])
    return loop.results[0]


def _as_f32(v: Any) -> _S:
    """An i32 _S or a Python number as a float32 _S."""
    return _S(_val(v, _f32()))


@lowers(sampling.roi_align)
def _roi_align(ctx: LowerCtx, node: Node, args: list[ir.Value]) -> list[ir.Value]:
    """out[r, c, by, bx]: the average (sum / count) or max over the bin's samples (sampling_ratio per
    axis, or ceil(bin size) computed from the RoI when 0) of the four weighted bilinear taps of x[batch[r],
    c]; 0 for a RoI without samples. The batch index is clamped into range (the reference refuses one
    past it)."""
    x, rois, batch = args
    a, et = node.attrs, elem_of(x)
    n_img, _, height, width = shape_of(x)
    ph, pw, acc_t = a["output_height"], a["output_width"], _acc_type(et)
    out = node.outputs[0].type.shape
    is_max = a["mode"] == "max"
    maps = [amap(4, [0, ir.AffineConstantExpr.get(k)]) for k in range(4)] + [amap(4, [0]), amap(4, range(4))]

    def body(x1, y1, x2, y2, b, _out):
        _r, c, by, bx = _loops(4)
        roi = [_S(_convert(v, _f32())) for v in (x1, y1, x2, y2)]
        box_y = sampling.roi_box(roi[1], roi[3], ph, a, MLIR)
        box_x = sampling.roi_box(roi[0], roi[2], pw, a, MLIR)
        gy, gx = (sampling.roi_grid(box, a, MLIR) for box in (box_y, box_x))
        gy, gx = (_where(g < 0, 0, g) if isinstance(g, _S) else g for g in (gy, gx))
        gyf, gxf = _as_f32(gy), _as_f32(gx)
        img = _index(_where(_S(b) < 0, 0, _where(_S(b) > n_img - 1, n_img - 1, _S(b))))
        byf, bxf = (arith.sitofp(_f32(), arith.index_cast(_i32(), v)) for v in (by, bx))

        def taps(box: sampling.RoiBox, b: ir.Value, i: ir.Value, count: Any, size: int) -> tuple:
            return sampling.roi_sample_taps(sampling.roi_sample_coord(box, _S(b), _S(i), count), size, MLIR)

        def row(iy: ir.Value, acc: ir.Value) -> ir.Value:
            ty = taps(box_y, byf, iy, gyf, height)

            def col(ix: ir.Value, acc: ir.Value) -> ir.Value:
                terms = []
                for ya, xa in itertools.product(ty, taps(box_x, bxf, ix, gxf, width)):
                    pix = tensor.ExtractOp(x, [img, c, _index(ya.index), _index(xa.index)]).result
                    w = _S(_convert(ya.weight.v, acc_t)) * _S(_convert(xa.weight.v, acc_t))
                    terms.append(arith.mulf(w.v, _convert(pix, acc_t)))
                if is_max:
                    t01, t23 = arith.maximumf(terms[0], terms[1]), arith.maximumf(terms[2], terms[3])
                    return arith.maximumf(acc, arith.maximumf(t01, t23))
                return arith.addf(acc, arith.addf(arith.addf(arith.addf(terms[0], terms[1]), terms[2]),
                                                  terms[3]))
            return _for(gx, acc, col)
        pooled = _S(_for(gy, scalar(float("-inf") if is_max else 0.0, acc_t), row))
        if not is_max:                                  # gy * gx in float32: exact below 2^24 samples
            pooled = pooled / _S(_convert((gyf * gxf).v, acc_t))
        some = MLIR.both(gyf > 0, gxf > 0)
        return _convert(_where(some, pooled, 0.0).v, et)
    return generic([rois] * 4 + [batch], [ctx.empty(out, et)], maps, [PAR] * 4, body)
