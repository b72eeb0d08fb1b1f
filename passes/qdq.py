"""fold_qdq: a model its producer already quantized (ONNX QDQ or QOperator, both imported as
q.quantize / q.dequantize around float ops) -> the annotated float graph that the integer rewrite
(passes/dyadic.py) takes, with the model's own scales and zero points instead of calibrated ones:

    x -> q.quantize(s, z) -> q.dequantize(s, z) -> y   =>  x {quant: s, z}; y's users read x
    P(q.quantize(x)), P a pass-through op (max_pool,   =>  q.quantize(P(x)): P commutes with the
      reshape, transpose, ...) on the integers              monotone elementwise quantize
    c (int const) -> q.dequantize(s_c, z_c, axis)      =>  float const (c - z_c) * s_c {quant: s_c, z_c, axis}
    transpose(perm) of such a constant                 =>  the transposed constant, its axis permuted

Then pass-through ops carry their input's grid (as annotate does), and a conv / linear weight the
model left in float, or gave a zero point the integer kernels do not take, gets the symmetric
per-channel grid of passes.quantize.weight_spec: weights need no calibration.
`compile(..., quantize="model")` runs this pass on the imported graph, before constant folding
would turn the weights' q.dequantize into plain floats."""
from __future__ import annotations

import dataclasses

import numpy as np

from compiler.diagnostics import InvalidInput
from compiler.ir import Graph, Node, Value
from compiler.ops import linalg, quant, shape
from compiler.ops.quant import INT_RANGE
from compiler.types import DType
from passes.base import register_pass
from passes.canonicalize import dead_code
from passes.quantize import (
    PASSTHROUGH,
    QuantSpec,
    const_weight_matmul,
    integer_capable,
    spec_of,
    weight_spec,
    with_quant,
)


def quantize_spec(n: Node, source: str) -> QuantSpec:
    """The grid of a q.quantize node."""
    a = n.attrs
    return QuantSpec((float(np.float32(a["scale"])),), (a["zero_point"],), None, a["dtype"], a["qmin"],
                     a["qmax"], a["zero_point"] == 0 and a["dtype"] is not DType.U8, source)


def dequantize_spec(n: Node, dtype: DType, source: str) -> QuantSpec:
    """The grid of a q.dequantize node reading an integer tensor of `dtype`."""
    scale, zp = tuple(float(np.float32(s)) for s in n.attrs["scale"]), tuple(n.attrs["zero_point"])
    lo, hi = INT_RANGE.get(dtype, INT_RANGE[DType.I32])
    axis = n.attrs["axis"] if len(scale) > 1 else None
    return QuantSpec(scale, zp, axis, dtype, lo, hi, not any(zp) and dtype is not DType.U8, source)


def _same_grid(q: QuantSpec, dq: Node) -> bool:
    return len(dq.attrs["scale"]) == 1 and float(np.float32(dq.attrs["scale"][0])) == q.scale[0] \
        and tuple(dq.attrs["zero_point"]) == q.zero_point


