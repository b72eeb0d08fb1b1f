"""The energy estimate of a compiled model: arithmetic and DRAM traffic counted on the final IR, times
a stated per-operation energy table (Horowitz 45 nm; shifts from ShiftAddViT).

Counting walks the program the executable runs (every `k.fused` kernel through its body). Each op
kind has ONE rule in `RULES`, deriving from the op's shapes and dtypes how many multiplies, adds,
divisions and shifts it performs, in which precision (fp32, int32, int8), and how many bytes its
table lookups read. Constants (weights) are read from DRAM once per inference; activations move by
the memory plan when there is one (the arena written once and read once), otherwise every tensor
between kernels is written once and read once. An op with no rule is listed in `uncounted`, never
counted as zero. The result is a JSON-ready dict (the artifact manifest's `energy` object):

    pJ_per_inference  the total
    by_op             op -> {"counts": {quantity: n}, "pJ": energy}   (weights read included)
    activations       {"model", "dram_bytes", "pJ"}: the traffic between kernels
    totals            quantity -> n over the whole model
    table, table_source  the prices used (pJ per operation or byte) and where they come from
    rules             op -> how it was counted, for every op of the model that has a rule
    uncounted         ops that have no counting rule (their energy is missing from the total)
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from compiler.ir import Graph, Node, Value
from compiler.ops import (bitwise, elementwise, indexing, ivit, kernel, layout, linalg, lut, mfree, nn,
                          quant, reduce, shape, unary_math)
from compiler.ops.registry import OpDef
from compiler.types import DType

Counts = dict[str, int]

# -- the energy table (pJ per operation, or per byte) -------------------------------------------
DRAM_PJ_PER_64BIT = 1300.0       # the low end of Horowitz's 1.3-2.6 nJ per 64-bit DRAM access
SRAM_PJ_PER_64BIT = 10.0         # Horowitz: 8 KB SRAM, 64-bit access

TABLE: dict[str, float] = {
    "mul_fp32": 3.7, "add_fp32": 0.9,
    "mul_int32": 3.1, "add_int32": 0.1,
    "mul_int8": 0.2, "add_int8": 0.03,
    "shift_int32": 0.13, "shift_int8": 0.024,
    "div_fp32": 3.7, "div_int32": 3.1, "div_int8": 0.2,      # no entry in the sources: as a multiply
    "lookup_bytes": SRAM_PJ_PER_64BIT / 8,                    # a table lookup reads SRAM
    "dram_bytes": DRAM_PJ_PER_64BIT / 8,
}
TABLE_SOURCE = (
    "M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, 45 nm: "
    "fp32 mult 3.7 / add 0.9 pJ, int32 mult 3.1 / add 0.1 pJ, int8 mult 0.2 / add 0.03 pJ; "
    "8 KB SRAM 10 pJ per 64-bit access = 1.25 pJ/byte (each table lookup reads its entry's bytes); "
    "DRAM 1.3-2.6 nJ per 64-bit access, the low end used: 1300 pJ / 8 = 162.5 pJ/byte (the high "
    "end doubles every DRAM term). Shifts from ShiftAddViT (You et al., NeurIPS 2023, after "
    "Horowitz): 0.13 pJ 32-bit, 0.024 pJ 8-bit. Assumptions of this estimate, not of the sources: "
    "a division or square root is priced as a multiply of its type; int16/int64 arithmetic at int32 prices, "
    "float16 at fp32 prices; a compare, select or bitwise op as an add of its type; exp/log/tanh/"
    "erf and the like as 8 multiplies and 8 adds (range reduction and a polynomial).")

POLY = 8        # multiplies and adds of one transcendental evaluation (TABLE_SOURCE says so)


def precision(dt: DType) -> str:
    """The price class of arithmetic on `dt`: fp32 (any float), int8 (<= 8 bits, bool), int32."""
    if dt.is_float:
        return "fp32"
    return "int8" if dt.bits <= 8 else "int32"


def ops(cls: str, n: int, *, mul: int = 0, add: int = 0, shift: int = 0, div: int = 0,
        transcendental: int = 0) -> Counts:
    """`n` times the given operations in precision `cls` (a transcendental is POLY mults + adds)."""
    per = {"mul": mul + POLY * transcendental, "add": add + POLY * transcendental, "shift": shift,
           "div": div}
    return {f"{k}_{cls}": n * v for k, v in per.items() if v and n}


def merge(*parts: Counts) -> Counts:
    out: Counts = {}
    for p in parts:
        for k, v in p.items():
            out[k] = out.get(k, 0) + v
    return out


# -- counting rules -------------------------------------------------------------------------------
CountFn = Callable[[Node], "Counts | None"]


@dataclass(frozen=True)
class Rule:
    """How one op kind is counted: `count(node)` (None: this instance cannot be counted), what it
    counts in words, and whether a constant operand is read only where the op gathers from it."""

    count: CountFn
    doc: str = ""                   # default: the count function's docstring
    gathers: bool = False

    def __post_init__(self) -> None:
        if not self.doc:
            object.__setattr__(self, "doc", " ".join((self.count.__doc__ or "").split()))


def _cls_of(n: Node, operands: int | None = None) -> str:
    """The widest price class among the node's first `operands` (default all) non-bool operands:
    the precision of its arithmetic."""
    order = ("int8", "int32", "fp32")
    ins = n.inputs[:operands]
    dts = [v.type.dtype for v in ins if v.type.dtype is not DType.BOOL] or [ins[0].type.dtype]
    return max((precision(d) for d in dts), key=order.index)


def _out(n: Node) -> int:
    return n.outputs[0].type.size


def _elementwise(**per_element: int) -> CountFn:
    """The same operations for every output element, in the operands' precision."""
    return lambda n: ops(_cls_of(n), _out(n), **per_element)


