"""The lowering table of the MLIR backend: OpDef -> function (ctx, node, args) -> [ir.Value].

Lowerings live in the op-family modules of this package and register themselves with
`@lowers(op)`. `LowerCtx` holds the helpers they share: element types, constants, empty and
filled tensors, a broadcasting `linalg.generic` for elementwise math, reductions, reshapes.
Every helper must be called inside an active `ir.Context`, `ir.Location` and insertion point.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from iree.compiler import ir
from iree.compiler.dialects import arith, linalg, tensor, util

from compiler.backends.mlir_runtime import to_abi
from compiler.diagnostics import BackendToolError, SourceLoc, Unsupported
from compiler.ir import Graph, Node, Value
from compiler.ops.registry import OpDef
from compiler.target import Target
from compiler.types import DType

LowerFn = Callable[["LowerCtx", Node, list[ir.Value]], list[ir.Value]]
LOWERINGS: dict[OpDef, LowerFn] = {}


def lowers(*ops: OpDef) -> Callable[[LowerFn], LowerFn]:
    """Register `fn` as the lowering of each op in `ops` (the OpDef object is the key)."""
    def deco(fn: LowerFn) -> LowerFn:
        for op in ops:
            if op in LOWERINGS:
                raise ValueError(f"{op.name} has two mlir lowerings")
            LOWERINGS[op] = fn
        return fn
    return deco


def first_lines(text: str, n: int = 8) -> str:
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    return "\n".join(lines[:n]) if lines else "(no diagnostics)"


def lower_nodes(ctx: "LowerCtx", nodes: Sequence[Node], env: dict[int, ir.Value],
                fenced: set[int] = frozenset()) -> None:
    """Lower `nodes` in order through their registered lowerings, binding each result in `env`
    (id(value) -> ir.Value; constants are added on first read); the results of the nodes whose id() is in
    `fenced` go behind util.optimization_barrier (IREE fuses nothing across it). A lowering that fails is
    reported naming the node and its op."""
    for node in nodes:
        try:
            outs = LOWERINGS[node.op](ctx, node, [read(ctx, env, v) for v in node.inputs])
        except (Unsupported, BackendToolError):
            raise
        except Exception as e:  # noqa: BLE001  (MLIR errors carry C++ text)
            loc = node.loc or SourceLoc(ctx.graph.source, node.name, node.op.name)
            raise BackendToolError(f"mlir could not lower {node.op.name}: {first_lines(str(e))}", loc) from None
        if id(node) in fenced:
            outs = [util.optimization_barrier([o.type], [o]) for o in outs]
        for v, o in zip(node.outputs, outs):
            env[id(v)] = o


def read(ctx: "LowerCtx", env: dict[int, ir.Value], v: Value) -> ir.Value:
    """v's value in `env`; a constant becomes an arith.constant on first read. On cuda a constant of
    more than one element that is all one value goes behind util.optimization_barrier: IREE 3.13 folds
    such a splat into the body of the contraction reading it (a conv filter becomes a scalar), and its
    GPU pipeline then fails to distribute the reduction that is left ("failed to distribute"). Onnx's
    light zoo graphs have only splat weights."""
    if id(v) not in env:
        env[id(v)] = ctx.unfolded(ctx.const(v.const, v.type.dtype), v)
    return env[id(v)]


PAR = linalg.IteratorType.parallel
RED = linalg.IteratorType.reduction


def elem_type(dt: DType) -> ir.Type:
    """The MLIR element type of an IR dtype. Integers are signless (uint8 -> i8); the lowerings pick signed or
    unsigned arithmetic from the node's DType. The types carried in integers (compiler/backends/byte_types.py,
    mlir_lower/casts.py): bfloat16 as its bits in i16, float8 / float4 as their bits in i8, int4 / int2 /
    uint4 / uint2 as their value in i8."""
    if dt is DType.F32:
        return ir.F32Type.get()
    if dt is DType.F16:
        return ir.F16Type.get()
    if dt is DType.F64:
        return ir.F64Type.get()
    if dt is DType.BOOL:
        return ir.IntegerType.get_signless(1)
    return ir.IntegerType.get_signless(dt.numpy.itemsize * 8)


def is_float_type(t: ir.Type) -> bool:
    return isinstance(t, (ir.F32Type, ir.F16Type, ir.F64Type))


def int_width(t: ir.Type) -> int:
    return ir.IntegerType(t).width


def shape_of(v: ir.Value) -> tuple[int, ...]:
    return tuple(ir.RankedTensorType(v.type).shape)


def elem_of(v: ir.Value) -> ir.Type:
    return ir.RankedTensorType(v.type).element_type


def tensor_type(shape: Sequence[int], et: ir.Type) -> ir.RankedTensorType:
    return ir.RankedTensorType.get(list(shape), et)


def scalar(value: Any, et: ir.Type) -> ir.Value:
    """An arith.constant scalar of element type `et` (i1 takes bools)."""
    if is_float_type(et):
        return arith.ConstantOp(et, float(value)).result
    if int_width(et) == 1:
        return arith.ConstantOp(et, ir.IntegerAttr.get(et, 1 if value else 0)).result
    return arith.ConstantOp(et, ir.IntegerAttr.get(et, _signed_bits(int(value), int_width(et)))).result


def _signed_bits(v: int, w: int) -> int:
    """The signed value of v's low w bits (IntegerAttr wants it for signless types)."""
    v &= (1 << w) - 1
    return v - (1 << w) if v >= 1 << (w - 1) else v


