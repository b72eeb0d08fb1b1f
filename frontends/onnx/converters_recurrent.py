"""Converters for ONNX RNN, GRU and LSTM: every optional input is filled in (zero bias and
states, full sequence lengths) and layout 1 (batch-major) is transposed to the IR's time-major
form and back."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from compiler.ops import elementwise as ew
from compiler.ops import recurrent
from compiler.ops import shape as shape_ops
from compiler.types import DType
from frontends.onnx.context import ConvertContext, Operand

_ONNX_ACTIVATIONS = {name.lower(): name for name in recurrent.ACTIVATIONS}


def _transpose(ctx: ConvertContext, x: Operand, perm: tuple[int, ...]) -> Operand:
    return ctx.emit(shape_ops.transpose, [x], perm=perm)


def _activations(ctx: ConvertContext) -> str:
    names = [str(a).lower() for a in (ctx.attr("activations") or [])]
    unknown = [n for n in names if n not in _ONNX_ACTIVATIONS]
    if unknown:
        raise ctx.unsupported(f"activation(s) {unknown} (supported: "
                              f"{', '.join(sorted(recurrent.ACTIVATIONS))})")
    return ",".join(names)


def _recurrent(kind: str) -> Callable:
    op = {"rnn": recurrent.rnn, "gru": recurrent.gru, "lstm": recurrent.lstm}[kind]

    def convert(ctx: ConvertContext, node: onnx.NodeProto) -> list[Operand]:
        x, w, r = ctx.input(0), ctx.input(1), ctx.input(2)
        batch_major = bool(ctx.attr("layout", 0))
        if batch_major:
            x = _transpose(ctx, x, (1, 0, 2))
        steps, n, _ = ctx.shape(x)
        d, gh, hs = ctx.shape(r)
        if ctx.has_attr("hidden_size") and int(ctx.attr("hidden_size")) != hs:
            raise ctx.invalid(f"hidden_size {ctx.attr('hidden_size')} but R has shape {list(ctx.shape(r))}")
        dt = ctx.np_dtype(x)
        b = ctx.optional_input(3)
        b = np.zeros((d, 2 * gh), dt) if b is None else b
        lens = ctx.optional_input(4)
        if lens is None:
            lens = np.full((n,), steps, np.int32)
        elif ctx.np_dtype(lens) != np.int32:
            lens = ctx.emit(ew.cast, [lens], to=DType.I32)
        states = []
        for i in ((5, 6) if kind == "lstm" else (5,)):
            s = ctx.optional_input(i)
            if s is None:
                s = np.zeros((d, n, hs), dt)
            elif batch_major:
                s = _transpose(ctx, s, (1, 0, 2))
            states.append(s)
        inputs = [x, w, r, b, lens, *states]
        if kind == "lstm" and ctx.has_input(7):
            inputs.append(ctx.input(7))
        attrs = {"hidden_size": hs, "direction": ctx.attr("direction", "forward"),
                     "activations": _activations(ctx),
                     "activation_alpha": tuple(ctx.attr("activation_alpha") or ()),
                     "activation_beta": tuple(ctx.attr("activation_beta") or ()),
                     "clip": float(ctx.attr("clip", 0.0))}
        if kind == "gru":
            attrs["linear_before_reset"] = bool(ctx.attr("linear_before_reset", 0))
        if kind == "lstm":
            attrs["input_forget"] = bool(ctx.attr("input_forget", 0))
        outs = ctx.emit_multi(op, inputs, **attrs)
        if batch_major:     # Y (T, D, N, H) -> (N, T, D, H); states (D, N, H) -> (N, D, H)
            outs = [_transpose(ctx, outs[0], (2, 0, 1, 3))] + \
                [_transpose(ctx, s, (1, 0, 2)) for s in outs[1:]]
        return outs
    return convert


CONVERTERS: dict[str, Callable] = {
    "RNN": _recurrent("rnn"), "GRU": _recurrent("gru"), "LSTM": _recurrent("lstm"),
}
