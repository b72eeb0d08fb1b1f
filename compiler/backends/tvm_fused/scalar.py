"""Each float elementwise op as a scalar TE expression: what a fused kernel composes into its write-back.

`SCALAR[op](attrs, args, dtype)` returns the op's value at one element from its operands' values at that
element. Sigmoid, tanh and GELU use the vectorizable rational forms of `tvm_kernels.common` (no libm call).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tvm import te, tirx

from compiler.backends.tvm_kernels.common import fast_erf, fast_tanh
from compiler.ops import elementwise as ew
from compiler.ops.registry import OpDef

ScalarFn = Callable[[dict[str, Any], list, str], Any]
SCALAR: dict[OpDef, ScalarFn] = {}


def scalar(*ops: OpDef) -> Callable[[ScalarFn], ScalarFn]:
    def deco(fn: ScalarFn) -> ScalarFn:
        for op in ops:
            SCALAR[op] = fn
        return fn
    return deco


def _c(v: float, dt: str):
    return tirx.const(v, dt)


def sigmoid_te(x, dt: str):
    return _c(0.5, dt) + _c(0.5, dt) * fast_tanh(x * _c(0.5, dt), dt)


def _gelu(a, x, dt):
    if a["approximate"] == "tanh":
        inner = _c(math.sqrt(2.0 / math.pi), dt) * (x + _c(0.044715, dt) * x * x * x)
        return _c(0.5, dt) * x * (_c(1.0, dt) + fast_tanh(inner, dt))
    return _c(0.5, dt) * x * (_c(1.0, dt) + fast_erf(x * _c(1.0 / math.sqrt(2.0), dt), dt))


_UNARY = {
    ew.relu: lambda a, x, dt: te.max(x, _c(0.0, dt)),
    ew.sigmoid: lambda a, x, dt: sigmoid_te(x, dt),
    ew.tanh: lambda a, x, dt: fast_tanh(x, dt),
    ew.exp: lambda a, x, dt: tirx.exp(x),
    ew.log: lambda a, x, dt: tirx.log(x),
    ew.sqrt: lambda a, x, dt: tirx.sqrt(x),
    ew.reciprocal: lambda a, x, dt: _c(1.0, dt) / x,
    ew.erf: lambda a, x, dt: fast_erf(x, dt),
    ew.neg: lambda a, x, dt: -x,
    ew.abs_: lambda a, x, dt: tirx.abs(x),
    ew.floor: lambda a, x, dt: tirx.floor(x),
    ew.ceil: lambda a, x, dt: tirx.ceil(x),
    ew.softplus: lambda a, x, dt: tirx.log(_c(1.0, dt) + tirx.exp(x)),
    ew.hard_swish: lambda a, x, dt: x * te.min(te.max(x * _c(1 / 6, dt) + _c(0.5, dt), _c(0.0, dt)), _c(1.0, dt)),
    ew.hard_sigmoid: lambda a, x, dt: te.min(te.max(x * _c(a["alpha"], dt) + _c(a["beta"], dt), _c(0.0, dt)),
                                             _c(1.0, dt)),
    ew.leaky_relu: lambda a, x, dt: tirx.Select(x >= _c(0.0, dt), x, x * _c(a["alpha"], dt)),
    ew.elu: lambda a, x, dt: tirx.Select(x > _c(0.0, dt), x, _c(a["alpha"], dt) * (tirx.exp(x) - _c(1.0, dt))),
    ew.gelu: _gelu,
    ew.clip: lambda a, x, dt: te.min(te.max(x, _c(a["min"], dt)), _c(a["max"], dt))
    if math.isfinite(a["min"]) and math.isfinite(a["max"]) else
    (te.max(x, _c(a["min"], dt)) if math.isfinite(a["min"]) else
     te.min(x, _c(a["max"], dt)) if math.isfinite(a["max"]) else x),
}

_BINARY = {
    ew.add: lambda x, y: x + y,
    ew.sub: lambda x, y: x - y,
    ew.mul: lambda x, y: x * y,
    ew.div: lambda x, y: x / y,
    ew.minimum: lambda x, y: te.min(x, y),
    ew.maximum: lambda x, y: te.max(x, y),
}

for _op, _fn in _UNARY.items():
    SCALAR[_op] = (lambda f: lambda a, args, dt: f(a, args[0], dt))(_fn)
for _op, _fn in _BINARY.items():
    SCALAR[_op] = (lambda f: lambda a, args, dt: f(args[0], args[1]))(_fn)


@scalar(ew.prelu)
def _prelu(a, args, dt):
    x, slope = args
    return tirx.Select(x >= _c(0.0, dt), x, x * slope)