def in_f32(fn: Callable[..., ir.Value]) -> Callable[..., ir.Value]:
    """`fn` of float scalars, computed in float32 for float16 operands and rounded once to float16, as numpy
    computes its float16 exp, log, tanh, ... (IREE's float16 polynomials can be an ulp off)."""
    def wrapped(*xs: ir.Value) -> ir.Value:
        if not isinstance(xs[0].type, ir.F16Type):
            return fn(*xs)
        f32 = ir.F32Type.get()
        return arith.truncf(xs[0].type, fn(*(arith.extf(f32, x) for x in xs)))
    return wrapped


def index(v: int) -> ir.Value:
    """An `index` constant."""
    return arith.ConstantOp(ir.IndexType.get(), v).result


def slice_at(x: ir.Value, offsets: Sequence[int | ir.Value], sizes: Sequence[int], keep: int) -> ir.Value:
    """x[offsets : offsets + sizes] with its leading rank - keep axes (of size 1) dropped; an offset may be
    an `index` value."""
    dynamic = [o for o in offsets if isinstance(o, ir.Value)]
    static = [ir.ShapedType.get_dynamic_stride_or_offset() if isinstance(o, ir.Value) else o for o in offsets]
    return tensor.extract_slice(tensor_type(sizes[len(sizes) - keep:], elem_of(x)), x, dynamic, [], [],
                                static, list(sizes), [1] * len(sizes))


def as_value(x: Any) -> ir.Value:
    """The single result of what an op builder returned (a Value, an OpView or a result list)."""
    if isinstance(x, ir.Value):
        return x
    if isinstance(x, (ir.OpView, ir.Operation)):
        return x.results[0]
    return x[0]


def dim(i: int) -> ir.AffineExpr:
    return ir.AffineDimExpr.get(i)


def amap(ndims: int, exprs: Sequence[Any]) -> ir.AffineMap:
    """An affine map of `ndims` dims; ints in `exprs` are dims, 'zero' is the constant 0."""
    out = [ir.AffineConstantExpr.get(0) if e == "zero" else (dim(e) if isinstance(e, int) else e)
           for e in exprs]
    return ir.AffineMap.get(ndims, 0, out)


def generic(inputs: Sequence[ir.Value], outputs: Sequence[ir.Value], maps: Sequence[ir.AffineMap],
            iters: Sequence[Any], body: Callable[..., Any]) -> list[ir.Value]:
    """linalg.generic; `body(*block_args)` returns the value(s) to yield."""
    op = linalg.GenericOp_(list(inputs), list(outputs), list(maps), list(iters))
    block = op.regions[0].blocks[0]
    with ir.InsertionPoint(block):
        res = body(*block.arguments)
        linalg.YieldOp(list(res) if isinstance(res, (list, tuple)) else [res])
    return list(op.results)


def broadcast_map(in_shape: Sequence[int], out_shape: Sequence[int]) -> ir.AffineMap:
    """numpy broadcasting as an indexing map: right-aligned, size-1 dims read index 0."""
    r, rank = len(in_shape), len(out_shape)
    exprs = ["zero" if d == 1 and out_shape[rank - r + j] != 1 else rank - r + j
             for j, d in enumerate(in_shape)]
    return amap(rank, exprs)


