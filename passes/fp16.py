"""convert_fp16: a float32 graph computes in float16 (compile(..., precision="fp16")); the signature stays
float32.

    x: f32 -> conv(x, w: f32) -> softmax        =>    x: f32 -> cast(x, f16) -> conv(., w: f16) -> cast(., f32)
                                                                 -> softmax (f32) -> ...  -> cast(y, f32) at exit

Float32 constants read by float16 ops are stored as float16, finite values saturated to +-65504 (a
float32 "minus infinity" mask, -3.4e38, stays the most negative float16, not -inf); a graph input is
cast to float16 where a float16 op first reads it, and a float16 graph output is cast back to float32.
Integer, index and bool values are untouched; so are float64 and bfloat16 ones.

As TVM's ToMixedPrecision (always / follow / never) and PyTorch's CUDA autocast lists do, each op
falls in one of two sets:

- F16_OPS, computed in float16: the contractions (matmul, einsum, conv, conv_transpose: the tensor-core
  ops), elementwise arithmetic and activations, comparisons and selects, pooling (max and average: a
  window, as autocast leaves avg_pool in the input type), inference batch norm (a per-channel affine with
  constant statistics), max / min / argmax / topk reductions (exact in any type), data movement and
  indexing. nn.cast to float32 becomes a cast to float16; a cast to anything else reads its operand in
  the type it comes in.
- FP32_OPS, kept in float32 with casts around them (PyTorch's "ops that can autocast to float32"):
  softmax, log_softmax (exp and a sum over the row), layer_norm and instance_norm (a mean and a variance
  per row / channel), lrn (a sum of squares and a pow), the sum / mean / prod / L2 reductions and
  cumsum / cumprod (a long sum overflows or loses the small terms in float16), exp, log, pow,
  reciprocal, softplus, sinh, cosh, tan, asin, acos (|f(x)| >> |x| or ill-conditioned, autocast's list),
  div of a constant by a tensor (autocast's __rdiv__: a reciprocal), the recurrences rnn / gru / lstm
  (their state accumulates over the steps), signal.dft (long sums of twiddled terms), grid_sample and
  roi_align (pixel coordinates need more than float16's 11 bits).

Any other op (quantization, L-Mul, layout and kernel ops, which only exist after this pass runs, and
nn.bitcast, which reads float32 bits) keeps float32 too, as ToMixedPrecision's default "never".
"""
from __future__ import annotations

import numpy as np

from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew
from compiler.ops.registry import OpDef, TypeRuleError, get_op
from compiler.types import DType, TensorType
from passes.base import register_pass
from passes.canonicalize import dead_code

F16, F32 = DType.F16, DType.F32
F16_MAX = float(np.finfo(np.float16).max)


def _ops(*names: str) -> frozenset[OpDef]:
    return frozenset(get_op(n) for n in names)


F16_OPS = _ops(
    # contractions
    "nn.matmul", "nn.einsum", "nn.conv", "nn.conv_transpose",
    # elementwise arithmetic and activations
    "nn.add", "nn.sub", "nn.mul", "nn.div", "nn.min", "nn.max", "nn.mod", "nn.neg", "nn.abs", "nn.sqrt",
    "nn.relu", "nn.leaky_relu", "nn.prelu", "nn.elu", "nn.clip", "nn.sigmoid", "nn.hard_sigmoid",
    "nn.hard_swish", "nn.tanh", "nn.gelu", "nn.erf", "nn.floor", "nn.ceil", "nn.round", "nn.identity",
    "nn.sin", "nn.cos", "nn.atan", "nn.asinh", "nn.acosh", "nn.atanh", "nn.cast",
    # comparisons and selects
    "nn.equal", "nn.less", "nn.greater", "nn.where", "nn.isnan", "nn.isinf",
    # pooling, inference batch norm, exact reductions
    "nn.max_pool", "nn.avg_pool", "nn.batch_norm", "nn.reduce_max", "nn.reduce_min", "nn.argmax",
    "nn.topk",
    # data movement and indexing
    "nn.reshape", "nn.transpose", "nn.concat", "nn.slice", "nn.gather", "nn.expand", "nn.tile", "nn.pad",
    "nn.resize", "nn.gather_elements", "nn.scatter_elements", "nn.gather_nd", "nn.scatter_nd",
    "nn.one_hot", "nn.trilu",
)