def _nothing(n: Node) -> Counts:
    return {}


def _lut_matmul(n: Node) -> Counts:
    """T-MAC: per row and group of 4 activations, a 16-entry table (16 adds in the table's precision);
    per output, one lookup (an entry's bytes from SRAM) and one add per group of 4 and weight bit-plane;
    per output and weight group, a shift and an add per bit-plane and the group scale's multiply-add."""
    a, planes = n.inputs[0].type, n.inputs[1].type
    bits, g, table = n.attrs["bits"], n.attrs["group_size"], n.attrs["table"]
    rows, cols, kp = a.size // a.shape[-1], planes.shape[1], planes.shape[2] * 8
    tcls, entry = ("int8", 1) if table == "int8" else ("int32", 2)
    looks = rows * cols * (kp // 4) * bits
    groups = rows * cols * (kp // g)
    return merge(ops(tcls, rows * (kp // 4) * 16, add=1), {"lookup_bytes": looks * entry},
                 ops("int32", looks, add=1), ops("int32", groups * bits, shift=1, add=1),
                 ops("int32", groups, mul=1, add=1))


def _binary_attention(n: Node) -> Counts:
    """ShiftAddViT binary-code attention: the codes, one compare per Q and K element; V to int8, per
    element a compare (max|V|), a division, an add and a floor/clamp (3 compares); the MatAdds, one int32
    add per (code bit, V or KV element) and per code bit for the counts (the select on the code is the
    add's enable: not priced apart); per row one division, per output one multiply (and the cast)."""
    q, k, v = (x.type for x in n.inputs)
    bh = math.prod(q.shape[:-2])
    (lq, d), (lk, dv) = q.shape[-2:], v.shape[-2:]
    return merge(ops("fp32", q.size + k.size, add=1), ops("fp32", v.size, add=5, div=1),
                 ops("int32", bh * d * (lk + lq) * (dv + 1), add=1),
                 ops("fp32", bh * lq, div=1), ops("fp32", bh * lq * dv, mul=1, add=1))


# q.conv / q.matmul realized as shift-and-add (realization "shift"): every weight is a sum of this
# many signed powers of two, so a product is that many shifts of the activation, added up
SHIFT_TERMS = {"pow2x1": 1, "pow2x2": 2}


def _contraction(n: Node, macs: int, acc: str) -> Counts | None:
    """MACs in the operands' precision, accumulated in `acc` (or, for a shift-and-add realization,
    a shift and an add per power-of-two term); bias and zero points add once per output."""
    extra = (len(n.inputs) > 2) + sum(1 for k in ("x_zero_point", "a_zero_point", "b_zero_point")
                                      if n.attrs.get(k, 0) != 0)
    if n.attrs.get("realization") != "shift":
        return merge(ops(_cls_of(n, 2), macs, mul=1), ops(acc, macs + extra * _out(n), add=1))
    terms = SHIFT_TERMS.get(n.attrs.get("weight_code", ""))
    if terms is None:                   # a shift kernel for weights of no known code: not counted
        return None
    return merge(ops(_cls_of(n, 1), macs, shift=terms), ops(acc, terms * macs + extra * _out(n), add=1))


def _acc_of(n: Node) -> str:
    return precision(n.outputs[0].type.dtype)


def _conv(n: Node) -> Counts | None:
    """MACs = N*Cout*Hout*Wout * (Cin/groups)*kh*kw (one weight filter per output element), the
    multiply in the operands' precision, the add in the output's (a shift-and-add realization: a
    shift and an add per power-of-two term of the weight instead); a bias or zero point adds once per
    output."""
    return _contraction(n, _out(n) * math.prod(n.inputs[1].type.shape[1:]), _acc_of(n))


def _conv_transpose(n: Node) -> Counts | None:
    """MACs = every input element times (Cout/groups)*kh*kw weights; bias as for conv."""
    return _contraction(n, n.inputs[0].type.size * math.prod(n.inputs[1].type.shape[1:]), _acc_of(n))


def _matmul(n: Node) -> Counts | None:
    """MACs = output elements * K (the contracted length), the multiply in the operands' precision,
    the add in the output's (a shift-and-add realization: a shift and an add per power-of-two term
    of the weight instead); a zero point adds once per output."""
    return _contraction(n, _out(n) * n.inputs[0].type.shape[-1], _acc_of(n))


def _einsum(n: Node) -> Counts | None:
    """Every point of the index space multiplies its operands once and, when indices are summed
    away, adds once; equations with an ellipsis are not counted."""
    eq = n.attrs["equation"].replace(" ", "")
    if "." in eq:
        return None
    sizes: dict[str, int] = {}
    for term, v in zip(eq.split("->")[0].split(","), n.inputs):
        sizes.update(zip(term, v.type.shape))
    points = math.prod(sizes.values())
    return ops(_cls_of(n), points, mul=len(n.inputs) - 1, add=int(points > _out(n)))


def _pool(mul: int) -> CountFn:
    """prod(kernel) compares or adds per output element, then `mul` multiplies (the average)."""
    return lambda n: ops(_cls_of(n), _out(n), add=math.prod(n.attrs["kernel"]), mul=mul)


def _reduction(per_out: dict[str, int] | None = None, **per_input: int) -> CountFn:
    """Operations per input element, then `per_out` per output element."""
    return lambda n: merge(ops(_cls_of(n), n.inputs[0].type.size, **per_input),
                           ops(_cls_of(n), _out(n), **(per_out or {})))


def _rowwise(row_length: Callable[[Node], int], per_row: dict[str, int], cls: str | None = None,
             **per_element: int) -> CountFn:
    """Operations per element of the input, plus `per_row` once per normalized row (a row is
    `row_length(node)` elements)."""
    def count(n: Node) -> Counts:
        size = n.inputs[0].type.size
        rows = size // max(row_length(n), 1)
        c = cls or _cls_of(n)
        return merge(ops(c, size, **per_element), ops(c, rows, **per_row))
    return count


def _axis_length(n: Node) -> int:
    """Softmax-like ops normalize along `axis`."""
    t = n.inputs[0].type
    return t.shape[n.attrs["axis"] % t.rank]


def _last_length(n: Node) -> int:
    """I-LayerNorm normalizes the last axis."""
    return n.inputs[0].type.shape[-1]


def _norm_length(n: Node) -> int:
    """layer_norm normalizes axes [axis, rank)."""
    t = n.inputs[0].type
    return math.prod(t.shape[n.attrs["axis"] % t.rank:])


def _spatial_length(n: Node) -> int:
    """instance_norm normalizes the spatial axes of each (n, c)."""
    return math.prod(n.inputs[0].type.shape[2:])


def _cast(n: Node) -> Counts:
    """A conversion between float and integer is one float operation; int <-> int is free."""
    a, b = n.inputs[0].type.dtype, n.outputs[0].type.dtype
    return ops("fp32", _out(n), add=1) if a.is_float != b.is_float else {}


def _table(n: Node) -> Counts:
    """One lookup per element, reading one table entry (its bytes) from SRAM."""
    return {"lookup_bytes": _out(n) * n.inputs[1].type.dtype.numpy.itemsize}


def _quantize(n: Node) -> Counts:
    """x * (1/scale) and rint in fp32; + zero point and the clamp in int32."""
    return merge(ops("fp32", _out(n), mul=1, add=1),
                 ops("int32", _out(n), add=2 + (n.attrs["zero_point"] != 0)))


def _dequantize(n: Node) -> Counts:
    """(q - zero point) in int32, the conversion and * scale in fp32."""
    return merge(ops("int32", _out(n), add=int(any(n.attrs["zero_point"]))),
                 ops("fp32", _out(n), mul=1, add=1))


def _requant(n: Node) -> Counts:
    """x * m (int32 multiply), + 2^(c-1) and >> c, the zero points and the two-sided clamp."""
    a = n.attrs
    adds = 2 + int(any(c > 0 for c in a["shift"])) + (a["in_zero_point"] != 0) + (a["zero_point"] != 0)
    return ops("int32", _out(n), mul=1, shift=1, add=adds)


# I-ViT's integer exponential per element (ALGORITHMS.md, compiler/ops/ivit.py steps 1-5):
# two shifts and two adds for x*log2(e), the clamp to n*x0, q = I_p // x0 (a division by a
# constant), r = I_p - q*x0, (r >> 1) - x0, and << (n - q).
SHIFT_EXP = {"shift": 4, "add": 6, "mul": 1, "div": 1}


SHIFTMAX = merge(SHIFT_EXP, {"add": 5, "mul": 1, "shift": 1})   # max, x-max, sum, e*factor >> , clamp
SHIFTTANH = merge(SHIFT_EXP, {"add": 5, "mul": 1, "shift": 1, "div": 1})   # |x|, e0+-e, min, sign
ILAYERNORM = {"add": 8, "mul": 3, "shift": 2}      # sums, x-mu, y*y, y*factor>>1, *mult+bias+rnd>>, zp, clamp
ILAYERNORM_ROW = {"shift": 11, "add": 11, "div": 12}   # the rounded mean, 10 Newton steps, the factor


def _shiftgelu(n: Node) -> Counts:
    """Per element: the max compare, x - m, e1 = shift_exp, e1 + e2, the division, e1*factor >> ,
    x * sigma; e2 = shift_exp(-m) (and the row max's compare with 0) once per row (row_max) or per
    element."""
    per_element = merge(SHIFT_EXP, {"add": 3, "div": 1, "mul": 2, "shift": 1})
    size = n.inputs[0].type.size
    if not n.attrs["row_max"]:
        return ops("int32", size, **merge(per_element, SHIFT_EXP))
    rows = size // max(_last_length(n), 1)
    return merge(ops("int32", size, **per_element), ops("int32", rows, **merge(SHIFT_EXP, {"add": 1})))


_MOVE = Rule(_nothing, "moves data, no arithmetic (its bytes are activation traffic)")
_CMP = Rule(_elementwise(add=1), "one compare/select/logic op per element (priced as an add)")

RULES: dict[OpDef, Rule] = {
    # contractions
    linalg.conv: Rule(_conv),
    quant.conv: Rule(_conv),
    linalg.conv_transpose: Rule(_conv_transpose),
    linalg.matmul: Rule(_matmul),
    quant.matmul: Rule(_matmul),
    linalg.einsum: Rule(_einsum),
    # quantization and the integer nonlinearities (I-ViT), all int32 but the table
    quant.quantize: Rule(_quantize),
    quant.dequantize: Rule(_dequantize),
    quant.requant: Rule(_requant),
    quant.table: Rule(_table),
    ivit.shiftmax: Rule(_rowwise(_axis_length, {"div": 1, "add": 1}, "int32", **SHIFTMAX),
                        "per element: shift_exp + max, subtract, sum, e*factor >> k, clamp; per row one "
                        "division"),
    ivit.shiftgelu: Rule(_shiftgelu),
    ivit.shifttanh: Rule(_elementwise(**SHIFTTANH), "per element: shift_exp, |x|, e0 +- e, one division, "
                                                      "(e0-e)*factor >> k, sign"),
    ivit.layernorm: Rule(_rowwise(_last_length, ILAYERNORM_ROW, "int32", **ILAYERNORM),
                         "per element: sums, y = x - mu, y*y, y*factor >> 1, *mult + bias + rnd >> shift, "
                         "zero point, clamp; per row: the mean, 10 Newton steps, the factor"),
    # float nonlinearities and normalizations
    nn.softmax: Rule(_rowwise(_axis_length, {"div": 1}, transcendental=1, add=3, mul=1),
                     "per element: max, x - max, exp, sum, * 1/sum; per row one division"),
    nn.log_softmax: Rule(_rowwise(_axis_length, {"transcendental": 1}, transcendental=1, add=4),
                         "per element: max, x - max, exp, sum, - log(sum); per row one log"),
    nn.layer_norm: Rule(_rowwise(_norm_length, {"div": 1, "mul": 2, "add": 1}, mul=3, add=4),
                        "per element: sum, x - mean, square, sum, * rstd, * scale, + bias; per row: "
                        "mean and variance scaling, + eps, 1/sqrt as a division"),
    nn.instance_norm: Rule(_rowwise(_spatial_length, {"div": 1, "mul": 2, "add": 1}, mul=3, add=4),
                           "as layer_norm over the spatial axes of each (n, c)"),
    nn.batch_norm: Rule(_elementwise(mul=1, add=1), "x * a + b per element (a, b folded per channel)"),
    nn.max_pool: Rule(_pool(0), "prod(kernel) compares per output element"),
    nn.avg_pool: Rule(_pool(1), "prod(kernel) adds and one multiply per output element"),
    # reductions
    reduce.reduce_sum: Rule(_reduction(add=1), "one add per input element"),
    reduce.reduce_mean: Rule(_reduction({"mul": 1}, add=1), "one add per input, one multiply per output"),
    reduce.reduce_max: Rule(_reduction(add=1), "one compare per input element"),
    reduce.reduce_min: Rule(_reduction(add=1), "one compare per input element"),
    reduce.reduce_prod: Rule(_reduction(mul=1), "one multiply per input element"),
    reduce.reduce_l2: Rule(_reduction({"div": 1}, mul=1, add=1), "square and add per input, sqrt per output"),
    reduce.argmax: Rule(_reduction(add=1), "one compare per input element"),
    reduce.cumsum: Rule(_elementwise(add=1), "one add per element"),
    # elementwise arithmetic
    elementwise.add: Rule(_elementwise(add=1), "one add per element"),
    elementwise.sub: Rule(_elementwise(add=1), "one add per element"),
    elementwise.mul: Rule(_elementwise(mul=1), "one multiply per element"),
    elementwise.div: Rule(_elementwise(div=1), "one division per element"),
    elementwise.pow_: Rule(_elementwise(transcendental=2, mul=1), "exp(y * log x) per element"),
    elementwise.minimum: _CMP, elementwise.maximum: _CMP, elementwise.equal: _CMP,
    elementwise.less: _CMP, elementwise.greater: _CMP, elementwise.logical_and: _CMP,
    elementwise.logical_or: _CMP, elementwise.logical_not: _CMP, elementwise.where: _CMP,
    elementwise.relu: _CMP, elementwise.neg: _CMP, elementwise.abs_: _CMP,
    elementwise.floor: _CMP, elementwise.ceil: _CMP, unary_math.round_: _CMP,
    unary_math.isnan: _CMP, unary_math.isinf: _CMP,
    bitwise.bitwise_and: _CMP, bitwise.bitwise_or: _CMP, bitwise.bitwise_xor: _CMP,
    bitwise.bitwise_not: _CMP,
    bitwise.bit_shift: Rule(_elementwise(shift=1), "one shift per element"),
    elementwise.prelu: Rule(_elementwise(mul=1, add=1), "compare and multiply per element"),
    elementwise.leaky_relu: Rule(_elementwise(mul=1, add=1), "compare and multiply per element"),
    elementwise.clip: Rule(_elementwise(add=2), "two compares per element"),
    elementwise.hard_sigmoid: Rule(_elementwise(mul=1, add=3), "alpha*x + beta, clamp"),
    elementwise.hard_swish: Rule(_elementwise(mul=2, add=3), "x * clamp(x/6 + 1/2)"),
    elementwise.cast: Rule(_cast),
    elementwise.sqrt: Rule(_elementwise(div=1), "one square root per element (priced as a division)"),
    elementwise.reciprocal: Rule(_elementwise(div=1), "one division per element"),
    elementwise.exp: Rule(_elementwise(transcendental=1), "one transcendental per element"),
    elementwise.log: Rule(_elementwise(transcendental=1), "one transcendental per element"),
    elementwise.tanh: Rule(_elementwise(transcendental=1), "one transcendental per element"),
    elementwise.erf: Rule(_elementwise(transcendental=1), "one transcendental per element"),
    elementwise.sigmoid: Rule(_elementwise(transcendental=1, add=1, div=1), "1 / (1 + exp(-x))"),
    elementwise.softplus: Rule(_elementwise(transcendental=2, add=1), "log(1 + exp(x))"),
    elementwise.elu: Rule(_elementwise(transcendental=1, mul=1, add=2), "alpha * (exp(x) - 1), compare"),
    elementwise.gelu: Rule(_elementwise(transcendental=1, mul=3, add=1), "x * 0.5 * (1 + erf(x / sqrt 2))"),
    **{op: Rule(_elementwise(transcendental=1), "one transcendental per element")
       for op in (unary_math.sin, unary_math.cos, unary_math.tan, unary_math.asin, unary_math.acos,
                  unary_math.atan, unary_math.sinh, unary_math.cosh, unary_math.asinh, unary_math.acosh,
                  unary_math.atanh)},
    # data movement: no arithmetic
    **{op: _MOVE for op in (shape.reshape, shape.transpose, shape.concat, shape.slice_, shape.expand,
                            shape.tile, shape.pad, layout.pack, layout.unpack, elementwise.identity,
                            indexing.trilu, indexing.gather_elements, indexing.gather_nd,
                            indexing.one_hot)},
    shape.gather: Rule(_nothing, "moves the gathered rows; a constant table is read only there",
                       gathers=True),
    kernel.fused: Rule(_nothing, "one kernel: its body's ops are counted"),
    layout.unpack_weight: Rule(_nothing, "the kernel reads the packed constant as is: no work at run time"),
    lut.lut_matmul: Rule(_lut_matmul),
    mfree.binary_attention: Rule(_binary_attention),
}


# -- the estimate ----------------------------------------------------------------------------------
def _nodes(g: Graph, env: dict[int, Value] | None = None) -> Iterator[tuple[Node, list[Value]]]:
    """Every node of `g` and of its kernels' bodies (after the kernel), with its operands resolved
    to values outside the bodies: a body input stands for the kernel's operand."""
    env = env or {}
    for n in g.nodes:
        ins = [env.get(id(v), v) for v in n.inputs]
        yield n, ins
        for body in n.bodies:
            yield from _nodes(body, {id(b): v for b, v in zip(body.inputs, ins)})


def constant_reads(n: Node, ins: list[Value], rule: Rule | None) -> list[tuple[Value, int]]:
    """The constants `n` reads and how many of their bytes: all of them, or for a gathering op only
    what it gathers (an embedding lookup reads its rows, not the table)."""
    out = []
    for i, v in enumerate(ins):
        if v.is_const:
            full = v.type.nbytes
            out.append((v, min(full, n.outputs[0].type.nbytes) if rule and rule.gathers and i == 0 else full))
    return out


def activation_traffic(g: Graph, arena_bytes: int | None) -> tuple[str, int]:
    """(model, DRAM bytes) of the activations. Inputs are read and outputs written once; between the
    kernels, the arena of the memory plan is written once and read once, or without a plan every
    tensor is (views of a reshape share their input's bytes)."""
    io = sum(v.type.nbytes for v in g.inputs) + sum(v.type.nbytes for v in g.outputs if not v.is_const)
    if arena_bytes is not None:
        return "arena written once and read once", io + 2 * arena_bytes
    outputs = {id(v) for v in g.outputs}
    inner = sum(2 * v.type.nbytes for n in g.nodes if n.op is not shape.reshape
                for v in n.outputs if id(v) not in outputs)
    return "every tensor between kernels written once and read once", io + inner


def price(counts: Counts) -> float:
    """Energy in pJ of `counts` under TABLE."""
    return float(sum(TABLE[k] * v for k, v in sorted(counts.items())))


def estimate(g: Graph, arena_bytes: int | None = None) -> dict[str, Any]:
    """The energy estimate of one inference of the final IR `g` (see the module docstring);
    `arena_bytes` is the memory plan's arena when it exists."""
    by_op: dict[str, Counts] = {}
    uncounted: set[str] = set()
    rules: dict[str, str] = {}
    seen_consts: set[int] = set()
    for n, ins in _nodes(g):
        rule = RULES.get(n.op)
        counts = rule.count(n) if rule is not None else None
        if rule is not None:
            rules[n.op.name] = rule.doc
        if counts is None:              # its arithmetic is missing from the total, and says so
            uncounted.add(n.op.name)
            counts = {}
        if not n.bodies:           # a kernel's constants are read by its body's ops
            for v, nbytes in constant_reads(n, ins, rule):
                if id(v.const) not in seen_consts:
                    seen_consts.add(id(v.const))
                    counts = merge(counts, {"dram_bytes": nbytes})
        if counts:
            by_op[n.op.name] = merge(by_op.get(n.op.name, {}), counts)
    model, act_bytes = activation_traffic(g, arena_bytes)
    activations = {"model": model, "dram_bytes": act_bytes, "pJ": price({"dram_bytes": act_bytes}),
                   **({"arena_bytes": arena_bytes} if arena_bytes is not None else {})}
    ops_json = {op: {"counts": dict(sorted(c.items())), "pJ": price(c)} for op, c in sorted(by_op.items())}
    totals = merge(*by_op.values(), {"dram_bytes": act_bytes})
    return {"pJ_per_inference": sum(o["pJ"] for o in ops_json.values()) + activations["pJ"],
            "by_op": ops_json, "activations": activations, "totals": dict(sorted(totals.items())),
            "table": dict(TABLE), "table_source": TABLE_SOURCE, "rules": dict(sorted(rules.items())),
            "uncounted": sorted(uncounted)}


# -- text ------------------------------------------------------------------------------------------
def human(x: float, unit: str = "") -> str:
    """1234567 -> '1.23M' (k, M, G, T)."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}{unit}"
    return f"{x:.3g}{unit}"


def joules(pj: float) -> str:
    """pJ as the readable unit: '18.2 mJ', '3.41 uJ', '120 nJ'."""
    for scale, unit in ((1e9, "mJ"), (1e6, "uJ"), (1e3, "nJ")):
        if pj >= scale:
            return f"{pj / scale:.3g} {unit}"
    return f"{pj:.3g} pJ"


def energy_by_kind(e: dict[str, Any]) -> dict[str, float]:
    """The total split into arithmetic, table lookups, weights from DRAM and activations from DRAM."""
    table = e["table"]
    weights = sum(o["counts"].get("dram_bytes", 0) for o in e["by_op"].values()) * table["dram_bytes"]
    lookups = e["totals"].get("lookup_bytes", 0) * table["lookup_bytes"]
    return {"arithmetic": e["pJ_per_inference"] - weights - lookups - e["activations"]["pJ"],
            "table lookups (SRAM)": lookups, "weights (DRAM)": weights,
            "activations (DRAM)": e["activations"]["pJ"]}


def format_energy(e: dict[str, Any]) -> str:
    """One model's estimate as a text table: energy per op with its counts, the split, the total."""
    total = e["pJ_per_inference"] or 1.0
    lines = [f"  {'op':<16}{'energy':>11}{'share':>8}  counts"]
    for op, o in sorted(e["by_op"].items(), key=lambda kv: -kv[1]["pJ"]):
        counts = ", ".join(f"{k} {human(v)}" for k, v in o["counts"].items())
        lines.append(f"  {op:<16}{joules(o['pJ']):>11}{o['pJ'] / total:>8.1%}  {counts}")
    a = e["activations"]
    lines.append(f"  {'activations':<16}{joules(a['pJ']):>11}{a['pJ'] / total:>8.1%}  "
                 f"dram_bytes {human(a['dram_bytes'])} ({a['model']})")
    lines.append("  " + ", ".join(f"{k} {joules(v)}" for k, v in energy_by_kind(e).items()))
    lines.append(f"  total {joules(e['pJ_per_inference'])} per inference (an estimate: operation counts "
                 "times the table below, not a measurement)")
    if e["uncounted"]:
        lines.append(f"  not counted (no rule; missing from the total): {', '.join(e['uncounted'])}")
    lines.append(f"  table: {e['table_source']}")
    return "\n".join(lines)


def format_side_by_side(named: dict[str, dict[str, Any]]) -> str:
    """Several builds of one model in columns: operation counts, energy by kind and by op, total."""
    names = list(named)
    width = max(14, *(len(n) + 2 for n in names))

    def row(label: str, cells: list[str]) -> str:
        return f"  {label:<24}" + "".join(f"{c:>{width}}" for c in cells)

    lines = [row("operation counts", names)]
    quantities = sorted({k for e in named.values() for k in e["totals"]})
    lines += [row(f"  {q}", [human(e["totals"].get(q, 0)) for e in named.values()]) for q in quantities]
    kinds = [energy_by_kind(e) for e in named.values()]
    lines.append("  energy by kind")
    lines += [row(f"  {k}", [joules(kd[k]) for kd in kinds]) for k in kinds[0]]
    lines.append("  energy by op (its arithmetic and the weights it reads)")
    for op in sorted({op for e in named.values() for op in e["by_op"]}):
        lines.append(row(f"  {op}", [joules(e["by_op"][op]["pJ"]) if op in e["by_op"] else "-"
                                     for e in named.values()]))
    lines.append(row("total per inference", [joules(e["pJ_per_inference"]) for e in named.values()]))
    first = named[names[0]]["pJ_per_inference"]
    lines.append(row(f"vs {names[0]}", [f"{e['pJ_per_inference'] / first:.3f}x" if first else "-"
                                        for e in named.values()]))
    for n, e in named.items():
        if e["uncounted"]:
            lines.append(f"  {n}: not counted (no rule): {', '.join(e['uncounted'])}")
    return "\n".join(lines)
