"""ATen lstm / gru / rnn_tanh / rnn_relu (kept whole by the importer) -> one IR recurrent op per
layer: torch's gate order (LSTM i f g o, GRU r z n) is reordered to ONNX's (i o f c, z r h),
weights are stacked per direction, and torch's GRU is linear_before_reset."""
from __future__ import annotations

import numpy as np

from compiler.ops import recurrent, shape
from frontends.common import Operand
from frontends.torch.importer import TorchContext, converts

# rows of torch's stacked gate blocks, in ONNX's gate order
_GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn": (0,)}


def _reorder(ctx: TorchContext, p: Operand, kind: str) -> np.ndarray:
    if not isinstance(p, np.ndarray):
        raise ctx.unsupported("recurrent weights must be parameters (constants)")
    blocks = np.split(p, len(_GATE_ORDER[kind]), axis=0)
    return np.concatenate([blocks[i] for i in _GATE_ORDER[kind]], axis=0)


def _layer_slice(ctx: TorchContext, x: Operand, lo: int, hi: int) -> Operand:
    return ctx.emit(shape.slice_, [x], starts=(lo,), ends=(hi,), axes=(0,), steps=(1,))


def _convert(kind: str, activation: str = ""):
    op = {"lstm": recurrent.lstm, "gru": recurrent.gru, "rnn": recurrent.rnn}[kind]

    def convert(ctx: TorchContext, node, args, kwargs):
        x, hx, params, has_biases, layers, _dropout, train, bidirectional, batch_first = args[:9]
        if train:
            raise ctx.unsupported("training mode")
        hx = list(hx) if kind == "lstm" else [hx]
        d = 2 if bidirectional else 1
        per = 4 if has_biases else 2
        if len(params) != layers * d * per:
            raise ctx.unsupported("projections (proj_size) are not supported")
        if batch_first:
            x = ctx.emit(shape.transpose, [x], perm=(1, 0, 2))
        steps, n, _ = ctx.shape(x)
        hs = ctx.shape(hx[0])[-1]
        finals: list[list[Operand]] = [[] for _ in hx]
        for layer in range(layers):
            w, r, b = [], [], []
            for k in range(d):
                ps = params[(layer * d + k) * per:(layer * d + k + 1) * per]
                w.append(_reorder(ctx, ps[0], kind))
                r.append(_reorder(ctx, ps[1], kind))
                gh = w[-1].shape[0]
                b.append(np.concatenate([_reorder(ctx, ps[2], kind), _reorder(ctx, ps[3], kind)])
                         if has_biases else np.zeros(2 * gh, w[-1].dtype))
            states = [_layer_slice(ctx, h, layer * d, (layer + 1) * d) for h in hx]
            lens = np.full((n,), steps, np.int32)
            outs = ctx.emit_multi(op, [x, np.stack(w), np.stack(r), np.stack(b), lens, *states],
                                  hidden_size=hs, direction="bidirectional" if d == 2 else "forward",
                                  activations=",".join([activation] * d) if activation else "",
                                  **({"linear_before_reset": True} if kind == "gru" else {}))
            y = ctx.emit(shape.transpose, [outs[0]], perm=(0, 2, 1, 3))      # (T, N, D, H)
            x = ctx.emit(shape.reshape, [y], shape=(steps, n, d * hs))
            for f, s in zip(finals, outs[1:]):
                f.append(s)
        if batch_first:
            x = ctx.emit(shape.transpose, [x], perm=(1, 0, 2))
        states = [f[0] if len(f) == 1 else ctx.emit(shape.concat, f, axis=0) for f in finals]
        return (x, *states)
    return convert


converts("aten.lstm.input")(_convert("lstm"))
converts("aten.gru.input")(_convert("gru"))
converts("aten.rnn_tanh.input")(_convert("rnn", "tanh"))
converts("aten.rnn_relu.input")(_convert("rnn", "relu"))
