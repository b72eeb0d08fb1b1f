"""Element types a backend does not compute in, carried as bytes (both backends: tvm_lower/dtypes.py and
mlir_lower/casts.py hold the code that converts them). The float8 formats (e4m3fn, e4m3fnuz, e5m2,
e5m2fnuz, e8m0fnu) and float4 e2m1 live as their bit pattern in a byte, int4 / int2 as their value in a
signed byte, uint4 / uint2 as their value in an unsigned byte. nn.cast to and from them is integer bit
manipulation that rounds as ml_dtypes (and ONNX) do, to nearest even; nn.bitcast works on every type.
Other ops take these types only where the bytes move unchanged (`check_byte_types` refuses the rest).
bfloat16 is computed in float32 between casts that round (`widen_bf16`), as the interpreter does."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.diagnostics import SourceLoc, Unsupported
from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew
from compiler.ops import shape
from compiler.ops.bitcast import bitcast
from compiler.types import DType, TensorType

SUB_BYTE_INTS = (DType.I4, DType.U4, DType.I2, DType.U2)
# ops that only move bytes: the same result on a type's container as on its values
MOVES_BYTES = frozenset({ew.cast, ew.identity, ew.where, bitcast, shape.reshape, shape.transpose,
                         shape.concat, shape.slice_, shape.expand, shape.tile, shape.gather})
SIGN_EXTENDED = (DType.I4, DType.I2)          # their int8 container holds the value, not the bits
# op families that take int4 (the q.* integer ops and what our passes build from them)
INT4_FAMILIES = ("q", "k", "layout", "lmul")


def is_byte_carried(dt: DType) -> bool:
    return dt.is_narrow_float or dt in SUB_BYTE_INTS


@dataclass(frozen=True)
class MiniFloat:
    """A float format of `ebits` exponent and `mbits` mantissa bits, exponent bias `bias`, sign bit
    `sign_bit`. `max_code`: the largest finite magnitude; `overflow`: what a larger finite value or an
    infinity becomes unless saturated (a magnitude code, or None when the format saturates); `nan`:
    NaN's magnitude; `fnuz`: NaN is 0x80 alone and there is no -0."""

    ebits: int
    mbits: int
    bias: int
    max_code: int
    overflow: int | None
    nan: int
    sign_bit: int = 7
    fnuz: bool = False

    @property
    def max_value(self) -> float:
        e, m = self.max_code >> self.mbits, self.max_code & ((1 << self.mbits) - 1)
        return (1 + m / (1 << self.mbits)) * 2.0 ** (e - self.bias)

    @property
    def max_bits(self) -> int:
        """The float32 bit pattern of the largest finite value."""
        return int(np.float32(self.max_value).view(np.uint32))


FORMATS = {
    DType.F8E4M3FN: MiniFloat(4, 3, 7, 0x7E, 0x7F, 0x7F),
    DType.F8E5M2: MiniFloat(5, 2, 15, 0x7B, 0x7C, 0x7E),
    DType.F8E4M3FNUZ: MiniFloat(4, 3, 8, 0x7F, 0x80, 0x80, fnuz=True),
    DType.F8E5M2FNUZ: MiniFloat(5, 2, 16, 0x7F, 0x80, 0x80, fnuz=True),
    DType.F4E2M1: MiniFloat(2, 1, 1, 0x7, None, 0x0, sign_bit=3),
}

# the types float32 holds exactly: a cast from them to a narrow float rounds once
EXACT_IN_F32 = frozenset({DType.F32, DType.F16, DType.BF16, DType.I8, DType.U8, DType.I16, DType.U16,
                          DType.BOOL, *SUB_BYTE_INTS})


def refuse_inexact_source(backend: str, node: Node, src: DType, to: DType) -> None:
    """Unsupported unless a cast from `src` to narrow float `to` can go through float32 exactly."""
    if src not in EXACT_IN_F32:
        raise Unsupported(f"{backend}: nn.cast from {src.value} to {to.value} (only from types float32 holds "
                          "exactly: a second rounding could differ)", node.loc)


def widen_bf16(g: Graph, keep: frozenset = frozenset()) -> Graph:
    """g where every op that computes on bfloat16 computes on float32 between nn.casts that round its
    bfloat16 results: the interpreter's meaning (compiler.interp.evaluate), and TVM's own bfloat16
    support is partial (no isnan, integer lowering of division). Ops that only move bytes keep it, and so
    do the ops in `keep` (a backend's lowering computes them on bfloat16 as their references do)."""
    def computes(n: Node) -> bool:
        return n.op not in MOVES_BYTES and n.op not in keep and \
            any(v.type.dtype is DType.BF16 for v in (*n.inputs, *n.outputs))

    if not any(computes(n) for n in g.walk()):
        return g
    g = g.clone()
    nodes: list[Node] = []

    def cast(v: Value, to: DType, out: Value | None = None) -> Value:
        out = out or Value(g.fresh_name(f"{v.name}_{to.value}"), TensorType(v.type.shape, to))
        nodes.append(Node(ew.cast, [v], ew.cast.complete_attrs({"to": to}), [out], out.name))
        return out

    for n in g.nodes:
        if n.bodies:      # a kernel: widen its body
            n.attrs = {k: widen_bf16(a, keep) if isinstance(a, Graph) else a for k, a in n.attrs.items()}
            nodes.append(n)
            continue
        if not computes(n):
            nodes.append(n)
            continue
        ins = [v if v.type.dtype is not DType.BF16 else
               g.const(v.const.astype(np.float32), v.name) if v.is_const else cast(v, DType.F32) for v in n.inputs]
        types = n.op.infer([v.type for v in ins], n.attrs)
        wide = [Value(g.fresh_name(f"{v.name}_f32"), t) if v.type.dtype is DType.BF16 else v
                for v, t in zip(n.outputs, types)]
        nodes.append(Node(n.op, ins, n.attrs, wide, n.name, n.loc))
        for v, w in zip(n.outputs, wide):
            if w is not v:
                cast(w, DType.BF16, v)
    g.nodes = nodes
    return g


def check_byte_types(g: Graph, backend: str = "tvm") -> None:
    """Refuse a node that computes on a byte-carried type (anything but moving, casting or bitcasting
    it; int4 also feeds the q.* integer ops): on the container a backend would compute a wrong answer."""
    for n in g.walk():
        if n.op in MOVES_BYTES or n.op.name.split(".")[0] in INT4_FAMILIES:
            continue
        for v in (*n.inputs, *n.outputs):
            if is_byte_carried(v.type.dtype):
                raise Unsupported(f"{backend}: {n.op.name} on {v.type.dtype.value} tensors (float8, float4 and "
                                  "sub-byte integers are carried as bytes: only cast, bitcast, quantize and "
                                  "data movement take them)", n.loc or SourceLoc(g.source, n.name, n.op.name))
