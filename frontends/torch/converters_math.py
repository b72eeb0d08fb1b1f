"""ATen elementwise arithmetic, comparisons, matmuls and reductions."""
from __future__ import annotations

from typing import Any

import numpy as np

from compiler.ops import bitwise
from compiler.ops import elementwise as ew
from compiler.ops import linalg, reduce as rd
from compiler.ops import unary_math as um
from frontends.torch.importer import TorchContext, converts, torch_to_numpy_dtype


def _binary(op):
    def convert(ctx: TorchContext, node, args, kwargs):
        dt = ctx.out_dtype()
        x, y = (ctx.cast(ctx.as_operand(a, dt), dt) for a in args[:2])
        alpha = kwargs.get("alpha", 1)
        if alpha != 1:
            y = ctx.emit(ew.mul, [y, np.asarray(alpha, dt)])
        return ctx.emit(op, [x, y])
    return convert


converts("aten.add")(_binary(ew.add))
converts("aten.sub")(_binary(ew.sub))
converts("aten.mul")(_binary(ew.mul))
converts("aten.maximum")(_binary(ew.maximum))
converts("aten.minimum")(_binary(ew.minimum))


@converts("aten.rsub")
def _rsub(ctx, node, args, kwargs):
    return _binary(ew.sub)(ctx, node, [args[1], args[0]], kwargs)


@converts("aten.div")
def _div(ctx: TorchContext, node, args, kwargs):
    dt = ctx.out_dtype()
    mode = kwargs.get("rounding_mode")
    x, y = (ctx.cast(ctx.as_operand(a, dt), dt) for a in args[:2])
    q = ctx.emit(ew.div, [x, y])
    if mode == "floor" and np.issubdtype(dt, np.floating):
        return ctx.emit(ew.floor, [q])
    if mode == "floor":
        raise ctx.unsupported("integer floor division")
    if mode == "trunc" and np.issubdtype(dt, np.floating):
        raise ctx.unsupported("float division with rounding_mode='trunc'")
    return q


@converts("aten.pow")
def _pow(ctx: TorchContext, node, args, kwargs):
    dt = ctx.out_dtype()
    x, y = (ctx.cast(ctx.as_operand(a, dt), dt) for a in args[:2])
    if isinstance(args[1], (int, float)) and args[1] == 2:
        return ctx.emit(ew.mul, [x, x])
    if isinstance(args[1], (int, float)) and args[1] == 0.5:
        return ctx.emit(ew.sqrt, [x])
    return ctx.emit(ew.pow_, [x, y])


def _compare(op, negate=False):
    def convert(ctx: TorchContext, node, args, kwargs):
        import torch
        vals = [a.meta["val"] if isinstance(a, torch.fx.Node) else a for a in node.args[:2]]
        dt = torch_to_numpy_dtype(torch.result_type(*vals))
        x, y = (ctx.cast(ctx.as_operand(a, dt), dt) for a in args[:2])
        out = ctx.emit(op, [x, y])
        return ctx.emit(ew.logical_not, [out]) if negate else out
    return convert


converts("aten.eq")(_compare(ew.equal))
converts("aten.ne")(_compare(ew.equal, negate=True))
converts("aten.lt")(_compare(ew.less))
converts("aten.gt")(_compare(ew.greater))
converts("aten.le")(_compare(ew.greater, negate=True))
converts("aten.ge")(_compare(ew.less, negate=True))


def _unary(op, **attrs):
    def convert(ctx, node, args, kwargs):
        return ctx.emit(op, [args[0]], **attrs)
    return convert


