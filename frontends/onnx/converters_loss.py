"""ONNX losses composed of IR ops: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (with its
optional log_prob output), over (N, C) or (N, C, d1, ..., dk) inputs, with every reduction, the
class weights and ignore_index.

The loss at position (n, d...) is -input[n, target[n, d...], d...] * weight[target[n, d...]];
positions whose target is ignore_index weigh 0. "mean" divides the weighted sum by the sum of the
applied weights (so ignored positions do not count), "sum" sums, "none" keeps the per-position
losses (onnx.reference's op_negative_log_likelihood_loss.py is the exact semantics).
"""
from __future__ import annotations

from collections.abc import Callable

import onnx

from compiler.ops import elementwise as ew
from compiler.ops import indexing, nn, reduce
from compiler.ops import shape as shape_ops
from frontends.onnx.context import ConvertContext, Operand

_REDUCTIONS = ("none", "sum", "mean")


def _loss_attrs(ctx: ConvertContext) -> tuple[str, int | None]:
    """(reduction, ignore_index or None when the attribute is absent)."""
    reduction = ctx.attr("reduction", "mean")
    if reduction not in _REDUCTIONS:
        raise ctx.invalid(f"reduction {reduction!r} (expected one of {', '.join(_REDUCTIONS)})")
    ignore_index = int(ctx.attr("ignore_index")) if ctx.has_attr("ignore_index") else None
    return reduction, ignore_index


def _check_shapes(ctx: ConvertContext, x: Operand, target: Operand, weight: Operand | None) -> None:
    """input (N, C, d...), target (N, d...), weight (C,)."""
    dims, tdims = ctx.shape(x), ctx.shape(target)
    if len(dims) < 2:
        raise ctx.invalid(f"the input must be (N, C) or (N, C, d1, ...), got shape {list(dims)}")
    if tdims != dims[:1] + dims[2:]:
        raise ctx.invalid(f"target shape {list(tdims)} does not match input shape {list(dims)} "
                          f"(expected {list(dims[:1] + dims[2:])})")
    if ctx.np_dtype(target).kind not in "iu":
        raise ctx.invalid(f"target must be int32/int64, got {ctx.np_dtype(target)}")
    if weight is not None and ctx.shape(weight) != dims[1:2]:
        raise ctx.invalid(f"weight shape {list(ctx.shape(weight))} is not [C] = {list(dims[1:2])}")


def _reduce_all(ctx: ConvertContext, op, x: Operand) -> Operand:
    return ctx.emit(op, [x], axes=tuple(range(ctx.rank(x))), keepdims=False)


def negative_log_likelihood(ctx: ConvertContext, logp: Operand, target: Operand,
                            weight: Operand | None, reduction: str,
                            ignore_index: int | None) -> Operand:
    """The NLL loss of log-probabilities `logp` (N, C, d...) at the classes `target` (N, d...).

    Ignored positions read class 0 (so every gathered index is in range) and get loss 0 and
    weight 0 through `where`, which also keeps an infinite log-probability there out of the sum.
    """
    tdims = ctx.shape(target)
    ignored = None
    if ignore_index is not None:
        ignored = ctx.emit(ew.equal, [target, ctx.const(ignore_index, like=target)])
        target = ctx.emit(ew.where, [ignored, ctx.const(0, like=target), target])
    index = ctx.emit(shape_ops.reshape, [target], shape=tdims[:1] + (1,) + tdims[1:])
    picked = ctx.emit(indexing.gather_elements, [logp, index], axis=1)
    loss = ctx.emit(ew.neg, [ctx.emit(shape_ops.reshape, [picked], shape=tdims)])
    w = None if weight is None else ctx.emit(shape_ops.gather, [weight, target], axis=0)
    if ignored is not None:
        zero = ctx.const(0, like=loss)
        loss = ctx.emit(ew.where, [ignored, zero, loss])
        w = ctx.emit(ew.where, [ignored, zero, ctx.const(1, like=loss) if w is None else w])
    if weight is not None:                         # without weights, `loss` is already zeroed
        loss = ctx.emit(ew.mul, [loss, w])
    if reduction == "none":
        return loss
    total = _reduce_all(ctx, reduce.reduce_sum, loss)
    if reduction == "sum":
        return total
    if w is None:
        return _reduce_all(ctx, reduce.reduce_mean, loss)
    return ctx.emit(ew.div, [total, _reduce_all(ctx, reduce.reduce_sum, w)])


def _convert_nll_loss(ctx: ConvertContext, node: onnx.NodeProto) -> Operand:
    """NegativeLogLikelihoodLoss(input, target[, weight])."""
    x, target, weight = ctx.input(0), ctx.input(1), ctx.optional_input(2)
    _check_shapes(ctx, x, target, weight)
    return negative_log_likelihood(ctx, x, target, weight, *_loss_attrs(ctx))


def _convert_softmax_cross_entropy(ctx: ConvertContext, node: onnx.NodeProto) -> list[Operand]:
    """SoftmaxCrossEntropyLoss(scores, labels[, weights]) -> (loss, log_prob): the NLL loss of
    log_softmax(scores) over the class axis 1."""
    x, target, weight = ctx.input(0), ctx.input(1), ctx.optional_input(2)
    _check_shapes(ctx, x, target, weight)
    log_prob = ctx.emit(nn.log_softmax, [x], axis=1)
    return [negative_log_likelihood(ctx, log_prob, target, weight, *_loss_attrs(ctx)), log_prob]


CONVERTERS: dict[str, Callable] = {
    "NegativeLogLikelihoodLoss": _convert_nll_loss,
    "SoftmaxCrossEntropyLoss": _convert_softmax_cross_entropy,
}
