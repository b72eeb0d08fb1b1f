"""range_analysis: interval propagation over the integer values of a quantized graph. Proves
that no int32 accumulator (conv / matmul reduction plus bias, int32 adds and sums) and no int64
requant product (x - zp) * m + 2^(c-1) can overflow, or reports the node that can. Bounds use
the actual constant weights (sum |w| per output channel), else bit widths x reduction length.
Splitting a reduction that could overflow is not implemented: such a graph is rejected.

The I-ViT ops and q.attention are bounded by their definitions (compiler/ops/ivit.py, qattention.py):
Shiftmax in [0, qmax], ShiftTanh in [-qmax, qmax], ShiftGELU's x * sigma with 0 <= sigma < 2^sigma_bits
(checked against int32), q.attention in its clamp. Their exponent sums are bounded by the ops' own type
rules (len * |x0| * 2^n <= 2^31 - 1). I-LayerNorm's int64 product yn * mult + bias is checked with
|yn| <= 2^31: yn = (y * floor((2^31 - 1) / std)) >> 1, |y_i| <= sqrt(var), and 10 Newton steps from
2^16 end at std >= max(floor(sqrt(var)), 64), so |y_i| / std < 2 (tests/passes/test_range_analysis.py
checks it by brute force on adversarial rows)."""
from __future__ import annotations

import numpy as np

from compiler.diagnostics import SourceLoc, Unsupported
from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew
from compiler.ops import ivit, nn, qattention, quant, reduce, shape
from compiler.ops.quant import INT_RANGE
from compiler.types import DType
from passes.base import register_pass

I64_MAX = 2**63 - 1
Interval = tuple[int, int]
_SAME = (shape.reshape, shape.transpose, shape.slice_, shape.gather, shape.expand, shape.tile,
         nn.max_pool, reduce.reduce_max, reduce.reduce_min, ew.identity, ew.relu,
         quant.resize_linear)    # weights >= 0 summing to 2^2F: a rounded convex combination of its taps


def _dtype_range(dt: DType) -> Interval:
    if dt in INT_RANGE:
        return INT_RANGE[dt]
    if dt is DType.I64:
        return (-2**63, I64_MAX)
    if dt is DType.BOOL:
        return (0, 1)
    info = np.iinfo(dt.numpy)
    return int(info.min), int(info.max)


def _absmax(iv: Interval, zp: int = 0) -> int:
    return max(abs(iv[0] - zp), abs(iv[1] - zp))


def _per_channel_abs_sum(w: np.ndarray, zp: int, axis: int) -> np.ndarray:
    """sum |w - zp| over everything but `axis`: the exact worst case of one output channel."""
    a = np.abs(w.astype(np.int64) - zp)
    return a.sum(axis=tuple(i for i in range(a.ndim) if i != axis % a.ndim))