for _name, _op in [("relu", ew.relu), ("sigmoid", ew.sigmoid), ("tanh", ew.tanh), ("exp", ew.exp),
                   ("log", ew.log), ("sqrt", ew.sqrt), ("reciprocal", ew.reciprocal), ("neg", ew.neg),
                   ("abs", ew.abs_), ("erf", ew.erf), ("floor", ew.floor), ("ceil", ew.ceil),
                   ("logical_not", ew.logical_not), ("hardswish", ew.hard_swish), ("sin", um.sin),
                   ("cos", um.cos), ("tan", um.tan), ("asin", um.asin), ("acos", um.acos),
                   ("atan", um.atan), ("sinh", um.sinh), ("cosh", um.cosh), ("asinh", um.asinh),
                   ("acosh", um.acosh), ("atanh", um.atanh), ("isnan", um.isnan)]:
    converts(f"aten.{_name}")(_unary(_op))


@converts("aten.log1p")
def _log1p(ctx: TorchContext, node, args, kwargs):
    """log(1 + x) (as ONNX writes it; no separate op)."""
    return ctx.emit(ew.log, [ctx.emit(ew.add, [args[0], np.asarray(1, ctx.out_dtype())])])


@converts("aten.expm1")
def _expm1(ctx: TorchContext, node, args, kwargs):
    """exp(x) - 1."""
    return ctx.emit(ew.sub, [ctx.emit(ew.exp, [args[0]]), np.asarray(1, ctx.out_dtype())])


converts("aten.logical_and")(_binary(ew.logical_and))
converts("aten.logical_or")(_binary(ew.logical_or))


def _bitwise(bool_op, int_op):
    """On bool tensors the bitwise ops are the logical ones."""
    def convert(ctx: TorchContext, node, args, kwargs):
        op = bool_op if ctx.out_dtype() == np.bool_ else int_op
        return (_binary(op) if len(args) > 1 else _unary(op))(ctx, node, args, kwargs)
    return convert


converts("aten.bitwise_and")(_bitwise(ew.logical_and, bitwise.bitwise_and))
converts("aten.bitwise_or")(_bitwise(ew.logical_or, bitwise.bitwise_or))
converts("aten.bitwise_not")(_bitwise(ew.logical_not, bitwise.bitwise_not))


@converts("aten.bitwise_xor")
def _bitwise_xor(ctx: TorchContext, node, args, kwargs):
    if ctx.out_dtype() != np.bool_:
        return _binary(bitwise.bitwise_xor)(ctx, node, args, kwargs)
    return ctx.emit(ew.logical_not, [_compare(ew.equal)(ctx, node, args, kwargs)])


@converts("aten.round")
def _round(ctx: TorchContext, node, args, kwargs):
    if kwargs.get("decimals", args[1] if len(args) > 1 else 0):
        raise ctx.unsupported("round with decimals != 0")
    return ctx.emit(um.round_, [args[0]])


@converts("aten.isinf")
def _isinf(ctx, node, args, kwargs):
    return ctx.emit(um.isinf, [args[0]])


@converts("aten.rsqrt")
def _rsqrt(ctx, node, args, kwargs):
    return ctx.emit(ew.reciprocal, [ctx.emit(ew.sqrt, [args[0]])])


@converts("aten.where")
def _where(ctx: TorchContext, node, args, kwargs):
    dt = ctx.out_dtype()
    return ctx.emit(ew.where, [args[0], *(ctx.cast(ctx.as_operand(a, dt), dt) for a in args[1:3])])


@converts("aten.clamp", "aten.hardtanh")
def _clamp(ctx, node, args, kwargs):
    default = (-1.0, 1.0) if "hardtanh" in str(node.target) else (None, None)
    lo = args[1] if len(args) > 1 else kwargs.get("min", default[0])
    hi = args[2] if len(args) > 2 else kwargs.get("max", default[1])
    if not all(v is None or isinstance(v, (int, float)) for v in (lo, hi)):
        raise ctx.unsupported("clamp bounds must be numbers, not tensors")
    return ctx.emit(ew.clip, [args[0]], min=-np.inf if lo is None else float(lo),
                    max=np.inf if hi is None else float(hi))