FP32_OPS = _ops(
    "nn.softmax", "nn.log_softmax", "nn.layer_norm", "nn.instance_norm", "nn.lrn",
    "nn.reduce_sum", "nn.reduce_mean", "nn.reduce_prod", "nn.reduce_l2", "nn.cumsum", "nn.cumprod",
    "nn.exp", "nn.log", "nn.pow", "nn.reciprocal", "nn.softplus", "nn.sinh", "nn.cosh", "nn.tan",
    "nn.asin", "nn.acos", "nn.rnn", "nn.gru", "nn.lstm", "signal.dft", "nn.grid_sample", "nn.roi_align",
)


def computes_in_f16(n: Node) -> bool:
    """The op computes in float16 after the pass (module docstring); div(constant, x) is a reciprocal."""
    if n.op is ew.div and n.inputs[0].is_const:
        return False
    return n.op in F16_OPS


class _Casts:
    """Each value's float16 / float32 versions, made once and placed before their first reader."""

    def __init__(self, g: Graph):
        self.g = g
        self.versions: dict[tuple[int, DType], Value] = {}

    def as_type(self, v: Value, dt: DType, before: list[Node]) -> Value:
        if v.type.dtype is dt or v.type.dtype not in (F16, F32):
            return v
        key = (id(v), dt)
        if key not in self.versions:
            if v.is_const:
                a = np.asarray(v.const, np.float64)
                if dt is F16:
                    a = np.where(np.isfinite(a), np.clip(a, -F16_MAX, F16_MAX), a)
                self.versions[key] = self.g.const(a.astype(dt.numpy), v.name)
            else:
                out = Value(self.g.fresh_name(f"{v.name}_{dt.mlir}"), TensorType(v.type.shape, dt))
                before.append(Node(ew.cast, [v], ew.cast.complete_attrs({"to": dt}), [out], out.name))
                self.versions[key] = out
        return self.versions[key]


@register_pass("convert_fp16")
def convert_fp16(g: Graph) -> Graph:
    """float32 compute => float16 compute, FP32_OPS kept in float32, signature float32 (module docstring)."""
    g = g.clone()
    casts = _Casts(g)
    # the values the original graph typed float32: only those change type
    was_f32 = {id(v) for n in g.nodes for v in (*n.inputs, *n.outputs) if v.type.dtype is F32}
    was_f32 |= {id(v) for v in g.inputs if v.type.dtype is F32}
    alias: dict[int, Value] = {}        # a cast to float32 of a float16 value: now that value itself
    nodes: list[Node] = []
    for n in g.nodes:
        n.inputs = [alias.get(id(v), v) for v in n.inputs]
        old_inputs, old_attrs = list(n.inputs), dict(n.attrs)
        types = None
        if n.op is ew.cast and n.attrs["to"] is not F32:
            # to an int, bool or another float: reads its operand as it comes (an index computed by
            # float32 ops keeps float32's 24 bits)
            types = n.op.infer([v.type for v in n.inputs], n.attrs)
        elif computes_in_f16(n):
            n.inputs = [casts.as_type(v, F16, nodes) if id(v) in was_f32 else v for v in n.inputs]
            if n.op is ew.cast:         # to float32, now to float16
                if n.inputs[0].type.dtype is F16:
                    alias[id(n.outputs[0])] = n.inputs[0]
                    was_f32.add(id(n.inputs[0]))
                    continue
                n.attrs["to"] = F16
            try:
                types = n.op.infer([v.type for v in n.inputs], n.attrs)
            except TypeRuleError:        # an op whose type rule wants float32 after all: keep it there
                n.inputs, n.attrs = old_inputs, old_attrs
        if types is None:
            n.inputs = [casts.as_type(v, F32, nodes) if id(v) in was_f32 else v for v in n.inputs]
            types = n.op.infer([v.type for v in n.inputs], n.attrs)
        for v, t in zip(n.outputs, types):
            v.type = t
        nodes.append(n)
    g.nodes = nodes
    g.outputs = [alias.get(id(v), v) for v in g.outputs]
    g.outputs = [casts.as_type(v, F32, g.nodes) if id(v) in was_f32 else v for v in g.outputs]
    return dead_code(g)
