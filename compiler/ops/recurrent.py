"""Recurrent layers with ONNX semantics: rnn, gru, lstm (time-major, layout 0).

Inputs, after the frontend has filled in every optional one (zeros, full lengths):

    rnn   X (T,N,I), W (D,G*H,I), R (D,G*H,H), B (D,2*G*H), seq_lens (N,) int32, H0 (D,N,H)
    gru   the same, G = 3, gate order z r h
    lstm  the same, G = 4, gate order i o f c, then C0 (D,N,H) and optionally P (D,3H), peepholes i o f

D is 2 for direction 'bidirectional', else 1. Outputs: Y (T,D,N,H), Y_h (D,N,H), and for lstm
Y_c (D,N,H). Batch entry n runs seq_lens[n] steps (reverse: from step seq_lens[n]-1 down to 0);
Y is 0 past its length and Y_h / Y_c hold the state after its last step.

`activations` names the gate functions, comma-separated, per direction (rnn: f; gru: f,g;
lstm: f,g,h), with `activation_alpha` / `activation_beta` for those that take them, in order.
`clip` (> 0) clips the gate pre-activations to [-clip, clip]; 0 means no clipping.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

from compiler.ops.registry import Attr, TypeRuleError, define
from compiler.types import DType, TensorType

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
DEFAULT_ACTIVATIONS = {"rnn": ("tanh",), "gru": ("sigmoid", "tanh"), "lstm": ("sigmoid", "tanh", "tanh")}
# name -> (number of parameters, default alpha, default beta)
ACTIVATIONS: dict[str, tuple[int, float, float]] = {
    "sigmoid": (0, 0.0, 0.0), "tanh": (0, 0.0, 0.0), "relu": (0, 0.0, 0.0),
    "softsign": (0, 0.0, 0.0), "softplus": (0, 0.0, 0.0), "affine": (2, 1.0, 0.0),
    "leakyrelu": (1, 0.01, 0.0), "thresholdedrelu": (1, 1.0, 0.0), "scaledtanh": (2, 1.0, 1.0),
    "hardsigmoid": (2, 0.2, 0.5), "elu": (1, 1.0, 0.0),
}


def activation_list(kind: str, attrs: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(name, alpha, beta) for each gate function of each direction, in order."""
    d = 2 if attrs["direction"] == "bidirectional" else 1
    names = [s for s in attrs["activations"].split(",") if s]
    names = names or list(DEFAULT_ACTIVATIONS[kind]) * d
    per_dir = len(DEFAULT_ACTIVATIONS[kind])
    if len(names) != per_dir * d:
        raise TypeRuleError(f"{kind} needs {per_dir * d} activations, got {len(names)}")
    alphas, betas = list(attrs["activation_alpha"]), list(attrs["activation_beta"])
    out = []
    for name in names:
        if name not in ACTIVATIONS:
            raise TypeRuleError(f"{kind} activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
        n, da, db = ACTIVATIONS[name]
        a = alphas.pop(0) if n >= 1 and alphas else da
        b = betas.pop(0) if n >= 2 and betas else db
        out.append((name, a, b))
    return out


def apply_activation(name: str, alpha: float, beta: float, x: np.ndarray) -> np.ndarray:
    if name == "sigmoid":
        return special.expit(x)
    if name == "tanh":
        return np.tanh(x)
    if name == "relu":
        return np.maximum(x, 0)
    if name == "softsign":
        return x / (1 + np.abs(x))
    if name == "softplus":
        return np.logaddexp(0, x)
    if name == "affine":
        return alpha * x + beta
    if name == "leakyrelu":
        return np.where(x >= 0, x, alpha * x)
    if name == "thresholdedrelu":
        return np.where(x > alpha, x, 0)
    if name == "scaledtanh":
        return alpha * np.tanh(beta * x)
    if name == "hardsigmoid":
        return np.clip(alpha * x + beta, 0, 1)
    return np.where(x > 0, x, alpha * np.expm1(x))      # elu


def _infer(kind: str):
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        x, w, r, b, lens, h0 = ins[:6]
        g, hs = GATES[kind], attrs["hidden_size"]
        d = 2 if attrs["direction"] == "bidirectional" else 1
        if attrs["direction"] not in ("forward", "reverse", "bidirectional"):
            raise TypeRuleError(f"{kind} direction {attrs['direction']!r}")
        if not x.dtype.is_float or len({t.dtype for t in (x, w, r, b, h0)}) != 1:
            raise TypeRuleError(f"{kind} needs float X, W, R, B, H0 of one dtype")
        if x.rank != 3:
            raise TypeRuleError(f"{kind} X must be (T, N, I), got {x.shape}")
        t, n, i = x.shape
        want = {"W": (w.shape, (d, g * hs, i)), "R": (r.shape, (d, g * hs, hs)),
                "B": (b.shape, (d, 2 * g * hs)), "seq_lens": (lens.shape, (n,)),
                "H0": (h0.shape, (d, n, hs))}
        if kind == "lstm":
            want["C0"] = (ins[6].shape, (d, n, hs))
            if len(ins) > 7:
                want["P"] = (ins[7].shape, (d, 3 * hs))
        for name, (got, shape) in want.items():
            if got != shape:
                raise TypeRuleError(f"{kind} {name} has shape {got}, expected {shape}")
        if lens.dtype is not DType.I32:
            raise TypeRuleError(f"{kind} seq_lens must be int32, got {lens.dtype.value}")
        activation_list(kind, attrs)
        state = TensorType((d, n, hs), x.dtype)
        return [TensorType((t, d, n, hs), x.dtype), state] + ([state] if kind == "lstm" else [])
    return infer


def _cell(kind: str, acts, gx: np.ndarray, h: np.ndarray, c: np.ndarray | None, r: np.ndarray,
          rb: np.ndarray, p: np.ndarray | None, a: dict[str, Any]):
    """One step for all batch entries: gx = X_t W^T + Wb (N, G*H). Returns (h, c)."""
    f, *rest = [lambda v, act=act: apply_activation(*act, v) for act in acts]
    clip = a["clip"]
    cl = (lambda v: np.clip(v, -clip, clip)) if clip > 0 else (lambda v: v)
    hs = a["hidden_size"]
    if kind == "rnn":
        return f(cl(gx + h @ r.T + rb)), None
    if kind == "gru":
        g = rest[0]
        hr = h @ r.T
        z = f(cl(gx[:, :hs] + hr[:, :hs] + rb[:hs]))
        rr = f(cl(gx[:, hs:2 * hs] + hr[:, hs:2 * hs] + rb[hs:2 * hs]))
        if a["linear_before_reset"]:
            hh = g(cl(gx[:, 2 * hs:] + rr * (hr[:, 2 * hs:] + rb[2 * hs:])))
        else:
            hh = g(cl(gx[:, 2 * hs:] + (rr * h) @ r[2 * hs:].T + rb[2 * hs:]))
        return (1 - z) * hh + z * h, None
    g, hfn = rest
    pre = gx + h @ r.T + rb
    pi, po, pf = (p[:hs], p[hs:2 * hs], p[2 * hs:]) if p is not None else (0, 0, 0)
    i = f(cl(pre[:, :hs] + pi * c))
    fg = 1 - i if a["input_forget"] else f(cl(pre[:, 2 * hs:3 * hs] + pf * c))
    cc = g(cl(pre[:, 3 * hs:]))
    c = fg * c + i * cc
    o = f(cl(pre[:, hs:2 * hs] + po * c))
    return o * hfn(c), c


def _reference(kind: str):
    def ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
        x, w, r, b, lens, h0 = ins[:6]
        c0 = ins[6] if kind == "lstm" else None
        p = ins[7] if kind == "lstm" and len(ins) > 7 else None
        g, hs = GATES[kind], a["hidden_size"]
        steps, n = x.shape[:2]
        acts = activation_list(kind, a)
        per = len(acts) // w.shape[0]
        reverse = [False, True] if a["direction"] == "bidirectional" else [a["direction"] == "reverse"]
        y = np.zeros((steps, w.shape[0], n, hs), x.dtype)
        hn, cn = np.zeros_like(h0), np.zeros_like(h0)
        for d in range(w.shape[0]):
            gx = x @ w[d].T + b[d, :g * hs]             # (T, N, G*H)
            h, c = h0[d].copy(), None if c0 is None else c0[d].copy()
            for s in range(steps):
                live = s < lens
                t = np.where(live, lens - 1 - s, 0) if reverse[d] else np.full(n, s)
                hx, cx = _cell(kind, acts[d * per:(d + 1) * per], gx[t, np.arange(n)], h, c, r[d],
                               b[d, g * hs:], None if p is None else p[d], a)
                h = np.where(live[:, None], hx, h)
                c = None if cx is None else np.where(live[:, None], cx, c)
                y[t[live], d, np.arange(n)[live]] = hx[live]
            hn[d] = h
            if c is not None:
                cn[d] = c
        outs = [y, hn] + ([cn] if kind == "lstm" else [])
        return [o.astype(x.dtype) for o in outs]
    return ref


def _attrs(kind: str) -> dict[str, Attr]:
    common = {"hidden_size": Attr("int"), "direction": Attr("str", "forward"),
                  "activations": Attr("str", ""), "activation_alpha": Attr("floats", ()),
                  "activation_beta": Attr("floats", ()), "clip": Attr("float", 0.0)}
    if kind == "gru":
        common["linear_before_reset"] = Attr("bool", False)
    if kind == "lstm":
        common["input_forget"] = Attr("bool", False)
    return common


rnn = define("nn.rnn", "Elman RNN (ONNX RNN): H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb). "
             "Inputs X, W, R, B, seq_lens, H0; outputs Y, Y_h.", _infer("rnn"), _reference("rnn"),
             6, **_attrs("rnn"))
gru = define("nn.gru", "GRU (ONNX GRU, gates z r h; linear_before_reset applies R_h before the "
             "reset gate). Inputs X, W, R, B, seq_lens, H0; outputs Y, Y_h.", _infer("gru"),
             _reference("gru"), 6, **_attrs("gru"))
lstm = define("nn.lstm", "LSTM (ONNX LSTM, gates i o f c, optional peepholes P, input_forget "
              "couples f = 1 - i). Inputs X, W, R, B, seq_lens, H0, C0 [, P]; outputs Y, Y_h, Y_c.",
              _infer("lstm"), _reference("lstm"), (7, 8), **_attrs("lstm"))