class _Folder:
    """One sweep in graph order; `subst` maps a removed value to the one its users read instead."""

    def __init__(self, g: Graph):
        self.g = g
        self.subst: dict[int, Value] = {}
        self.quantized: dict[int, tuple[Value, QuantSpec]] = {}   # q.quantize output -> (float x, grid)
        self.kept: list[Node] = []

    def read(self, v: Value) -> Value:
        return self.subst.get(id(v), v)

    def const(self, arr: np.ndarray, name: str, spec: QuantSpec) -> Value:
        c = self.g.const(np.ascontiguousarray(arr), name)
        c.type = with_quant(c.type, dataclasses.replace(spec, source=c.name))
        return c

    def add(self, op, ins: list[Value], like: Node, suffix: str, **attrs) -> Value:
        attrs = op.complete_attrs(attrs)
        t = op.infer([v.type for v in ins], attrs)[0]
        out = Value(self.g.fresh_name(like.name + suffix), t)
        self.kept.append(Node(op, ins, attrs, [out], like.name + suffix, like.loc))
        return out

    def visit(self, n: Node) -> None:
        ins = [self.read(v) for v in n.inputs]
        out = n.outputs[0] if n.outputs else None
        if n.op is quant.dequantize and ins[0].is_const:
            arr = quant.dequantize.reference([ins[0].const], n.attrs)[0]
            self.subst[id(out)] = self.const(arr, out.name, dequantize_spec(n, ins[0].type.dtype, out.name))
        elif n.op is shape.transpose and ins[0].is_const and spec_of(ins[0]) is not None:
            s = spec_of(ins[0])
            perm = list(n.attrs["perm"])
            axis = None if s.axis is None else perm.index(s.axis % len(perm))
            self.subst[id(out)] = self.const(np.transpose(ins[0].const, perm), out.name,
                                             dataclasses.replace(s, axis=axis))
        elif n.op in PASSTHROUGH and id(ins[0]) in self.quantized and len(n.outputs) == 1 and \
                self._annotate(*self.quantized[id(ins[0])]):
            x, s = self.quantized[id(ins[0])]       # P(quantize(x)) -> quantize(P(x)); x is on grid s
            y = self.add(n.op, [x, *ins[1:]], n, "_f", **n.attrs)
            self.requantized(n, y, s)
        elif n.op is quant.quantize:
            self.kept.append(Node(n.op, ins, n.attrs, n.outputs, n.name, n.loc))
            self.quantized[id(out)] = (ins[0], quantize_spec(n, ins[0].name))
        elif n.op is quant.dequantize and id(ins[0]) in self.quantized and \
                _same_grid(self.quantized[id(ins[0])][1], n) and self._annotate(*self.quantized[id(ins[0])]):
            self.subst[id(out)] = self.quantized[id(ins[0])][0]
        else:
            self.kept.append(Node(n.op, ins, n.attrs, n.outputs, n.name, n.loc))

    def requantized(self, n: Node, y: Value, s: QuantSpec) -> None:
        """n's integer output is now q.quantize(y) on grid s."""
        out = n.outputs[0]
        self.kept.append(Node(quant.quantize, [y], {"scale": s.scale[0], "zero_point": s.zero_point[0],
                                                    "dtype": s.dtype, "qmin": s.qmin, "qmax": s.qmax},
                              [out], n.name, n.loc))
        self.quantized[id(out)] = (y, dataclasses.replace(s, source=y.name))

    @staticmethod
    def _annotate(x: Value, s: QuantSpec) -> bool:
        """Give x the grid s; False when x already has another one (two different Q of one tensor)."""
        have = spec_of(x)
        if have is not None and not have.same_grid(s):
            return False
        x.type = with_quant(x.type, dataclasses.replace(s, source=x.name))
        return True

    def run(self) -> Graph:
        for n in self.g.nodes:
            self.visit(n)
        g = self.g
        g.nodes = self.kept
        names = {v.name for v in g.inputs}
        outs = []
        for v in g.outputs:
            new = self.read(v)
            if new is not v and new.producer is not None and new.name not in names:
                new.name = v.name                 # keep the model's output name
            names.add(new.name)
            outs.append(new)
        g.outputs = outs
        return g


def _propagate(g: Graph) -> None:
    """Pass-through ops the model left between grids carry their input's grid (as annotate does);
    conv / linear weights without a symmetric int8 grid get weight_spec's per-channel one."""
    for n in g.nodes:
        if not integer_capable(n):
            continue
        src = spec_of(n.inputs[0])
        if n.op in PASSTHROUGH and src is not None and spec_of(n.outputs[0]) is None:
            n.outputs[0].type = with_quant(n.outputs[0].type, dataclasses.replace(src, source=n.outputs[0].name))
        axis = 0 if n.op is linalg.conv else 1 if const_weight_matmul(n) else None
        if axis is not None and n.inputs[1].is_const:
            w = n.inputs[1]
            s = spec_of(w)
            if s is None or s.dtype is not DType.I8 or any(s.zero_point):
                w.type = with_quant(w.type, weight_spec(w.const, axis, 8, w.name))


@register_pass("fold_qdq")
def fold_qdq(g: Graph) -> Graph:
    """The model's QuantizeLinear/DequantizeLinear grids -> annotations: quantize(x) -> dequantize
    => x {quant}; dequantize(int const) => float const {quant}; pass-through ops move to the float
    side. A graph without q.quantize / q.dequantize is returned unchanged (a copy)."""
    g = g.clone()
    if not any(n.op in (quant.quantize, quant.dequantize) for n in g.nodes):
        return g
    g = dead_code(_Folder(g).run())
    _propagate(g)
    return g


def has_model_grids(g: Graph) -> bool:
    """Whether any value carries a grid (after fold_qdq: the model was quantized by its producer)."""
    return any(spec_of(v) is not None for n in g.nodes for v in [*n.inputs, *n.outputs]) or \
        any(spec_of(v) is not None for v in g.inputs)


def require_model_grids(g: Graph) -> Graph:
    """The `annotate` step of quantize="model": the grids are the model's own (fold_qdq put them
    there); a model without any is refused."""
    if not has_model_grids(g):
        raise InvalidInput("quantize='model' needs a model quantized by its producer (QuantizeLinear/"
                           "DequantizeLinear pairs or QLinearConv/QLinearMatMul ops); this one has none",
                           hint="quantize it with calibration instead: quantize='int8', calibration=...")
    return g
