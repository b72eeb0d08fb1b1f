"""activation_forms: which integer form an activation island takes, from each form's stated accuracy and cost.

    q.dequantize(x int8) -> nn.gelu -> q.quantize(y)

has two integer forms:

    table8    the exact function on x's own 8-bit grid: one 256-entry lookup (passes/table_islands.py), fused into
              the producing kernel's write-back;
    shift16   I-ViT's ShiftGELU (x sigmoid(1.702 x) in shifts) on a finer int16 grid re-rounded from the int32
              accumulator (passes/ivit.py), then a 65536-entry lookup or the shift arithmetic (passes/tabulate.py).

Each form's error is measured, not assumed: the RMS difference between the form's output integers on y's grid and
the float function, over 4097 points spread evenly over x's calibrated range (the references of the ops the form
is made of). The form taken is the cheapest per element (costmodel/elementwise.py's measurements) among those whose
error is within TOLERANCE of the most accurate form's; without measurements, the most accurate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.ops import elementwise as ew
from compiler.ops import ivit

TOLERANCE = 1.1        # a form may be this much less accurate (RMS) than the best and still be taken
POINTS = 4097


@dataclass(frozen=True)
class Form:
    name: str               # "table8" | "shift16"
    rms: float              # RMS error of the output, in real units, over the calibrated input range
    ns: float | None        # measured cost per element (None: not measured)


@dataclass(frozen=True)
class Grid:
    scale: float
    zero_point: int
    qmin: int
    qmax: int

    def round(self, real: np.ndarray) -> np.ndarray:
        q = np.clip(np.round(real / self.scale) + self.zero_point, self.qmin, self.qmax)
        return (q - self.zero_point) * self.scale

    def span(self) -> np.ndarray:
        return np.linspace((self.qmin - self.zero_point) * self.scale, (self.qmax - self.zero_point) * self.scale,
                           POINTS)


def gelu_forms(x: Grid, y: Grid, shift16: tuple[float, int, int, int] | None,
               costs: dict[str, float] | None) -> list[Form]:
    """The forms of gelu from x's grid to y's. shift16 = (the int16 input's scale, n, sigma_bits, dividend_bits)
    of the ShiftGELU passes/ivit.py would emit, or None where it cannot."""
    from costmodel.elementwise import chain_cost
    real = x.span()
    exact = ew.gelu.reference([real], {"approximate": "none"})[0]
    on_x = x.round(real)
    forms = [Form("table8", _rms(y.round(ew.gelu.reference([on_x], {"approximate": "none"})[0]) - exact),
                  None if costs is None else costs.get("q.table[256]"))]
    if shift16 is not None:
        s16, n, sigma_bits, dividend_bits = shift16
        v16 = np.clip(np.round(real / s16), -32768, 32767).astype(np.int16)
        out = ivit.shiftgelu_values(v16, s16, n, sigma_bits, dividend_bits, False)
        approx = out.astype(np.float64) * float(np.float32(s16)) * 2.0 ** -sigma_bits
        ns = None
        if costs is not None:
            options = [c for c in (costs.get("q.table[65536]"), chain_cost(["q.shiftgelu"], costs)) if c is not None]
            ns = min(options) if options else None
        forms.append(Form("shift16", _rms(y.round(approx) - exact), ns))
    return forms


def measured_costs() -> dict[str, float] | None:
    """The measured ns per element of costmodel/elementwise.py, None where none is shipped."""
    from costmodel.elementwise import measured_costs as costs
    return costs()


def choose(forms: list[Form]) -> Form:
    """The cheapest form within TOLERANCE of the most accurate; the most accurate where a cost is unknown."""
    best = min(forms, key=lambda f: f.rms)
    ok = [f for f in forms if f.rms <= TOLERANCE * best.rms + 1e-12]
    if any(f.ns is None for f in ok):
        return best
    return min(ok, key=lambda f: (f.ns, f.rms))


def _rms(d: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(d, dtype=np.float64))))
