"""Post-training quantization front half: calibration (observers run over the reference
interpreter) and annotation (which float values become integer, on which grid), plus
the specs they record. The passes and drivers that use them are in passes/quantize_pipeline.py."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compiler import interp
from compiler.diagnostics import InvalidInput, Unsupported
from compiler.ir import Graph, Node, Value
from compiler.ops import elementwise as ew
from compiler.ops import linalg, nn, reduce, shape
from compiler.ops.quant import INT_RANGE, RESIZE_COORD_MODES
from compiler.types import DType, QuantParams, TensorType
from passes.base import steps
from passes.active_range import active_ranges
from passes.table_islands import FLOAT_ELEMENTWISE

OBSERVERS = ("minmax", "percentile", "mse")
POLICIES = ("int8", "uint8", "auto")
GELU_FORMS = ("auto", "table", "shift")


# -- what annotate records -------------------------------------------------------------
@dataclass(frozen=True)
class QuantSpec(QuantParams):
    """QuantParams plus the choices annotate made: the integer storage type, its clamp range,
    whether the grid is symmetric, and the float value (by name) the integer tensor stands for."""

    dtype: DType = DType.I8
    qmin: int = -128
    qmax: int = 127
    symmetric: bool = True
    source: str | None = None
    # a grid narrowed to where its activation changes (passes/active_range.py): the bound of each trimmed side
    # (-inf / inf for a side left as calibrated); values beyond a trimmed side clamp to the grid's end there
    active_range: tuple[float, float] | None = None

    @property
    def per_tensor(self) -> bool:
        return len(self.scale) == 1

    def same_grid(self, other: QuantParams | None) -> bool:
        return isinstance(other, QuantSpec) and (self.scale, self.zero_point, self.dtype, self.axis) == \
            (other.scale, other.zero_point, other.dtype, other.axis)


def spec_of(v: Value) -> QuantSpec | None:
    """The annotation of v as a QuantSpec (a plain QuantParams is read as int8 if its zero point
    is 0, else uint8)."""
    q = v.type.quant
    if q is None or isinstance(q, QuantSpec):
        return q
    dt = DType.I8 if all(z == 0 for z in q.zero_point) else DType.U8
    lo, hi = INT_RANGE[dt]
    return QuantSpec(q.scale, q.zero_point, q.axis, dt, lo, hi, dt is DType.I8, v.name)


def with_quant(t: TensorType, q: QuantParams | None) -> TensorType:
    return TensorType(t.shape, t.dtype, q)


@dataclass(frozen=True)
class QuantConfig:
    """activation: "int8" (symmetric everywhere), "uint8" (unsigned where calibration saw no
    negative value, else int8), "auto" (as uint8, plus asymmetric uint8 with a zero point for
    signed tensors whose range is skewed enough that it is >= 4/3 finer than int8).
    keep_16bit: conv / matmul layers (ONNX node names, or "first" / "last": the first / last integer conv or
    matmul in graph order, "first:N" / "last:N": the first / last N, "all") whose input activation(s) and output (the
    requant after the accumulator, through a folded bias / relu / clip) get int16 symmetric grids instead of 8-bit
    (HAWQV3's per-layer activation bits; `keep_16bit_layers`). The grid is a value's: the layer before a kept one writes int16, the one after reads it."""

    activation: str = "auto"
    observer: str = "minmax"
    percentile: float = 99.99
    per_channel: bool = True
    bits: int = 8                     # activations
    weight_bits: int | None = None    # None: same as bits; 4 stores int4 weights
    integer_only: bool = False        # quantize_graph fails unless the result is integer-only
    keep_16bit: tuple[str, ...] = ()  # layers with int16 input / output activations
    active_range: bool = True         # narrow the grid of a value only an activation reads (passes/active_range.py)
    gelu_form: str = "auto"           # integer-only GELU: "auto" (passes/activation_forms.py), "table", "shift"

    def __post_init__(self) -> None:
        if self.activation not in POLICIES:
            raise Unsupported(f"activation policy {self.activation!r}", hint=f"one of {POLICIES}")
        if self.observer not in OBSERVERS:
            raise Unsupported(f"observer {self.observer!r}", hint=f"one of {OBSERVERS}")
        if self.bits != 8:
            raise Unsupported(f"{self.bits}-bit activations", hint="activations are 8-bit for now")
        if self.wbits not in (4, 8):
            raise Unsupported(f"{self.wbits}-bit weights", hint="weights are 8- or 4-bit")
        if self.gelu_form not in GELU_FORMS:
            raise InvalidInput(f"gelu_form={self.gelu_form!r}", hint=f"one of {', '.join(GELU_FORMS)}")
        object.__setattr__(self, "keep_16bit", tuple(self.keep_16bit))

    @property
    def wbits(self) -> int:
        return self.weight_bits or self.bits


@dataclass(frozen=True)
class QuantRequest:
    """What a quantizing compile asked for: "int8", "mixed" (per-layer int8 / int4 / LUT / shift-add weights
    from the HAWQV3 ILP under PassContext.budgets) or "model" (the model's own QDQ grids, passes/qdq.py; no
    calibration), and the calibration config. shiftadd: 0, or 1 / 2 power-of-two terms per weight
    (passes/shiftadd.py); shift_kernel: which kernel runs those layers, or a mixed plan's shift/add layers
    ("auto": the target's rule, "vnni", "shift")."""

    mode: str
    config: QuantConfig
    shiftadd: int = 0
    shift_kernel: str = "auto"


# -- observers (pure functions on arrays) ------------------------------------------------
@dataclass(frozen=True)
class ValueStats:
    """What calibration saw of one value: the exact min/max, the observer's clipping range
    [lo, hi] for an asymmetric grid, and its bound amax for a symmetric grid."""

    min: float
    max: float
    lo: float
    hi: float
    amax: float
    count: int = 0


def minmax_range(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x)
    return float(x.min()), float(x.max())


def percentile_range(x: np.ndarray, percentile: float = 99.99) -> tuple[float, float, float]:
    """(lo, hi, amax): the (100-p)th and pth percentiles of x and the pth percentile of |x|."""
    x = np.asarray(x, np.float64).ravel()
    lo, hi = np.percentile(x, [100 - percentile, percentile])
    return float(lo), float(hi), float(np.percentile(np.abs(x), percentile))


def mse_range(x: np.ndarray, bits: int = 8, symmetric: bool = False, bins: int = 2048,
              steps: int = 200) -> tuple[float, float]:
    """The clipping range minimizing the expected quantization MSE of x: a histogram of x, then a
    search over ranges alpha * (full range), alpha in (0, 1]. Inside the range each value costs
    step^2 / 12 (uniform rounding error), outside it costs its squared distance to the range."""
    x = np.asarray(x, np.float64).ravel()
    lo0, hi0 = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    if symmetric:
        lo0, hi0 = -max(-lo0, hi0), max(-lo0, hi0)
    if hi0 - lo0 == 0:
        return 0.0, 0.0
    counts, edges = np.histogram(x, bins=bins, range=(lo0, hi0))
    centers = (edges[:-1] + edges[1:]) / 2
    alpha = np.linspace(1.0 / steps, 1.0, steps)[:, None]
    lo, hi = alpha * lo0, alpha * hi0
    levels = 2 ** (bits - 1) - 1 if symmetric else 2 ** bits - 1
    step = (hi - lo) / (2 * levels if symmetric else levels)
    clipped = np.clip(centers[None, :], lo, hi)
    err = np.where(clipped == centers[None, :], step ** 2 / 12, (centers[None, :] - clipped) ** 2)
    best = int(np.argmin((err * counts[None, :]).sum(axis=1)))
    return float(lo[best, 0]), float(hi[best, 0])


def observe(x: np.ndarray, observer: str = "minmax", percentile: float = 99.99,
            bits: int = 8) -> ValueStats:
    """The analysis calibrate runs on the samples of one value."""
    mn, mx = minmax_range(x)
    if observer == "minmax":
        lo, hi, amax = mn, mx, max(-mn, mx)
    elif observer == "percentile":
        lo, hi, amax = percentile_range(x, percentile)
    elif observer == "mse":
        lo, hi = mse_range(x, bits, symmetric=False)
        amax = mse_range(x, bits, symmetric=True)[1]
    else:
        raise Unsupported(f"observer {observer!r}", hint=f"one of {OBSERVERS}")
    return ValueStats(mn, mx, lo, hi, amax, int(np.asarray(x).size))


# -- calibration ---------------------------------------------------------------------------
@dataclass
class Stats:
    """Calibration result: per float value name, what the observer saw."""

    observer: str
    values: dict[str, ValueStats] = field(default_factory=dict)
    num_batches: int = 0
    graph: Graph | None = None        # the float graph that was calibrated

    def __getitem__(self, name: str) -> ValueStats:
        return self.values[name]

    def __contains__(self, name: str) -> bool:
        return name in self.values


def batch_args(g: Graph, batch: Any) -> list[np.ndarray]:
    """One calibration batch (array, list/tuple of arrays, or dict by input name) -> the graph's
    positional inputs, floats cast to the input's dtype."""
    if isinstance(batch, Mapping):
        names = [v.name for v in g.inputs]
        missing = [n for n in names if n not in batch]
        if missing:
            raise InvalidInput(f"calibration batch lacks input(s) {missing}; the model takes {names}")
        arrays = [batch[n] for n in names]
    elif isinstance(batch, np.ndarray):
        arrays = [batch]
    else:
        arrays = list(batch)
    out = []
    for v, a in zip(g.inputs, arrays):
        a = np.asarray(a)
        if v.type.dtype.is_float and np.issubdtype(a.dtype, np.floating):
            a = a.astype(v.type.dtype.numpy)
        out.append(a)
    return interp.bind_inputs(g, out, {})


def calibration_batches(g: Graph, arrays: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    """Split whole calibration arrays (e.g. an .npz, N samples on axis 0) into batches of the
    graph's static batch size (axis 0 of each input); a short tail is dropped, unless it is all
    there is, in which case it is tiled up to one batch."""
    if isinstance(arrays, Mapping):
        if len(g.inputs) == 1 and g.inputs[0].name not in arrays and len(arrays) == 1:
            arrays = list(arrays.values())
        else:
            arrays = [arrays[v.name] for v in g.inputs]
    arrays = [np.asarray(a) for a in arrays]
    b = g.inputs[0].type.shape[0] if g.inputs and g.inputs[0].type.rank else 1
    n = arrays[0].shape[0]
    if n < b:
        reps = -(-b // n)
        arrays = [np.concatenate([a] * reps)[:b] for a in arrays]
        n = b
    return [[a[i:i + b] for a in arrays] for i in range(0, n - b + 1, b)]


class _Collector:
    """Exact min/max plus a bounded random sample of one value's data."""

    def __init__(self, keep_samples: bool, max_samples: int, rng: np.random.Generator):
        self.mn, self.mx, self.n = math.inf, -math.inf, 0
        self.keep, self.cap, self.rng = keep_samples, max_samples, rng
        self.chunks: list[np.ndarray] = []
        self.held = 0

    def add(self, x: np.ndarray) -> None:
        x = x.ravel()
        self.mn, self.mx, self.n = min(self.mn, float(x.min())), max(self.mx, float(x.max())), self.n + x.size
        if not self.keep:
            return
        self.chunks.append(x.astype(np.float32, copy=True))
        self.held += x.size
        if self.held > 2 * self.cap:
            allx = np.concatenate(self.chunks)
            self.chunks = [self.rng.choice(allx, self.cap, replace=False)]
            self.held = self.cap

    def stats(self, observer: str, percentile: float, bits: int) -> ValueStats:
        if not self.keep:
            return ValueStats(self.mn, self.mx, self.mn, self.mx, max(-self.mn, self.mx), self.n)
        s = observe(np.concatenate(self.chunks), observer, percentile, bits)
        return dataclasses.replace(s, min=self.mn, max=self.mx, count=self.n)


def calibrate(g: Graph, batches: Iterable[Any], observer: str = "minmax", percentile: float = 99.99,
              bits: int = 8, max_samples: int = 1 << 20) -> Stats:
    """Run `g` with compiler.interp on every batch and record, per float value, the range the
    observer gives ("minmax", "percentile" (of |x| for symmetric grids, of x for asymmetric),
    "mse"). Raises InvalidInput on an empty or ill-shaped batch list."""
    if observer not in OBSERVERS:
        raise Unsupported(f"observer {observer!r}", hint=f"one of {OBSERVERS}")
    probe = g.clone()
    values = [v for v in probe.inputs] + [v for n in probe.nodes for v in n.outputs]
    values = [v for v in values if v.type.dtype.is_float and not v.is_const]
    probe.outputs = values
    rng = np.random.default_rng(0)
    cols = {v.name: _Collector(observer != "minmax", max_samples, rng) for v in values}
    nb = 0
    batches = list(batches)
    with steps(len(batches), "calibrating") as bar:
        for batch in batches:
            outs = interp.run(probe, *batch_args(g, batch))
            for v, a in zip(values, outs):
                cols[v.name].add(a)
            nb += 1
            bar.update(nb)
    if nb == 0:
        raise InvalidInput("calibration needs at least one batch of inputs")
    return Stats(observer, {k: c.stats(observer, percentile, bits) for k, c in cols.items()}, nb, g)


# -- which nodes become integer -----------------------------------------------------------
PASSTHROUGH = (shape.reshape, shape.transpose, shape.slice_, shape.gather, shape.expand, shape.tile,
               nn.max_pool, reduce.reduce_max, reduce.reduce_min, ew.identity, shape.resize)
ACTIVATIONS = (ew.relu, ew.clip)


def _is_float(v: Value) -> bool:
    return v.type.dtype.is_float


def const_weight_matmul(n: Node) -> bool:
    """matmul(x, W) with W a constant 2-D matrix: weights quantized per output column."""
    return n.op is linalg.matmul and n.inputs[1].is_const and n.inputs[1].type.rank == 2 \
        and not n.inputs[0].is_const


INTEGER_ELEMENTWISE = (ew.relu, ew.clip, ew.add, ew.sub, ew.mul, ew.div, ew.identity)


def elementwise_roots(v: Value, limit: int = 32) -> set[int]:
    """The values (by id) v is an elementwise function of: v's producers walked up through float
    elementwise ops (constants ignored) to the first value some other op made."""
    roots: set[int] = set()
    stack, seen = [v], 0
    while stack:
        u = stack.pop()
        p = u.producer
        if p is None or p.op not in FLOAT_ELEMENTWISE or len(p.outputs) != 1 or seen > limit:
            roots.add(id(u))
            continue
        seen += 1
        stack.extend(x for x in p.inputs if not x.is_const)
    return roots


def _after_float_only_op(v: Value) -> bool:
    """v is made by a float elementwise op with no integer form (sigmoid, exp, tanh, ...): v is inside
    a float island that table_islands turns into one lookup, best left whole."""
    p = v.producer
    return p is not None and p.op in FLOAT_ELEMENTWISE and p.op not in INTEGER_ELEMENTWISE


def const_operand(n: Node) -> tuple[Value | None, Value | None]:
    """(x, c) of nn.mul(x, c), nn.mul(c, x) or nn.div(x, c) with c constant and x not; else (None, None)."""
    a, b = n.inputs[0], n.inputs[-1]
    if n.op not in (ew.mul, ew.div) or len(n.inputs) != 2 or a.is_const == b.is_const:
        return None, None
    if b.is_const:
        return a, b
    return (b, a) if n.op is ew.mul else (None, None)


def scaled_by_const(n: Node, uses: Mapping | None = None) -> bool:
    """nn.mul(x, c) / nn.div(x, c) with a constant c and an activation x of the result's shape, not a
    scale ivit folds into the softmax it feeds."""
    x, c = const_operand(n)
    if c is None or x is None:
        return False
    if x.type.shape != n.outputs[0].type.shape or not c.const.size or not np.all(np.isfinite(c.const)):
        return False
    if (n.op is ew.div and np.any(c.const == 0)) or _after_float_only_op(x):
        return False
    readers = [u for u, _ in (uses or {}).get(n.outputs[0], [])]
    return not (c.const.size == 1 and any(u.op is nn.softmax for u in readers))


def gating_product(n: Node) -> bool:
    """nn.mul(a, b) of two activations that are not elementwise functions of one value: a channel
    gate (squeeze-excite) or two branches, not SiLU's x * sigmoid(x) (an island for table_islands)."""
    if n.op is not ew.mul or any(v.is_const for v in n.inputs):
        return False
    roots = elementwise_roots(n.inputs[0]) | elementwise_roots(n.inputs[1])
    return len(roots) > 1


def resize_refusal(n: Node) -> str | None:
    """Why the nn.resize n has no integer form, or None when it has one: a nearest resize (no roi) runs on
    the integers as it is; a linear one of H and W of an NCHW tensor (no roi, no antialias, a coordinate
    mode of quant.RESIZE_COORD_MODES) becomes q.resize_linear (passes/dyadic.py)."""
    a, x = n.attrs, n.inputs[0]
    if a["roi"]:
        return "a resize with a roi (tf_crop_and_resize) has no integer form: its extrapolation value would " \
               "need its own rounding"
    if a["mode"] == "nearest":
        return None
    if a["mode"] != "linear":
        return f"{a['mode']} resize has no integer form (nearest and 2-D bilinear have)"
    if a["antialias"]:
        return "an antialiased linear resize has no integer form (its filter is wider than 2 taps)"
    if a["coordinate_transformation_mode"] not in RESIZE_COORD_MODES:
        return f"linear resize with coordinate_transformation_mode {a['coordinate_transformation_mode']!r} " \
               f"has no integer form (one of {', '.join(RESIZE_COORD_MODES)})"
    if x.type.rank != 4 or tuple(a["sizes"][:2]) != x.type.shape[:2] or tuple(a["scales"][:2]) != (1.0, 1.0):
        return "integer linear resize scales H and W of an NCHW tensor only"
    return None


def integer_capable(n: Node, uses: Mapping | None = None) -> bool:
    """Whether dyadic rewrites node n into integer ops (else it stays float between a
    dequantize and a quantize). `uses` (Graph.uses()) lets a scale that feeds a softmax stay float."""
    if not n.outputs or not _is_float(n.outputs[0]) or len(n.outputs) != 1:
        return False
    ins = n.inputs
    if n.op is linalg.conv:
        return ins[1].is_const and (len(ins) < 3 or ins[2].is_const) and not ins[0].is_const
    if n.op is linalg.matmul:
        return not (ins[0].is_const and ins[1].is_const)
    if n.op in (ew.add, ew.sub):
        if any(v.is_const for v in ins) and any(_after_float_only_op(v) for v in ins if not v.is_const):
            return False              # exp(x) + 1 inside an island: table_islands takes it whole
        return not (ins[0].is_const and ins[1].is_const) and all(_is_float(v) for v in ins)
    if n.op is shape.concat:
        return any(not v.is_const for v in ins)
    if n.op is shape.resize and resize_refusal(n) is not None:
        return False
    if n.op in PASSTHROUGH:
        return not ins[0].is_const and all(_is_float(v) == (i == 0) for i, v in enumerate(ins))
    if n.op in ACTIVATIONS:
        return not ins[0].is_const
    if n.op is nn.avg_pool:
        return not ins[0].is_const and not n.attrs["ceil_mode"]
    if n.op in (reduce.reduce_mean, reduce.reduce_sum):
        return not ins[0].is_const
    if n.op in (ew.mul, ew.div):
        return all(_is_float(v) for v in ins) and (scaled_by_const(n, uses) or gating_product(n))
    return False


# -- annotation -----------------------------------------------------------------------------
def _f32(x: float) -> float:
    return float(np.float32(x))


def activation_spec(vs: ValueStats, config: QuantConfig, source: str | None = None) -> QuantSpec:
    """The per-tensor grid of one activation under the config's dtype policy."""
    nonneg = vs.min >= 0
    amax = max(vs.amax, 0.0)
    lo, hi = min(vs.lo, 0.0), max(vs.hi, 0.0)
    s_sym = amax / 127
    s_asym = (hi - lo) / 255
    unsigned = config.activation in ("uint8", "auto") and nonneg
    if config.activation == "auto" and not nonneg and s_asym > 0 and s_asym * 4 / 3 <= s_sym:
        unsigned = True
    if unsigned:
        s = _f32(s_asym) if s_asym > 0 else 1.0
        z = int(np.clip(np.rint(-lo / s), 0, 255))
        return QuantSpec((s,), (z,), None, DType.U8, 0, 255, False, source)
    s = _f32(s_sym) if s_sym > 0 else 1.0
    return QuantSpec((s,), (0,), None, DType.I8, -128, 127, True, source)


I16_LEVELS = 2 ** 15 - 1
I16_HEADROOM = 4.0      # an int16 grid spans this times the calibrated range (see activation_spec16)
KEEP_16BIT_KEYWORDS = ("first", "last", "all")


def activation_spec16(vs: ValueStats, source: str | None = None, levels: int = I16_LEVELS) -> QuantSpec:
    """The int16 symmetric per-tensor grid of a kept layer's activation: scale I16_HEADROOM x amax / levels,
    zero point 0, clamp [-levels, levels] (symmetric, so (q - z) never needs 17 bits; `levels` <= 32767, fewer where
    a contraction reading the value needs them: `accumulator_levels`). The headroom costs 2 of the 16 bits and
    keeps inputs beyond the calibration's range off the clamp (EfficientNet-B0 on a photograph the 8 calibration
    crops do not cover: cosine 0.974 without it, 0.997 with it); the int32 accumulators' bounds
    (passes/range_analysis.py) read the integer range, which it does not change."""
    amax = max(vs.amax, 0.0) * I16_HEADROOM
    s = _f32(amax / levels) if amax > 0 else 1.0
    return QuantSpec((s,), (0,), None, DType.I16, -levels, levels, True, source)


def accumulator_levels(n: Node, config: QuantConfig) -> int:
    """The most int16 levels L (<= 32767) an activation read by conv / matmul `n` may take so that its int32
    accumulator stays within half of int32: L x max over output channels of sum |w_q| <= 2^30 (the other half is
    the bias's). w_q is the weight on its grid (weight_spec, as annotate makes it). A computed weight: 32767."""
    w = n.inputs[1] if len(n.inputs) > 1 else None
    axis = _weight_axis(n)
    if w is None or not w.is_const or axis is None:
        return I16_LEVELS
    spec = w.type.quant or weight_spec(w.const, axis if config.per_channel else None, config.wbits)
    wq = np.abs(quantize_array(w.const, spec).astype(np.int64))
    worst = int(wq.sum(axis=tuple(i for i in range(wq.ndim) if i != axis % wq.ndim)).max()) if wq.size else 0
    return int(min(I16_LEVELS, max(1, 2**30 // max(worst, 1))))


def integer_layers(g: Graph, uses: Mapping | None = None) -> list[Node]:
    """The conv / matmul nodes of float graph `g` that quantization makes integer, in graph order."""
    uses = g.uses() if uses is None else uses
    return [n for n in g.nodes if n.op in (linalg.conv, linalg.matmul) and integer_capable(n, uses)]


def _keyword_count(x: str) -> int | None:
    """N of a keyword "first", "last" (1), "first:N" or "last:N" (N >= 1), "all" (every layer); None for
    anything else."""
    word, colon, n = x.partition(":")
    if word == "all":
        return None if colon else 1 << 62
    if word not in KEEP_16BIT_KEYWORDS:
        return None
    if not colon:
        return 1
    return int(n) if n.isdigit() and int(n) >= 1 else None


def keep_16bit_layers(g: Graph, names: Sequence[str], uses: Mapping | None = None) -> list[Node]:
    """The conv / matmul nodes of `g` that `names` (QuantConfig.keep_16bit) picks: ONNX node names, "first",
    "last" (the first / last integer conv or matmul in graph order), "first:N" / "last:N" (the first / last N of
    them), "all". InvalidInput names the option and a few valid names when one matches nothing."""
    layers = integer_layers(g, uses)
    by_name = {n.name: n for n in layers}
    bad = [x for x in names if x not in by_name and _keyword_count(x) is None]
    if bad or (names and not layers):
        shown = [*KEEP_16BIT_KEYWORDS, "first:N", "last:N", *list(by_name)[:6]] if layers else []
        more = ", ..." if len(by_name) > 6 else ""
        raise InvalidInput(f"--keep-16bit / keep_16bit: no conv or matmul layer named {', '.join(map(repr, bad))}"
                           if bad else "--keep-16bit / keep_16bit: the model has no integer conv or matmul layer",
                           hint=f"valid names: {', '.join(shown)}{more}" if shown else None)
    out: dict[int, Node] = {}
    for x in names:
        k = _keyword_count(x) if x not in by_name else None
        picked = [by_name[x]] if k is None else layers[-k:] if x.startswith("last") else layers[:k]
        for n in picked:
            out[id(n)] = n
    return list(out.values())


def _reads(v: Value, uses: Mapping | None) -> list[Value]:
    """The values a contraction reading `v` reads: v, and up through single-reader pass-through ops such as a
    flatten the values it copies (they share one grid). With `uses` None, up through every pass-through op, the
    reader count aside: the values whose grid `v` takes (a slice of a value that others read too)."""
    out = []
    while not v.is_const:
        out.append(v)
        p = v.producer
        if p is None or p.op not in PASSTHROUGH or (uses is not None and len(uses.get(v, [])) != 1) \
                or not p.inputs:
            break
        v = p.inputs[0]
    return out


def _wide_levels(g: Graph, wide: set[int], cap: Mapping, uses: Mapping, config: QuantConfig) -> dict[int, int]:
    """Per wide value that integer contractions read, directly or through pass-through ops whatever else reads
    them (a C2f block's conv reading one half of a kept layer's split output), the fewest `accumulator_levels`
    among them."""
    levels: dict[int, int] = {}
    for n in g.nodes:
        if n.op in (linalg.conv, linalg.matmul) and cap[id(n)]:
            chain = [v for v in _reads(n.inputs[0], None) if id(v) in wide]
            if chain:
                lv = accumulator_levels(n, config)
                for v in chain:
                    levels[id(v)] = min(levels.get(id(v), I16_LEVELS), lv)
    return levels


def _wide_values(nodes: list[Node], uses: Mapping) -> set[int]:
    """Ids of the float values a kept layer reads (its activations, and up through single-reader pass-through
    ops such as a flatten the value they copy, so the producer's requant writes int16 itself) and writes: its
    output, and through a single-reader bias add (matmul) and relu / clip the value its requant lands on, and the
    values an elementwise activation computes from that one alone (`_functions_of`)."""
    ids: set[int] = set()
    for n in nodes:
        ids |= {id(v) for x in n.inputs for v in _reads(x, uses)}
        v = n.outputs[0]
        ids.add(id(v))
        for ops in ((ew.add,) if n.op is linalg.matmul else (), ACTIVATIONS):
            readers = uses.get(v, [])
            if len(readers) == 1 and readers[0][0].op in ops and len(readers[0][0].outputs) == 1 and \
                    (ops is ACTIVATIONS or any(x.is_const for x in readers[0][0].inputs)):
                v = readers[0][0].outputs[0]
                ids.add(id(v))
        ids |= _functions_of(v, uses)
    return ids


def _functions_of(v: Value, uses: Mapping) -> set[int]:
    """Ids of the values computed from `v` alone (and constants) by elementwise float ops: an activation such
    as SiLU (v * sigmoid(v)) or hardswish, whose result is then on the wide grid too (passes/table_islands.py
    makes it one lookup from v's int16)."""
    from passes.table_islands import FLOAT_ELEMENTWISE, MAX_NODES
    closure, todo = {id(v)}, [v]
    while todo and len(closure) <= MAX_NODES:
        for n, _ in uses.get(todo.pop(), []):
            if n.op in FLOAT_ELEMENTWISE and len(n.outputs) == 1 and id(n.outputs[0]) not in closure \
                    and all(x.is_const or id(x) in closure for x in n.inputs):
                closure.add(id(n.outputs[0]))
                todo.append(n.outputs[0])
    return closure - {id(v)}


def weight_spec(w: np.ndarray, axis: int | None, bits: int = 8, source: str | None = None) -> QuantSpec:
    """Symmetric weight grid, zero point 0, range [-(2^(b-1)-1), 2^(b-1)-1]; per channel along
    `axis`, or per tensor when axis is None. An all-zero channel gets scale 1."""
    n = 2 ** (bits - 1) - 1
    w = np.abs(np.asarray(w, np.float64))
    amax = np.atleast_1d(w.max()) if axis is None else \
        w.max(axis=tuple(i for i in range(w.ndim) if i != axis % w.ndim))
    scale = tuple(_f32(a / n) if a > 0 else 1.0 for a in amax)
    dt = DType.I4 if bits == 4 else DType.I8
    return QuantSpec(scale, (0,) * len(scale), axis, dt, -n, n, True, source)


def quantize_array(x: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Compile-time quantization of a constant: clamp(rint(x / s) + z) on spec's grid."""
    x = np.asarray(x, np.float64)
    s = np.asarray(spec.scale, np.float64)
    z = np.asarray(spec.zero_point, np.float64)
    if spec.axis is not None and len(spec.scale) > 1:
        shp = [1] * x.ndim
        shp[spec.axis % x.ndim] = -1
        s, z = s.reshape(shp), z.reshape(shp)
    q = np.rint(x / s) + z
    return np.clip(q, spec.qmin, spec.qmax).astype(spec.dtype.numpy)


def _weight_axis(n: Node) -> int | None:
    if n.op is linalg.conv:
        return 0
    if const_weight_matmul(n):
        return 1
    return None


def annotate(g: Graph, stats: Stats, config: QuantConfig | None = None) -> Graph:
    """A new graph whose values that will become integer carry TensorType.quant = QuantSpec:
    activations per tensor (uint8 where calibration saw no negative value and the policy allows,
    else int8 symmetric), weights of conv / matmul-by-constant symmetric per output channel.
    Pass-through ops (reshape, transpose, slice, max_pool, ...) keep their input's grid. The activations of
    config.keep_16bit's layers get int16 grids (activation_spec16). A value that only an activation reads spans
    only where that activation changes (config.active_range; passes/active_range.py)."""
    config = config or QuantConfig()
    g = g.clone()
    uses = g.uses()
    cap = {id(n): integer_capable(n, uses) for n in g.nodes}
    wide = _wide_values(keep_16bit_layers(g, config.keep_16bit, uses), uses) if config.keep_16bit else set()
    levels = _wide_levels(g, wide, cap, uses, config) if wide else {}

    def wanted(v: Value) -> bool:
        if v.is_const or not _is_float(v):
            return False
        if v.producer is not None and cap[id(v.producer)]:
            return True
        return any(cap[id(u)] for u, _ in uses.get(v, []))

    def grid(v: Value):
        if not wanted(v) or id(v) in wide:
            return None
        spec = activation_spec(stats[v.name], config, v.name)
        return spec.scale[0], spec.zero_point[0], spec.qmin, spec.qmax

    narrowed = active_ranges(g, stats, wanted, grid, uses) if config.active_range else {}

    def act(v: Value) -> None:
        if v.name not in stats:
            raise Unsupported(f"value '{v.name}' was not calibrated",
                              hint="calibrate the same graph that is annotated")
        if id(v) in wide:
            v.type = with_quant(v.type, activation_spec16(stats[v.name], v.name, levels.get(id(v), I16_LEVELS)))
            return
        vs = stats[v.name]
        if v.name not in narrowed:
            v.type = with_quant(v.type, activation_spec(vs, config, v.name))
            return
        lo, hi = narrowed[v.name]
        trimmed = (lo if lo > vs.lo else -math.inf, hi if hi < vs.hi else math.inf)
        vs = dataclasses.replace(vs, min=max(vs.min, lo), max=min(vs.max, hi), lo=lo, hi=hi, amax=max(-lo, hi, 0.0))
        v.type = with_quant(v.type, dataclasses.replace(activation_spec(vs, config, v.name), active_range=trimmed))

    for v in g.inputs:
        if wanted(v):
            act(v)
    for n in g.nodes:
        if cap[id(n)]:
            axis = _weight_axis(n)
            if axis is not None and n.inputs[1].is_const:
                w = n.inputs[1]
                if w.type.quant is None:
                    w.type = with_quant(w.type, weight_spec(w.const, axis if config.per_channel else None,
                                                            config.wbits, w.name))
        for v in n.outputs:
            if not wanted(v):
                continue
            src = spec_of(n.inputs[0]) if n.op in PASSTHROUGH and n.inputs else None
            if src is not None and cap[id(n)] and id(v) not in wide:
                v.type = with_quant(v.type, dataclasses.replace(src, source=v.name))
            else:
                act(v)
    return g


def annotation_table(g: Graph) -> list[tuple[str, str, tuple[float, ...], tuple[int, ...]]]:
    """(value, dtype, scales, zero points) of every annotated value: the recorded choices."""
    vals = list(g.inputs) + [v for n in g.nodes for v in list(n.inputs) + list(n.outputs)]
    seen, rows = set(), []
    for v in vals:
        s = spec_of(v)
        if s is not None and id(v) not in seen:
            seen.add(id(v))
            rows.append((v.name, s.dtype.value, s.scale, s.zero_point))
    return rows