@dataclass
class LowerCtx:
    """What a lowering may use: the graph, the target and the tensor-building helpers."""

    graph: Graph
    target: Target

    # -- tensors ------------------------------------------------------------------
    def const(self, array: np.ndarray, dt: DType | None = None) -> ir.Value:
        """A dense arith.constant (splat when all elements are equal)."""
        array = np.asarray(array)
        dt = dt or DType.from_numpy(array.dtype)
        if dt is DType.BF16 or dt.is_narrow_float or dt.is_int and dt.bits < 8:     # carried in an i16 / i8
            array = to_abi(array, dt)
            dt = DType.from_numpy(array.dtype)
        et = elem_type(dt)
        tt = tensor_type(array.shape, et)
        if dt is DType.BOOL:
            attr = ir.DenseElementsAttr.get(np.ascontiguousarray(array, dtype=np.bool_), type=tt)
        elif dt.is_float and array.size and np.all(array == array.flat[0]):
            attr = ir.DenseElementsAttr.get_splat(tt, ir.FloatAttr.get(et, float(array.flat[0])))
        elif not dt.is_float and array.size and np.all(array == array.flat[0]):
            v = _signed_bits(int(array.flat[0]), int_width(et))
            attr = ir.DenseElementsAttr.get_splat(tt, ir.IntegerAttr.get(et, v))
        else:
            data = array.astype(dt.numpy)
            if dt.is_unsigned:
                data = data.view(f"int{dt.bits}")
            attr = ir.DenseElementsAttr.get(np.ascontiguousarray(data), type=tt)
        return arith.ConstantOp(tt, attr).result

    @staticmethod
    def splat(v: Value) -> int | float | None:
        """The one value of v when v is a constant of more than one element, all that value; else None."""
        if not v.is_const:
            return None
        arr = np.asarray(v.const)
        return arr.flat[0].item() if arr.size >= 2 and np.all(arr == arr.flat[0]) else None

    def unfolded(self, c: ir.Value, v: Value) -> ir.Value:
        """c (the lowered form of v) behind util.optimization_barrier when the target is cuda and v is a
        splat constant (see `read`); else c."""
        if self.target.kind != "cuda" or self.splat(v) is None:
            return c
        return util.optimization_barrier([c.type], [c])

    def empty(self, shape: Sequence[int], et: ir.Type) -> ir.Value:
        return tensor.EmptyOp(list(shape), et).result

    def full(self, shape: Sequence[int], et: ir.Type, value: Any) -> ir.Value:
        return linalg.fill(scalar(value, et), outs=[self.empty(shape, et)])

    def ewise(self, inputs: Sequence[ir.Value], out_shape: Sequence[int], out_et: ir.Type,
              body: Callable[..., ir.Value]) -> ir.Value:
        """Elementwise map with numpy broadcasting: body(*scalars) -> scalar of out_et."""
        out_shape = tuple(out_shape)
        maps = [broadcast_map(shape_of(v), out_shape) for v in inputs] + [amap(len(out_shape),
                                                                                range(len(out_shape)))]
        return generic(inputs, [self.empty(out_shape, out_et)], maps, [PAR] * len(out_shape),
                       lambda *a: body(*a[:-1]))[0]

    def broadcast_to(self, x: ir.Value, shape: Sequence[int]) -> ir.Value:
        if shape_of(x) == tuple(shape):
            return x
        return self.ewise([x], shape, elem_of(x), lambda a: a)

    def reduce(self, x: ir.Value, axes: Sequence[int], init: Any,
               combine: Callable[[ir.Value, ir.Value], ir.Value], keepdims: bool = False,
               out_et: ir.Type | None = None, pre: Callable[[ir.Value], ir.Value] | None = None) -> ir.Value:
        """Reduce `axes` of x: acc = combine(pre(x), acc) starting from `init` (a Python scalar)."""
        shape = shape_of(x)
        rank = len(shape)
        axes = sorted({a % rank for a in axes}) if rank else []
        keep = [i for i in range(rank) if i not in axes]
        et = out_et or elem_of(x)
        out_shape = [shape[i] for i in keep]
        acc = self.full(out_shape, et, init)
        iters = [RED if i in axes else PAR for i in range(rank)]
        y = generic([x], [acc], [amap(rank, range(rank)), amap(rank, keep)], iters,
                    lambda a, b: combine(pre(a) if pre else a, b))[0]
        if keepdims:
            y = self.reshape(y, [1 if i in axes else d for i, d in enumerate(shape)])
        return y

    def reshape(self, x: ir.Value, shape: Sequence[int]) -> ir.Value:
        """Row-major reshape: collapse to 1-D, expand to `shape` (canonicalize folds the pair)."""
        src, shape = shape_of(x), tuple(int(d) for d in shape)
        if src == shape:
            return x
        et = elem_of(x)
        n = int(np.prod(src, dtype=np.int64))
        flat = x
        if not src:                 # 0-d -> 1-d is an expansion, 1-d -> 0-d a collapse (no reassociation)
            flat = tensor.expand_shape(tensor_type([1], et), x, [], [], [1])
        elif len(src) != 1:
            flat = tensor.collapse_shape(tensor_type([n], et), x, [list(range(len(src)))])
        if not shape:
            return tensor.collapse_shape(tensor_type([], et), flat, [])
        if len(shape) == 1:
            return flat
        return tensor.expand_shape(tensor_type(shape, et), flat, [list(range(len(shape)))], [], list(shape))

    def cast_int(self, v: ir.Value, to: ir.Type, signed: bool = True) -> ir.Value:
        """Scalar integer resize: extsi/extui when widening, trunci when narrowing."""
        wf, wt = int_width(v.type), int_width(to)
        if wf == wt:
            return v
        if wf > wt:
            return arith.trunci(to, v)
        return arith.extsi(to, v) if signed else arith.extui(to, v)


def is_unsigned(dt: DType) -> bool:
    return dt.is_unsigned or dt is DType.BOOL
