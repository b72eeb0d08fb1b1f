"""ivit: the float islands dyadic leaves around softmax / GELU / LayerNorm / tanh become I-ViT
integer ops (compiler/ops/ivit.py), so a transformer encoder passes verify_integer_only.

    q.dequantize(x) [-> nn.div/nn.mul(., c)] -> nn.softmax -> q.quantize
        => [q.requant to int16, 1/c folded] -> q.shiftmax (int32, 2^-31) -> q.requant
    q.dequantize(x) -> nn.gelu -> q.quantize      => q.shiftgelu (int32) -> q.requant
    q.dequantize(x) -> nn.layer_norm(g, b) -> q.quantize
        => q.requant to int16 -> q.layernorm(mult, bias) on the quantize's grid
    q.dequantize(x) -> nn.tanh -> (graph output)   => q.shifttanh (int16, 2^-15) -> q.dequantize
    q.quantize(nn.gather(table f32, ids))         => nn.gather(quantized table, ids)

Chains (layer_norm -> layer_norm) pass an integer version along; an intermediate without a
quantize gets an int16 grid from a bound. Where a converted value still has a float user, a
q.dequantize recreates it (dead code removes it otherwise). Where the int input was made by a
q.requant, the int16 version is requantized again from that requant's int32 input (a finer grid:
I-ViT's 16-bit residual stream), otherwise it is an exact left shift of the int8 value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from compiler.diagnostics import SourceLoc, Unsupported
from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew
from compiler.ops import ivit, nn, quant, shape
from compiler.ops import unary_math as um
from compiler.ops.quant import INT_RANGE
from compiler.ops.registry import OpDef
from compiler.types import DType, TensorType
from passes import activation_forms as forms
from passes.base import register_pass
from passes.canonicalize import dead_code
from passes.dyadic import requant_params
from passes.quantize import QuantSpec, quantize_array, spec_of
from passes.select_masks import is_mask_value

I16_MAX = INT_RANGE[DType.I16][1]
SOFTMAX_X0_BITS = 8       # upscale softmax inputs until |x0| >= 2^8 (int16 permitting)
GELU_X0_BITS = 7          # 2 * |x0| * 2^23 <= 2^31 - 1 needs |x0| <= 2^7
TANH_X0_BITS = 5
SOFTMAX_N, GELU_N, TANH_N = 15, 23, 10
GELU_SIGMA_BITS = 15      # sigmoid to 2^-15 (I-ViT: 2^-7); x * sigma stays within int32
DIVIDEND_BITS = 62        # factor = (2^62-1) // sum: the I-ViT division with a finer quotient


@dataclass(frozen=True)
class IntRep:
    """The integer version of a float value: real = (value - zp) * scale."""

    value: Value
    scale: float
    zp: int

    @property
    def headroom(self) -> int:
        """The largest j with every (q - zp) * 2^j inside int16."""
        lo, hi = INT_RANGE[self.value.type.dtype]
        j = 0
        while (hi - self.zp) << (j + 1) <= I16_MAX and (lo - self.zp) << (j + 1) >= -I16_MAX - 1:
            j += 1
        return j


def _log2_floor(x: float) -> int:
    return int(math.floor(math.log2(x)))


def pick_n(x0: int, terms: int, cap: int) -> int:
    """The largest n <= cap with terms * |x0| * 2^n <= 2^31 - 1 (the op's type rule)."""
    n = min(cap, _log2_floor(ivit.INT31 / (terms * -x0)))
    if n < 0:
        raise Unsupported(f"integer exponent: input scale too fine (|x0| = {-x0}) for {terms} terms")
    return n


def upscale_bits(rep: IntRep, x0_of, want_bits: int) -> int:
    """j of _Rewriter.upscale: rep's scale / 2^j puts the exponent unit |x0| near 2^want_bits, within int16."""
    return min(max(0, want_bits - _log2_floor(-x0_of(rep.scale))), rep.headroom)


class _Rewriter:
    def __init__(self, g: Graph, choose_form=None):
        self.g = g
        self.forms = choose_form
        self.uses = g.uses()
        self.nodes: list[Node] = []
        self.ints: dict[int, IntRep] = {}
        self.masked: dict[int, tuple[IntRep, Value]] = {}   # where(c, s, -inf) before a softmax: (s, c)
        self.never_nan: set[int] = set()                      # isnan of an integer value: all false
        self.loc: SourceLoc | None = None

    # -- building -------------------------------------------------------------------------
    def emit(self, op: OpDef, inputs: list[Value], hint: str, out: Value | None = None,
             quant_spec: QuantSpec | None = None, **attrs) -> Value:
        attrs = op.complete_attrs(attrs)
        t = op.infer([v.type for v in inputs], attrs)[0]
        if out is None:
            out = Value(self.g.fresh_name(hint), TensorType(t.shape, t.dtype, quant_spec))
        else:
            out.type = TensorType(t.shape, t.dtype, quant_spec)
        self.nodes.append(Node(op, inputs, attrs, [out], out.name, self.loc))
        return out

    def requant(self, rep: IntRep, scale: float, zp: int, dtype: DType, qmin: int, qmax: int,
                hint: str, out: Value | None = None) -> Value:
        m, c = requant_params([rep.scale], scale)
        spec = QuantSpec((scale,), (zp,), None, dtype, qmin, qmax, zp == 0, hint)
        return self.emit(quant.requant, [rep.value], hint, out, spec, multiplier=m, shift=c,
                         zero_point=zp, in_zero_point=rep.zp, qmin=qmin, qmax=qmax, dtype=dtype)

    def const(self, arr: np.ndarray, hint: str) -> Value:
        return Value(self.g.fresh_name(hint), TensorType.of(np.asarray(arr)), const=np.asarray(arr))

    def finer(self, rep: IntRep, j: int, hint: str) -> IntRep:
        """rep on an int16 grid with zero point 0 and scale / 2^j. From the int32 input of the
        q.requant that made rep (a genuinely finer rounding) when there is one, else exactly
        (x - zp) * 2^j."""
        if j == 0 and rep.zp == 0 and rep.value.type.dtype is DType.I16:
            return rep
        new_scale = rep.scale / 2.0 ** j
        p = rep.value.producer
        src = spec_of(p.inputs[0]) if p is not None and p.op is quant.requant else None
        own = spec_of(rep.value)
        if src is not None and own is not None and p.attrs["in_zero_point"] == 0 and \
                (len(src.scale) == 1 or len(src.scale) == len(p.attrs["multiplier"])):
            a = p.attrs
            lo, hi = (a["qmin"] - a["zero_point"]) << j, (a["qmax"] - a["zero_point"]) << j
            lo, hi = max(lo, -I16_MAX - 1), min(hi, I16_MAX)
            fold = rep.scale / own.scale[0]        # a constant div/mul folded into rep
            m, c = requant_params([sc * fold for sc in src.scale], new_scale)
            spec = QuantSpec((new_scale,), (0,), None, DType.I16, lo, hi, True, hint)
            v = self.emit(quant.requant, [p.inputs[0]], hint, None, spec, multiplier=m, shift=c,
                          zero_point=0, in_zero_point=0, qmin=lo, qmax=hi, dtype=DType.I16,
                          axis=a["axis"] if len(m) > 1 else 1)
            return IntRep(v, new_scale, 0)
        lo, hi = INT_RANGE[rep.value.type.dtype]
        lo, hi = max((lo - rep.zp) << j, -I16_MAX - 1), min((hi - rep.zp) << j, I16_MAX)
        spec = QuantSpec((new_scale,), (0,), None, DType.I16, lo, hi, True, hint)
        v = self.emit(quant.requant, [rep.value], hint, None, spec, multiplier=(1 << 30,),
                      shift=(30 - j,), zero_point=0, in_zero_point=rep.zp, qmin=lo, qmax=hi,
                      dtype=DType.I16)
        return IntRep(v, new_scale, 0)

    def upscale(self, rep: IntRep, x0_of, want_bits: int, hint: str) -> IntRep:
        """An int16 version of rep whose exponent unit |x0| is near 2^want_bits (never above the
        int16 range; never coarser than rep)."""
        j = upscale_bits(rep, x0_of, want_bits)
        if j == 0 and rep.zp == 0 and rep.value.type.dtype in (DType.I8, DType.I16):
            return rep
        return self.finer(rep, j, hint)

    def recreate_float(self, rep: IntRep, out: Value) -> None:
        """out (a float value whose node was replaced) = dequantize(rep), for any float user."""
        self.emit(quant.dequantize, [rep.value], out.name, out, None, scale=(rep.scale,),
                  zero_point=(rep.zp,), axis=1)

    # -- rewrites -------------------------------------------------------------------------
    def softmax(self, n: Node, rep: IntRep, keep: Value | None = None) -> IntRep:
        """Shiftmax over the softmax's axis: over the last one (attention) a row at a time, over another
        (YOLO's DFL head: 16 bins on axis 1) neighbouring rows side by side (tvm_kernels/shiftmax.py).
        With `keep` (a select_masks mask: where(keep, s, -inf)), the dropped keys enter the Shiftmax
        as the int16 minimum, whose shift_exp is its floor: 2^-(n+1) of a row maximum's (exp(-inf) = 0
        in float; I-ViT's exponent has no exact zero)."""
        rank = n.inputs[0].type.rank
        axis = n.attrs["axis"] % rank
        length = n.inputs[0].type.shape[axis]
        rep = self.upscale(rep, ivit.exp_unit, SOFTMAX_X0_BITS, n.name + "_in")
        if keep is not None:
            if rep.zp != 0 or rep.value.type.dtype is not DType.I16:
                rep = self.finer(rep, 0, n.name + "_in16")
            lo, hi = INT_RANGE[DType.I16]
            spec = QuantSpec((rep.scale,), (0,), None, DType.I16, lo, hi, True, n.name + "_masked")
            fill = self.const(np.array(lo, np.int16), n.name + "_dropped")
            rep = IntRep(self.emit(ew.where, [keep, rep.value, fill], n.name + "_masked", None, spec),
                         rep.scale, 0)
        nexp = pick_n(ivit.exp_unit(rep.scale), length, SOFTMAX_N)
        v = self.emit(ivit.shiftmax, [rep.value], n.name + "_int", scale=rep.scale, n=nexp,
                      axis=axis - rank, dtype=DType.I32, dividend_bits=DIVIDEND_BITS)
        return IntRep(v, 2.0 ** -31, 0)

    def gelu(self, n: Node, rep: IntRep) -> IntRep | None:
        """ShiftGELU on an int16 re-rounding of rep; None (the float island stays, for table_islands' exact
        8-bit table) where activation_forms takes that form."""
        def x0_of(s: float) -> int:
            return ivit.exp_unit(ivit.GELU_ALPHA * float(np.float32(s)))
        j = upscale_bits(rep, x0_of, GELU_X0_BITS)           # the int16 grid ShiftGELU would read
        if self.table_form(n, rep, rep.scale / 2.0 ** j, x0_of):
            return None
        rep = self.upscale(rep, x0_of, GELU_X0_BITS, n.name + "_in")
        x0 = x0_of(rep.scale)
        v = self.emit(ivit.shiftgelu, [rep.value], n.name + "_int", scale=rep.scale,
                      n=pick_n(x0, 2, GELU_N), sigma_bits=GELU_SIGMA_BITS,
                      dividend_bits=DIVIDEND_BITS, row_max=False)
        return IntRep(v, float(np.float32(rep.scale)) * 2.0 ** -GELU_SIGMA_BITS, 0)

    def table_form(self, n: Node, rep: IntRep, scale16: float, x0_of) -> bool:
        """True where activation_forms picks the exact 8-bit table for gelu node n: its input an 8-bit value,
        its one reader a q.quantize (the island table_islands takes)."""
        readers = self.uses.get(n.outputs[0], [])
        if self.forms is None or len(readers) != 1 or readers[0][0].op is not quant.quantize or \
                rep.value.type.dtype not in (DType.I8, DType.U8):
            return False
        spec = spec_of(rep.value)
        lo, hi = (spec.qmin, spec.qmax) if spec is not None else INT_RANGE[rep.value.type.dtype]
        a = readers[0][0].attrs
        x = forms.Grid(rep.scale, rep.zp, lo, hi)
        y = forms.Grid(a["scale"], a["zero_point"], a["qmin"], a["qmax"])
        shift = (scale16, pick_n(x0_of(scale16), 2, GELU_N), GELU_SIGMA_BITS, DIVIDEND_BITS)
        return self.forms(forms.gelu_forms(x, y, shift, forms.measured_costs())).name == "table8"

    def tanh(self, n: Node, rep: IntRep) -> IntRep:
        def x0_of(s: float) -> int:
            return ivit.exp_unit(2.0 * float(np.float32(s)))
        rep = self.upscale(rep, x0_of, TANH_X0_BITS, n.name + "_in")
        v = self.emit(ivit.shifttanh, [rep.value], n.name + "_int", scale=rep.scale,
                      n=pick_n(x0_of(rep.scale), 2, TANH_N), dtype=DType.I16,
                      dividend_bits=DIVIDEND_BITS)
        return IntRep(v, 2.0 ** -15, 0)

    def layer_norm(self, n: Node, rep: IntRep) -> IntRep | None:
        x = n.inputs[0]
        if n.attrs["axis"] % x.type.rank != x.type.rank - 1 or not all(v.is_const for v in n.inputs[1:]):
            return None
        c = x.type.shape[-1]
        gamma = np.broadcast_to(np.asarray(n.inputs[1].const, np.float64), (c,))
        beta = np.broadcast_to(np.asarray(n.inputs[2].const, np.float64), (c,)) if len(n.inputs) > 2 \
            else np.zeros(c)
        rep = self.finer(rep, rep.headroom, n.name + "_in")
        # the output grid: the only user's quantize, else int16 from |out| <= |gamma| sqrt(C) + |beta|
        users = self.uses.get(n.outputs[0], [])
        out_value = None
        if len(users) == 1 and users[0][0].op is quant.quantize:
            qn = users[0][0]
            a = qn.attrs
            s_out, zp, dt, qmin, qmax = a["scale"], a["zero_point"], a["dtype"], a["qmin"], a["qmax"]
            out_value = qn.outputs[0]
            self.done.add(id(qn))
        else:
            bound = float(np.abs(gamma).max()) * math.sqrt(c) + float(np.abs(beta).max())
            s_out, zp, dt, qmin, qmax = float(np.float32(max(bound, 1e-6) / I16_MAX)), 0, DType.I16, \
                -I16_MAX - 1, I16_MAX
        ratio = gamma * math.sqrt(c) / (2.0 ** 30 * s_out)
        rmax = float(np.abs(ratio).max())
        shift = min(62, 30 - math.frexp(rmax)[1]) if rmax > 0 else 0
        while True:
            mult = np.rint(ratio * 2.0 ** shift)
            bias = np.rint(beta / s_out * 2.0 ** shift)
            worst = 2.0 ** 31 * np.abs(mult).max() + np.abs(bias).max() + 2.0 ** shift
            if worst < 2.0 ** 62 or shift == 0:
                break
            shift -= 1
        spec = QuantSpec((s_out,), (zp,), None, dt, qmin, qmax, zp == 0, n.outputs[0].name)
        v = self.emit(ivit.layernorm, [rep.value, self.const(mult.astype(np.int32), n.name + "_mult"),
                                       self.const(bias.astype(np.int64), n.name + "_bias")],
                      n.name + "_int", out_value, spec, shift=shift, zero_point=zp, qmin=qmin,
                      qmax=qmax, dtype=dt)
        return IntRep(v, s_out, zp)

    def quantize(self, n: Node) -> bool:
        x, out = n.inputs[0], n.outputs[0]
        a = n.attrs
        rep = self.ints.get(id(x))
        if rep is not None:
            self.requant(rep, a["scale"], a["zero_point"], a["dtype"], a["qmin"], a["qmax"],
                         out.name, out)
            return True
        p = x.producer
        if p is not None and p.op is shape.gather and p.inputs[0].is_const and not p.inputs[1].type.dtype.is_float:
            spec = QuantSpec((a["scale"],), (a["zero_point"],), None, a["dtype"], a["qmin"], a["qmax"],
                             a["zero_point"] == 0, out.name)
            table = self.const(quantize_array(p.inputs[0].const, spec), p.inputs[0].name + "_q")
            table.type = TensorType(table.type.shape, table.type.dtype, spec)
            self.emit(shape.gather, [table, p.inputs[1]], out.name, out, spec, **p.attrs)
            return True
        return False

    def where(self, n: Node) -> bool:
        """where(isnan(x), a, y) of integer x and y (sdpa's NaN guard after an integer softmax) is y;
        where(keep, s, -inf) of an integer s read only by softmaxes is a masked Shiftmax's input (the
        float select stays until no reader is left). True when n was replaced."""
        c, a, b = n.inputs
        out = n.outputs[0]
        if id(c) in self.never_nan and id(b) in self.ints and b.type.shape == out.type.shape:
            self.ints[id(out)] = self.ints[id(b)]
            self.recreate_float(self.ints[id(b)], out)
            return True
        readers = [u.op for u, _ in self.uses.get(out, [])]
        if id(a) in self.ints and is_mask_value(b) and a.type.shape == out.type.shape and readers and \
                all(op is nn.softmax for op in readers):
            self.masked[id(out)] = (self.ints[id(a)], c)
        return False

    # -- driver ---------------------------------------------------------------------------
    def visit(self, n: Node) -> bool:
        """True when n was replaced (its results are defined by the emitted nodes)."""
        if n.op is quant.dequantize:
            if len(n.attrs["scale"]) == 1:
                self.ints[id(n.outputs[0])] = IntRep(n.inputs[0], n.attrs["scale"][0], n.attrs["zero_point"][0])
            return False
        if n.op is quant.quantize:
            return self.quantize(n)
        if n.op is um.isnan and id(n.inputs[0]) in self.ints:
            self.never_nan.add(id(n.outputs[0]))            # kept until a where below drops its use
            return False
        if n.op is ew.where:
            return self.where(n)
        if n.op in (ew.div, ew.mul) and len(n.inputs) == 2:
            for i in (0, 1):
                rep, c = self.ints.get(id(n.inputs[i])), n.inputs[1 - i].float_scalar()
                if rep is not None and c is not None and c > 0 and (n.op is ew.mul or i == 0):
                    s = rep.scale / c if n.op is ew.div else rep.scale * c
                    self.ints[id(n.outputs[0])] = IntRep(rep.value, s, rep.zp)
            return False
        if n.op is nn.softmax and id(n.inputs[0]) in self.masked:
            rep, keep = self.masked[id(n.inputs[0])]
            self.ints[id(n.outputs[0])] = new = self.softmax(n, rep, keep)
            self.recreate_float(new, n.outputs[0])
            return True
        rep = self.ints.get(id(n.inputs[0])) if n.inputs else None
        if rep is None:
            return False
        if n.op is nn.softmax:
            new = self.softmax(n, rep)
        elif n.op is ew.gelu:
            new = self.gelu(n, rep)
        elif n.op is ew.tanh:
            new = self.tanh(n, rep)
        elif n.op is nn.layer_norm:
            new = self.layer_norm(n, rep)
        else:
            return False
        if new is None:
            return False
        self.ints[id(n.outputs[0])] = new
        self.recreate_float(new, n.outputs[0])
        return True

    def run(self) -> Graph:
        self.done: set[int] = set()
        for n in self.g.nodes:
            if id(n) in self.done:
                continue
            self.loc = n.loc or SourceLoc(self.g.source, n.name, n.op.name)
            if not self.visit(n):
                self.nodes.append(n)
        self.g.nodes = self.nodes
        return dead_code(self.g)


def _table8(fs: list[forms.Form]) -> forms.Form:
    return next(f for f in fs if f.name == "table8")


GELU_CHOOSERS = {"auto": forms.choose, "table": _table8, "shift": None}


@register_pass("ivit")
def ivit_rewrite(g: Graph, ctx=None) -> Graph:
    """rewrite_islands with the GELU form of the compile's QuantConfig.gelu_form: "auto" (activation_forms'
    choice, the default), "table" (the exact 8-bit table wherever the input is 8-bit) or "shift" (ShiftGELU)."""
    req = getattr(ctx, "quant", None)
    return rewrite_islands(g, GELU_CHOOSERS[req.config.gelu_form if req is not None else "auto"])


def rewrite_islands(g: Graph, choose_form=forms.choose) -> Graph:
    """Float softmax / gelu / layer_norm / tanh islands of a dyadic graph -> I-ViT integer ops:
    dequantize -> softmax -> quantize => q.shiftmax -> q.requant (and likewise q.shiftgelu,
    q.layernorm, q.shifttanh); a graph without such islands is returned unchanged (a copy). A gelu island
    on an 8-bit input stays for table_islands where `choose_form` (activation_forms.choose; None: never)
    takes its exact 8-bit table over ShiftGELU."""
    return _Rewriter(g.clone(), choose_form).run()