@converts("aten.mm", "aten.bmm", "aten.matmul")
def _matmul(ctx, node, args, kwargs):
    return ctx.emit(linalg.matmul, [args[0], args[1]])


@converts("aten.addmm")
def _addmm(ctx: TorchContext, node, args, kwargs):
    """addmm(bias, a, b) = beta * bias + alpha * (a @ b) -> matmul then add (as Gemm imports)."""
    bias, a, b = args[:3]
    beta, alpha = kwargs.get("beta", 1), kwargs.get("alpha", 1)
    y = ctx.emit(linalg.matmul, [a, b])
    dt = ctx.out_dtype()
    if alpha != 1:
        y = ctx.emit(ew.mul, [y, np.asarray(alpha, dt)])
    if beta != 1:
        bias = ctx.emit(ew.mul, [bias, np.asarray(beta, dt)])
    return ctx.emit(ew.add, [y, bias])


@converts("aten.linear")
def _linear(ctx: TorchContext, node, args, kwargs):
    from compiler.ops import shape
    x, w = args[0], args[1]
    wt = ctx.emit(shape.transpose, [w], perm=(1, 0))
    y = ctx.emit(linalg.matmul, [x, wt])
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    return y if bias is None else ctx.emit(ew.add, [y, bias])


def _axes(dims: Any, rank: int) -> tuple[int, ...]:
    if dims is None or dims == [] or dims == ():
        return tuple(range(rank))
    dims = [dims] if isinstance(dims, int) else dims
    return tuple(sorted(d % rank for d in dims))


def _reduce(op):
    def convert(ctx: TorchContext, node, args, kwargs):
        x = args[0]
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
        if kwargs.get("dtype") is not None and kwargs["dtype"] != node.args[0].meta["val"].dtype:
            x = ctx.cast(x, ctx.out_dtype())
        return ctx.emit(op, [x], axes=_axes(dims, len(ctx.shape(x))), keepdims=bool(keep))
    return convert


converts("aten.mean")(_reduce(rd.reduce_mean))
converts("aten.sum")(_reduce(rd.reduce_sum))
converts("aten.amax")(_reduce(rd.reduce_max))
converts("aten.amin")(_reduce(rd.reduce_min))
converts("aten.prod")(_reduce(rd.reduce_prod))


@converts("aten.argmax")
def _argmax(ctx, node, args, kwargs):
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    x = args[0]
    if dim is None:
        from compiler.ops import shape
        x = ctx.emit(shape.reshape, [x], shape=(int(np.prod(ctx.shape(x))),))
        dim = 0
    return ctx.emit(rd.argmax, [x], axis=dim, keepdims=bool(keep))


@converts("aten.cumsum")
def _cumsum(ctx, node, args, kwargs):
    return ctx.emit(rd.cumsum, [args[0]], axis=args[1])


@converts("aten.topk")
def _topk(ctx, node, args, kwargs):
    k = args[1]
    dim = args[2] if len(args) > 2 else kwargs.get("dim", -1)
    largest = args[3] if len(args) > 3 else kwargs.get("largest", True)
    return tuple(ctx.emit_multi(rd.topk, [args[0]], k=k, axis=dim, largest=bool(largest)))


@converts("aten.any", "aten.all")
def _any_all(ctx: TorchContext, node, args, kwargs):
    """any(x) = max(int(x)) > 0; all(x) = min(int(x)) > 0, over `dim` (all axes if absent)."""
    from compiler.types import DType
    x = ctx.cast(args[0], np.dtype("int32"))
    dims = args[1] if len(args) > 1 else kwargs.get("dim")
    keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    op = rd.reduce_max if "any" in str(node.target) else rd.reduce_min
    r = ctx.emit(op, [x], axes=_axes(dims, len(ctx.shape(x))), keepdims=bool(keep))
    return ctx.emit(ew.greater, [r, np.asarray(0, DType.I32.numpy)])