class _Analysis:
    def __init__(self, g: Graph):
        self.g = g
        self.iv: dict[int, Interval] = {}
        self.problems: list[str] = []
        self.flagged: list[Node] = []       # the node of each problem

    def report(self, n: Node, what: str) -> None:
        self.problems.append(f"{self.where(n)}: {what}")
        self.flagged.append(n)

    def get(self, v: Value) -> Interval:
        if v.is_const:
            return (int(v.const.min()), int(v.const.max())) if v.const.size else (0, 0)
        return self.iv.get(id(v), _dtype_range(v.type.dtype))

    def where(self, n: Node) -> str:
        return f"node '{n.name}' ({n.op.name})"

    def fits(self, n: Node, lo: int, hi: int, dt: DType, what: str) -> Interval:
        rlo, rhi = _dtype_range(dt)
        if lo < rlo or hi > rhi:
            self.report(n, f"{what} can reach [{lo}, {hi}], outside "
                                 f"{dt.value} [{rlo}, {rhi}]")
        return max(lo, rlo), min(hi, rhi)

    def contraction(self, n: Node, x: Value, x_zp: int, w: Value, w_zp: int, axis: int,
                    length: int, bias: Value | None, what: str) -> Interval:
        """sum_j (x_j - x_zp)(w_j - w_zp) (+ bias): every partial sum is bounded by
        max|x - x_zp| * sum_j |w_j - w_zp| (+ |bias|), whatever the order of accumulation."""
        dx = _absmax(self.get(x), x_zp)
        if w.is_const:
            sw = _per_channel_abs_sum(w.const, w_zp, axis)
        else:
            sw = np.asarray([length * _absmax(self.get(w), w_zp)])
        bound = dx * sw.astype(object)
        if bias is not None:
            bound = bound + (np.abs(bias.const.astype(np.int64)).astype(object) if bias.is_const
                             else _absmax(self.get(bias)))
        b = int(np.max(bound))
        if b > INT_RANGE[DType.I32][1]:
            self.report(n, f"int32 {what} accumulator can reach +-{b} > 2^31-1 (reduction "
                f"length {length}, |x - zp| <= {dx}); split the reduction or use fewer bits")
        return self.wrap32(b)

    @staticmethod
    def wrap32(b: int) -> Interval:
        """The int32 result interval of an accumulator bounded by +-b (once reported, whatever it holds)."""
        lo, hi = INT_RANGE[DType.I32]
        return max(-b, lo), min(b, hi)

    def step(self, n: Node) -> Interval | None:
        op, ins, out = n.op, n.inputs, n.outputs[0]
        a = n.attrs
        if op is quant.quantize:
            return a["qmin"], a["qmax"]
        if op is quant.conv:
            w = ins[1]
            length = int(np.prod(w.type.shape[1:]))
            return self.contraction(n, ins[0], a["x_zero_point"], w, 0, 0, length,
                                    ins[2] if len(ins) > 2 else None, "conv")
        if op is quant.matmul:
            k = ins[0].type.shape[-1]
            bw = ins[1]
            if bw.is_const and bw.type.rank == 2:
                return self.contraction(n, ins[0], a["a_zero_point"], bw, a["b_zero_point"], 1, k, None, "matmul")
            b = _absmax(self.get(ins[0]), a["a_zero_point"]) * k * _absmax(self.get(bw), a["b_zero_point"])
            if b > INT_RANGE[DType.I32][1]:
                self.report(n, f"int32 matmul accumulator can reach +-{b} > 2^31-1 "
                                     f"(reduction length {k}); split the reduction or use fewer bits")
            return self.wrap32(b)
        if op is quant.requant:
            lo, hi = self.get(ins[0])
            lo, hi = lo - a["in_zero_point"], hi - a["in_zero_point"]
            outs = []
            for m, c in zip(a["multiplier"], a["shift"]):
                rnd = (1 << (c - 1)) if c > 0 else 0
                worst = max(abs(lo), abs(hi)) * m + rnd
                if worst > I64_MAX:
                    self.report(n, f"int64 requant product (x - zp) * m + 2^(c-1) "
                                         f"can reach {worst} > 2^63-1")
                outs += [((lo * m + rnd) >> c) + a["zero_point"], ((hi * m + rnd) >> c) + a["zero_point"]]
            return max(min(outs), a["qmin"]), min(max(outs), a["qmax"])
        if op is quant.dequantize or not out.type.dtype.is_int:
            return None
        ivit_iv = self.ivit_step(n)
        if ivit_iv is not None:
            return ivit_iv
        if op in (ew.add, ew.sub) and all(v.type.dtype.is_int for v in ins):
            (alo, ahi), (blo, bhi) = self.get(ins[0]), self.get(ins[1])
            lo, hi = (alo + blo, ahi + bhi) if op is ew.add else (alo - bhi, ahi - blo)
            return self.fits(n, lo, hi, out.type.dtype, "sum" if op is ew.add else "difference")
        if op is ew.mul and all(v.type.dtype.is_int for v in ins):
            (alo, ahi), (blo, bhi) = self.get(ins[0]), self.get(ins[1])
            ps = [alo * blo, alo * bhi, ahi * blo, ahi * bhi]
            return self.fits(n, min(ps), max(ps), out.type.dtype, "product")
        if op is quant.table:
            t = ins[1].const
            return int(t.min()), int(t.max())
        if op is reduce.reduce_sum:
            lo, hi = self.get(ins[0])
            cnt = int(np.prod([ins[0].type.shape[x] for x in a["axes"]]))
            return self.fits(n, min(lo * cnt, lo), max(hi * cnt, hi), out.type.dtype, f"sum of {cnt} values")
        if op is ew.cast:
            lo, hi = self.get(ins[0]) if ins[0].type.dtype.is_int else _dtype_range(out.type.dtype)
            return self.fits(n, lo, hi, out.type.dtype, "cast value")
        if op in _SAME:
            lo, hi = self.get(ins[0])
            return (max(lo, 0), max(hi, 0)) if op is ew.relu else (lo, hi)
        if op is ew.clip:
            lo, hi = self.get(ins[0])
            return max(lo, int(np.ceil(max(a["min"], -2.0**63)))), min(hi, int(np.floor(min(a["max"], 2.0**63))))
        if op is shape.concat:
            ivs = [self.get(v) for v in ins]
            return min(i[0] for i in ivs), max(i[1] for i in ivs)
        return None

    def ivit_step(self, n: Node) -> Interval | None:
        """The I-ViT ops and q.attention (module docstring), or None for any other op."""
        op, a = n.op, n.attrs
        if op is ivit.shiftmax:
            return 0, INT_RANGE[a["dtype"]][1]
        if op is ivit.shifttanh:
            return -INT_RANGE[a["dtype"]][1], INT_RANGE[a["dtype"]][1]
        if op is ivit.shiftgelu:
            lo, hi = self.get(n.inputs[0])
            s = 1 << a["sigma_bits"]
            return self.fits(n, min(lo, 0) * s, max(hi, 0) * s, DType.I32, "ShiftGELU x * sigma")
        if op is ivit.layernorm:
            mult, bias = n.inputs[1:]
            mm = int(np.abs(mult.const.astype(np.int64)).max()) if mult.is_const else 2**31
            bb = int(np.abs(bias.const.astype(np.int64)).max()) if bias.is_const else 2**63
            worst = 2**31 * mm + bb + ((1 << (a["shift"] - 1)) if a["shift"] else 0)
            if worst > I64_MAX:
                self.report(n, f"int64 I-LayerNorm product yn * mult + bias can reach "
                                     f"{worst} > 2^63-1")
            return a["qmin"], a["qmax"]
        if op is qattention.attention:
            return a["qmin"], a["qmax"]
        return None

    def run(self) -> list[str]:
        for n in self.g.nodes:
            if len(n.outputs) != 1:
                continue
            iv = self.step(n)
            if iv is not None:
                self.iv[id(n.outputs[0])] = iv
        return self.problems


def value_ranges(g: Graph) -> dict[str, tuple[int, int]]:
    """The proven interval of every integer value (by name)."""
    a = _Analysis(g)
    a.run()
    return {v.name: a.get(v) for n in g.nodes for v in n.outputs if v.type.dtype.is_int}


def check_ranges(g: Graph) -> list[str]:
    """One line per node whose integer arithmetic can overflow; [] when none can."""
    return _Analysis(g).run()


def overflowing_nodes(g: Graph) -> list[Node]:
    """The nodes check_ranges names, in its order (a node once per problem)."""
    a = _Analysis(g)
    a.run()
    return a.flagged


@register_pass("range_analysis")
def range_analysis(g: Graph) -> Graph:
    """Check only: an int32 accumulator or int64 requant product that can overflow => Unsupported."""
    problems = check_ranges(g)
    if problems:
        raise Unsupported("integer overflow is possible:\n    " + "\n    ".join(problems),
                          SourceLoc(g.source),
                          hint="splitting long reductions is not implemented; quantize with fewer "
                               "bits or keep the layer in float")
    return g
