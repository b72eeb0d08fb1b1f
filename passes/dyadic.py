"""dyadic: an annotated float graph -> an integer-only graph (HAWQV3). Graph inputs go through
one q.quantize each, outputs through one q.dequantize each; in between, integer ops with
int32 bias and dyadic requantization (m / 2^c), activations folded into the requant clamp."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from compiler.diagnostics import SourceLoc, Unsupported
from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew
from compiler.ops import linalg, nn, quant, reduce, shape
from compiler.ops.quant import INT_RANGE, dyadic
from compiler.ops.registry import OpDef
from compiler.types import DType, TensorType
from passes.base import register_pass
from passes.quantize import (
    ACTIVATIONS,
    PASSTHROUGH,
    QuantSpec,
    const_operand,
    const_weight_matmul,
    integer_capable,
    quantize_array,
    spec_of,
    weight_spec,
    with_quant,
)

I32_MIN, I32_MAX = INT_RANGE[DType.I32]
I16_MAX = INT_RANGE[DType.I16][1]
POOL_FACTOR_BITS = 16         # avg_pool's per-position 1 / count as rint(2^16 / count), at most
RESIDUAL_EXTRA_BITS = 16      # the common scale of a residual add is min(s_a, s_b) / 2^k, k <= 16


def _f32(x: float) -> float:
    return float(np.float32(x))


def _acc_spec(scales, axis: int | None, source: str | None = None) -> QuantSpec:
    scales = tuple(_f32(s) for s in scales)
    return QuantSpec(scales, (0,) * len(scales), axis if len(scales) > 1 else None, DType.I32,
                     I32_MIN, I32_MAX, True, source)


def requant_params(in_scales, out_scale: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-channel (or single) dyadic (m, c) for in_scale / out_scale, scales fp32-rounded as
    they are stored; collapsed to one pair when all channels agree."""
    pairs = [dyadic(_f32(s) / _f32(out_scale)) for s in in_scales]
    if len(set(pairs)) == 1:
        pairs = pairs[:1]
    return tuple(m for m, _ in pairs), tuple(c for _, c in pairs)


def clamp_range(spec: QuantSpec, lo: float = -math.inf, hi: float = math.inf) -> tuple[int, int]:
    """The requant clamp [qmin, qmax] of spec's grid, narrowed to the real interval [lo, hi]
    (ReLU: [0, inf), ReLU6: [0, 6]): a folded activation costs nothing."""
    s, z = spec.scale[0], spec.zero_point[0]
    qmin, qmax = spec.qmin, spec.qmax
    if lo > -math.inf:
        qmin = max(qmin, min(qmax, z + int(np.rint(lo / s))))
    if hi < math.inf:
        qmax = min(qmax, max(qmin, z + int(np.rint(hi / s))))
    return qmin, qmax


def residual_shift(scales: list[float], ranges: list[int], const_amax: float = 0.0) -> int:
    """k for the common int32 scale s_c = min(scales) / 2^k of an add: the largest k <= 16 with
    sum_i (ranges[i] * s_i / s_c + 1) + const_amax / s_c + 1 <= 2^31 - 1, which proves the int32
    sum (and each rescaled operand) cannot overflow; ranges[i] = max |q_i - z_i|. The operand with
    the smaller scale is rescaled exactly (by 2^k); the other is rounded to s_c, an error of at
    most 2^-(k+1) of the finer input step."""
    s_min = min(scales)
    for k in range(RESIDUAL_EXTRA_BITS, -64, -1):
        s_c = s_min / 2.0 ** k
        bound = sum(r * s / s_c + 1 for r, s in zip(ranges, scales)) + const_amax / s_c + 1
        if bound <= I32_MAX:
            return k
    raise Unsupported("residual add: operand scales are too far apart for an int32 sum")


def _qrange(spec: QuantSpec) -> int:
    z = spec.zero_point[0]
    return max(spec.qmax - z, z - spec.qmin)


class _Rewriter:
    def __init__(self, g: Graph):
        self.g = g
        self.ng = Graph(g.name, g.source)
        self.uses = g.uses()
        self.out_ids = {id(v) for v in g.outputs}
        self.reserved = {v.name for v in g.outputs if not v.is_const}
        self.ng._names.update(self.reserved)
        self.q: dict[int, Value] = {}        # original value -> its integer version
        self.f: dict[int, Value] = {}        # original value -> its float (or native) version
        self.consumed: set[int] = set()      # nodes folded into an earlier one
        self.loc: SourceLoc | None = None

    # -- building ----------------------------------------------------------------------
    def emit(self, op: OpDef, inputs: list[Value], hint: str, quant: QuantSpec | None = None,
             exact: bool = False, **attrs: Any) -> Value:
        attrs = op.complete_attrs(attrs)
        t = op.infer([v.type for v in inputs], attrs)[0]
        name = hint if exact else self.ng.fresh_name(hint)
        v = Value(name, with_quant(t, quant))
        self.ng.nodes.append(Node(op, inputs, attrs, [v], name, self.loc))
        return v

    def primary_name(self, v: Value, integer: bool) -> tuple[str, bool]:
        """The name of the first version made of v: v's own name, unless v is a graph output
        and this version is the integer one (then the output dequantize gets the name)."""
        if v.name in self.reserved:
            return (v.name + "_q", False) if integer else (v.name, True)
        return v.name, False

    def spec(self, v: Value) -> QuantSpec:
        s = spec_of(v)
        if s is None:
            raise Unsupported(f"value '{v.name}' has no quantization parameters",
                              self.loc, hint="with calibration (quantize='int8'), passes.quantize.annotate gives "
                                             "every value its grid; a pre-quantized model (quantize='model') "
                                             "must quantize this value itself (a QuantizeLinear after it)")
        return s

    def const(self, arr: np.ndarray, hint: str, spec: QuantSpec | None = None) -> Value:
        c = self.ng.const(arr, hint)
        dt = DType.I4 if spec is not None and spec.dtype is DType.I4 else c.type.dtype   # int4 in int8
        c.type = TensorType(c.type.shape, dt, spec)
        return c

    # -- the two representations ---------------------------------------------------------
    def as_int(self, v: Value) -> Value:
        if id(v) in self.q:
            return self.q[id(v)]
        if v.is_const:
            s = spec_of(v) or weight_spec(v.const, None, 8, v.name)
            self.q[id(v)] = self.const(quantize_array(v.const, s), v.name + "_q", s)
            return self.q[id(v)]
        s = self.spec(v)
        if not s.per_tensor:
            raise Unsupported(f"activation '{v.name}' must be quantized per tensor", self.loc)
        name = v.name + "_q" if v.producer is None or v.name in self.reserved else v.name
        self.q[id(v)] = self.emit(quant.quantize, [self.as_float(v)], name, s, scale=s.scale[0],
                                  zero_point=s.zero_point[0], dtype=s.dtype, qmin=s.qmin, qmax=s.qmax)
        return self.q[id(v)]

    def as_float(self, v: Value) -> Value:
        if id(v) in self.f:
            return self.f[id(v)]
        if v.is_const:
            self.f[id(v)] = self.ng.const(v.const, v.name)
            return self.f[id(v)]
        if id(v) not in self.q:
            raise AssertionError(f"value {v.name} used before it is defined")
        s = spec_of(self.q[id(v)]) or self.spec(v)
        name, exact = (v.name, True) if v.name in self.reserved else (v.name + "_f", False)
        axis = s.axis if s.axis is not None else 1
        self.f[id(v)] = self.emit(quant.dequantize, [self.q[id(v)]], name, None, exact=exact,
                                  scale=s.scale, zero_point=s.zero_point, axis=axis)
        return self.f[id(v)]

    def set_int(self, orig: Value, new: Value) -> None:
        self.q[id(orig)] = new

    # -- shared pieces ---------------------------------------------------------------------
    def fused_activation(self, v: Value) -> tuple[Value, float, float]:
        """If v's only user is a float relu/clip (and v is not an output), fold it: return the
        activation's output and its real clamp interval; else (v, -inf, inf)."""
        users = self.uses.get(v, [])
        if len(users) == 1 and id(v) not in self.out_ids:
            u = users[0][0]
            if u.op in ACTIVATIONS and u.inputs[0] is v and spec_of(u.outputs[0]) is not None:
                self.consumed.add(id(u))
                lo, hi = (0.0, math.inf) if u.op is ew.relu else (u.attrs["min"], u.attrs["max"])
                return u.outputs[0], lo, hi
        return v, -math.inf, math.inf

    def requant(self, x: Value, in_scales, in_zp: int, out: Value, lo: float = -math.inf,
                hi: float = math.inf, axis: int = 1) -> Value:
        """x (int, real value (x - in_zp) * in_scale) -> out's grid, clamped to [lo, hi]."""
        s = self.spec(out)
        m, c = requant_params(in_scales, s.scale[0])
        qmin, qmax = clamp_range(s, lo, hi)
        name, exact = self.primary_name(out, integer=True)
        return self.emit(quant.requant, [x], name, s, exact=exact, multiplier=m, shift=c,
                         zero_point=s.zero_point[0], in_zero_point=in_zp, qmin=qmin, qmax=qmax,
                         dtype=s.dtype, axis=axis if len(m) > 1 else 1)

    # -- rewrites ----------------------------------------------------------------------
    def conv(self, n: Node) -> None:
        """nn.conv(x, w, b) [-> relu/clip] => q.conv(xq, wq, bq; x_zero_point) -> q.requant."""
        x, w = n.inputs[:2]
        xs, ws = self.spec(x), self.spec(w)
        out, lo, hi = self.fused_activation(n.outputs[0])
        cout = w.type.shape[0]
        sw = ws.scale if len(ws.scale) == cout else ws.scale * cout
        acc_scales = [_f32(xs.scale[0] * s) for s in sw]
        ins = [self.as_int(x), self.const(quantize_array(w.const, ws), w.name + "_q", ws)]
        if len(n.inputs) > 2:
            b = n.inputs[2].const.astype(np.float64)
            bq = np.clip(np.rint(b / np.asarray(acc_scales)), I32_MIN, I32_MAX).astype(np.int32)
            ins.append(self.const(bq, n.inputs[2].name + "_q", _acc_spec(acc_scales, 0)))
        acc = self.emit(quant.conv, ins, n.name + "_acc", _acc_spec(acc_scales, 1), strides=n.attrs["strides"],
                        pads=n.attrs["pads"], dilations=n.attrs["dilations"], groups=n.attrs["groups"],
                        x_zero_point=xs.zero_point[0])
        self.finish(out, acc, acc_scales, lo, hi, axis=1)

    def finish(self, out: Value, acc: Value, acc_scales: list[float], lo: float, hi: float, axis: int) -> None:
        """Requantize a contraction's int32 accumulator to out's grid; a graph output with no
        clamp and no other user is dequantized straight from int32 (per channel), which saves a
        rounding of the logits."""
        if id(out) in self.out_ids and len(self.uses.get(out, [])) == 0 and lo == -math.inf and hi == math.inf:
            acc.type = with_quant(acc.type, dataclasses.replace(spec_of(acc), source=out.name))
            self.set_int(out, acc)
            return
        self.set_int(out, self.requant(acc, acc_scales, 0, out, lo, hi, axis=axis))

    def _bias_of(self, mm_out: Value, ncols: int) -> tuple[Node, np.ndarray] | None:
        users = self.uses.get(mm_out, [])
        if len(users) != 1 or id(mm_out) in self.out_ids:
            return None
        add, i = users[0]
        if add.op is not ew.add or not add.inputs[1 - i].is_const or spec_of(add.outputs[0]) is None:
            return None
        b = add.inputs[1 - i].const
        if b.ndim > mm_out.type.rank or b.shape[-1:] != (ncols,) or b.size != ncols \
                or add.outputs[0].type.shape != mm_out.type.shape:
            return None
        return add, b

    def matmul(self, n: Node) -> None:
        """nn.matmul(x, W const) [+ b] [-> relu/clip] => q.matmul(xq, Wq) [+ bq int32] -> q.requant
        per output column; nn.matmul(a, b) of activations => q.matmul(aq, bq; zero points) ->
        q.requant per tensor."""
        a, b = n.inputs
        if const_weight_matmul(n) and spec_of(b) is not None:
            xs, ws = self.spec(a), self.spec(b)
            ncols = b.type.shape[1]
            sw = ws.scale if len(ws.scale) == ncols else ws.scale * ncols
            acc_scales = [_f32(xs.scale[0] * s) for s in sw]
            rank = n.outputs[0].type.rank
            acc = self.emit(quant.matmul, [self.as_int(a), self.const(quantize_array(b.const, ws), b.name + "_q", ws)],
                            n.name + "_acc", _acc_spec(acc_scales, rank - 1), a_zero_point=xs.zero_point[0])
            result = n.outputs[0]
            bias = self._bias_of(result, ncols)
            if bias is not None:
                add, bvec = bias
                self.consumed.add(id(add))
                bq = np.clip(np.rint(bvec.astype(np.float64) / np.asarray(acc_scales)), I32_MIN, I32_MAX)
                bc = self.const(bq.astype(np.int32), add.name + "_bias_q", _acc_spec(acc_scales, bvec.ndim - 1))
                acc = self.emit(ew.add, [acc, bc], add.name + "_acc", acc.type.quant)
                result = add.outputs[0]
            out, lo, hi = self.fused_activation(result)
            self.finish(out, acc, acc_scales, lo, hi, axis=rank - 1)
            return
        sa, sb = spec_of(a) if not a.is_const else None, spec_of(b) if not b.is_const else None
        qa, qb = self.as_int(a), self.as_int(b)
        sa, sb = sa or spec_of(qa), sb or spec_of(qb)
        if not (sa.per_tensor and sb.per_tensor):
            return self.fallback(n)
        acc_scale = _f32(sa.scale[0] * sb.scale[0])
        acc = self.emit(quant.matmul, [qa, qb], n.name + "_acc", _acc_spec([acc_scale], None),
                        a_zero_point=sa.zero_point[0], b_zero_point=sb.zero_point[0])
        out, lo, hi = self.fused_activation(n.outputs[0])
        self.finish(out, acc, [acc_scale], lo, hi, axis=1)

    def add(self, n: Node) -> None:
        """nn.add/sub(a, b) [-> relu] => each operand q.requant to int32 at s_c = min(s_a, s_b)/2^k
        (a constant operand becomes an int32 constant at s_c), nn.add/sub in int32, q.requant to
        the output grid (with the relu's clamp)."""
        ops = [v for v in n.inputs if not v.is_const]
        consts = [v for v in n.inputs if v.is_const]
        specs = [self.spec(v) for v in ops]
        if not all(s.per_tensor for s in specs):
            return self.fallback(n)
        scales = [s.scale[0] for s in specs]
        camax = max((float(np.abs(c.const).max()) for c in consts), default=0.0)
        k = residual_shift(scales, [_qrange(s) for s in specs], camax)
        s_c = min(scales) / 2.0 ** k
        common = _acc_spec([s_c], None)
        terms = []
        for v in n.inputs:
            if v.is_const:
                cq = np.clip(np.rint(v.const.astype(np.float64) / s_c), I32_MIN, I32_MAX).astype(np.int32)
                terms.append(self.const(cq, v.name + "_q", common))
                continue
            s = self.spec(v)
            m, c = requant_params([s.scale[0]], s_c)
            terms.append(self.emit(quant.requant, [self.as_int(v)], f"{n.name}_{v.name}_i32", common,
                                   multiplier=m, shift=c, zero_point=0, in_zero_point=s.zero_point[0],
                                   qmin=I32_MIN, qmax=I32_MAX, dtype=DType.I32))
        acc = self.emit(n.op, terms, n.name + "_i32", common)
        out, lo, hi = self.fused_activation(n.outputs[0])
        self.set_int(out, self.requant(acc, [s_c], 0, out, lo, hi))

    def mul(self, n: Node) -> None:
        """nn.mul(x, c) / nn.div(x, c), c a constant: c > 0 a scalar => one q.requant by s_x * c;
        else c on a symmetric int16 grid, (x - z) * c_q in int32, q.requant by s_x * s_c.
        nn.mul(a, b) of two activations => (a - z_a) * (b - z_b) in int32 (broadcasting), q.requant
        by s_a * s_b. Any operand or the result without a grid (a pre-quantized model that left
        them float) keeps the node float."""
        out = n.outputs[0]
        acts = [v for v in n.inputs if not v.is_const]
        if spec_of(out) is None or any(spec_of(v) is None or not spec_of(v).per_tensor for v in acts):
            return self.fallback(n)
        x, cv = const_operand(n)
        if cv is not None:
            c = cv.const.astype(np.float64)
            c = 1.0 / c if n.op is ew.div else c
            sx = self.spec(x)
            if c.size == 1 and float(c.reshape(())) > 0:
                self.set_int(out, self.requant(self.as_int(x), [_f32(sx.scale[0] * float(c.reshape(())))],
                                               sx.zero_point[0], out))
                return
            s_c = float(np.abs(c).max()) / I16_MAX
            cq = np.clip(np.rint(c / s_c), -I16_MAX, I16_MAX).astype(np.int32)
            terms = [self.widen(x), self.const(cq, n.name + "_c_q", _acc_spec([s_c], None))]
            acc_scale = _f32(sx.scale[0] * s_c)
        else:
            sa, sb = (self.spec(v) for v in n.inputs)
            terms = [self.widen(v) for v in n.inputs]
            acc_scale = _f32(sa.scale[0] * sb.scale[0])
        acc = self.emit(ew.mul, terms, n.name + "_i32", _acc_spec([acc_scale], None))
        out, lo, hi = self.fused_activation(out)
        self.set_int(out, self.requant(acc, [acc_scale], 0, out, lo, hi))

    def widen(self, v: Value) -> Value:
        """v's integers as int32 with the zero point taken off: q - z."""
        s = self.spec(v)
        wide = self.emit(ew.cast, [self.as_int(v)], v.name + "_i32", None, to=DType.I32)
        if s.zero_point[0] == 0:
            return wide
        return self.emit(ew.sub, [wide, self.const(np.asarray(s.zero_point[0], np.int32), v.name + "_zp")],
                         v.name + "_centered", None)

    def concat(self, n: Node) -> None:
        """nn.concat(x_i) => each x_i q.requant to the output grid (skipped where already on
        it), then nn.concat of the integers. A concat that is only a graph output, of parts whose grids
        differ more than 4x (a detector's boxes in pixels beside its class probabilities), concatenates
        in int32 on the finest part's grid instead: one 8-bit grid would round the small part to zero."""
        out = n.outputs[0]
        so = self.spec(out)
        parts_q = [self.as_int(v) for v in n.inputs if not v.is_const]
        scales = [(spec_of(v) or self.spec(v)).scale[0] for v in parts_q]
        if id(out) in self.out_ids and not self.uses.get(out) and len(scales) == len(n.inputs) and \
                all((spec_of(v) or self.spec(v)).per_tensor for v in parts_q) and max(scales) > 4 * min(scales):
            common = _acc_spec([min(scales)], None, out.name)
            parts = []
            for v in parts_q:
                sv = spec_of(v)
                m, c = requant_params([sv.scale[0]], min(scales))
                parts.append(self.emit(quant.requant, [v], f"{n.name}_{v.name}_i32", common, multiplier=m, shift=c,
                                       zero_point=0, in_zero_point=sv.zero_point[0], qmin=I32_MIN, qmax=I32_MAX,
                                       dtype=DType.I32))
            self.set_int(out, self.emit(shape.concat, parts, out.name + "_i32", common, axis=n.attrs["axis"]))
            return
        parts = []
        for v in n.inputs:
            if v.is_const:
                parts.append(self.const(quantize_array(v.const, so), v.name + "_q", so))
                continue
            xq = self.as_int(v)
            s = spec_of(xq) or self.spec(v)
            if so.same_grid(s):
                parts.append(xq)
            else:
                m, c = requant_params([s.scale[0]], so.scale[0])
                parts.append(self.emit(quant.requant, [xq], f"{n.name}_{v.name}_rq", so, multiplier=m,
                                       shift=c, zero_point=so.zero_point[0], in_zero_point=s.zero_point[0],
                                       qmin=so.qmin, qmax=so.qmax, dtype=so.dtype))
        name, exact = self.primary_name(out, integer=True)
        self.set_int(out, self.emit(shape.concat, parts, name, so, exact=exact, axis=n.attrs["axis"]))

    def passthrough(self, n: Node) -> None:
        """reshape / transpose / slice / gather / max_pool / reduce_max ... run on the integers;
        the grid passes through (a differing output annotation gets a requant). A linear nn.resize
        (passes.quantize.resize_refusal lets only 2-D NCHW ones through) becomes q.resize_linear."""
        x = n.inputs[0]
        xq = self.as_int(x)
        sx = spec_of(xq) or self.spec(x)
        out = n.outputs[0]
        so = self.spec(out)
        rest = [self.as_float(v) for v in n.inputs[1:]]
        op, attrs = n.op, n.attrs
        if op is shape.resize and attrs["mode"] == "linear":
            op, attrs = self.resize_linear(n, sx)
        if so.same_grid(sx):
            name, exact = self.primary_name(out, integer=True)
            self.set_int(out, self.emit(op, [xq, *rest], name, so, exact=exact, **attrs))
        else:
            y = self.emit(op, [xq, *rest], n.name + "_int", sx, **attrs)
            self.set_int(out, self.requant(y, sx.scale, sx.zero_point[0], out))

    def resize_linear(self, n: Node, sx: QuantSpec) -> tuple[OpDef, dict[str, Any]]:
        """The q.resize_linear (and its attributes) of a 2-D linear nn.resize of x on grid sx."""
        if sx.dtype not in (DType.I8, DType.U8):
            raise Unsupported(f"bilinear resize '{n.name}' on the integers needs an int8/uint8 input, got "
                              f"{sx.dtype.value}", self.loc)
        a = n.attrs
        return quant.resize_linear, dict(sizes=a["sizes"][2:], scales=a["scales"][2:], zero_point=sx.zero_point[0],
                                         coordinate_transformation_mode=a["coordinate_transformation_mode"])

    def activation(self, n: Node) -> None:
        """A standalone relu / clip => q.requant to its output grid with the clamp."""
        x = n.inputs[0]
        sx = self.spec(x)
        lo, hi = (0.0, math.inf) if n.op is ew.relu else (n.attrs["min"], n.attrs["max"])
        out = n.outputs[0]
        self.set_int(out, self.requant(self.as_int(x), sx.scale, sx.zero_point[0], out, lo, hi))

    def avg_pool(self, n: Node) -> None:
        """nn.avg_pool => depthwise q.conv with a ones kernel (window sums of q - z in int32; padding
        adds 0) -> q.requant by s_in / (N * s_out). Where the divisor varies (count_include_pad off,
        windows over the padding), each sum is first multiplied by its position's
        rint(2^b / count) and the requant divides by 2^b: b = 16, or less where the largest window sum
        times 2^b would leave int32."""
        x = n.inputs[0]
        sx = self.spec(x)
        k = n.attrs["kernel"]
        ch = x.type.shape[1]
        ones = np.ones((ch, 1, *k), np.int8)
        count = int(np.prod(k))
        acc_scale = _f32(sx.scale[0])
        acc = self.emit(quant.conv, [self.as_int(x), self.const(ones, n.name + "_ones")], n.name + "_sum",
                        _acc_spec([acc_scale], None), strides=n.attrs["strides"], pads=n.attrs["pads"],
                        dilations=n.attrs["dilations"], groups=ch, x_zero_point=sx.zero_point[0])
        counts = nn.pool_counts(x.type.shape[2:], n.attrs, n.outputs[0].type.shape[2:])
        divisor = float(count)
        if np.any(counts != count):
            lo_q, hi_q = INT_RANGE[sx.dtype]
            biggest = count * (hi_q - lo_q)
            b = min(POOL_FACTOR_BITS, int(math.floor(math.log2((2**31 - 1) / biggest))))
            factor = np.rint(2.0 ** b / counts).astype(np.int32)
            divisor = 2.0 ** b
            acc = self.emit(ew.mul, [acc, self.const(factor, n.name + "_per_count")], n.name + "_scaled",
                            _acc_spec([acc_scale / divisor], None))
        out, lo, hi = self.fused_activation(n.outputs[0])
        self.set_int(out, self.requant(acc, [acc_scale / divisor], 0, out, lo, hi))

    def reduce(self, n: Node) -> None:
        """nn.reduce_mean / reduce_sum => nn.cast to int32, nn.reduce_sum, q.requant with
        in_zero_point = N * z and 1/N folded into the multiplier (mean)."""
        x = n.inputs[0]
        sx = self.spec(x)
        count = int(np.prod([x.type.shape[a] for a in n.attrs["axes"]]))
        wide = self.emit(ew.cast, [self.as_int(x)], n.name + "_i32", None, to=DType.I32)
        acc = self.emit(reduce.reduce_sum, [wide], n.name + "_sum", _acc_spec([sx.scale[0]], None),
                        axes=n.attrs["axes"], keepdims=n.attrs["keepdims"])
        div = count if n.op is reduce.reduce_mean else 1
        out, lo, hi = self.fused_activation(n.outputs[0])
        self.set_int(out, self.requant(acc, [sx.scale[0] / div], count * sx.zero_point[0], out, lo, hi))

    def fallback(self, n: Node) -> None:
        """Any other op stays float: dequantize its integer inputs, run it, quantize on demand."""
        ins = [self.as_float(v) for v in n.inputs]
        outs = []
        for v in n.outputs:
            name, exact = self.primary_name(v, integer=False)
            outs.append(Value(name if exact else self.ng.fresh_name(name), with_quant(v.type, None)))
        self.ng.nodes.append(Node(n.op, ins, n.attrs, outs, n.name, n.loc))
        for v, o in zip(n.outputs, outs):
            self.f[id(v)] = o

    # -- driver ----------------------------------------------------------------------------
    def run(self) -> Graph:
        for v in self.g.inputs:
            self.f[id(v)] = self.ng.add_input(v.name, with_quant(v.type, None))
        for n in self.g.nodes:
            if id(n) in self.consumed:
                continue
            self.loc = n.loc or SourceLoc(self.g.source, n.name, n.op.name)
            if not integer_capable(n, self.uses):
                self.fallback(n)
            elif n.op is linalg.conv:
                self.conv(n)
            elif n.op is linalg.matmul:
                self.matmul(n)
            elif n.op in (ew.add, ew.sub):
                self.add(n)
            elif n.op is shape.concat:
                self.concat(n)
            elif n.op in (ew.mul, ew.div):
                self.mul(n)
            elif n.op in PASSTHROUGH:
                self.passthrough(n)
            elif n.op in ACTIVATIONS:
                self.activation(n)
            elif n.op is nn.avg_pool:
                self.avg_pool(n)
            elif n.op in (reduce.reduce_mean, reduce.reduce_sum):
                self.reduce(n)
            else:
                self.fallback(n)
        self.ng.outputs = [self.as_float(v) for v in self.g.outputs]
        for v in self.ng.outputs:
            v.type = with_quant(v.type, None)
        return self.ng


def _annotated(g: Graph) -> bool:
    return any(v.type.quant is not None for v in g.inputs) or \
        any(v.type.quant is not None for n in g.nodes for v in n.outputs)


@register_pass("dyadic")
def dyadic_rewrite(g: Graph) -> Graph:
    """Annotated float graph -> integer-only graph: conv(x, w, b) -> relu => quantize(x) ->
    q.conv(xq, wq, bq) -> q.requant(qmin = z) -> dequantize; a graph without annotations is
    returned unchanged (a copy)."""
    if not _annotated(g):
        return g.clone()
    return _Rewriter(g).run()
