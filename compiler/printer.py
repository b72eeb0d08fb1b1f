"""Print a Graph in MLIR generic syntax, so it can be read, diffed and fed to the cost model."""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from compiler.ir import Graph, Value
from compiler.types import DType

_INLINE_LIMIT = 16   # constants with at most this many elements print their values


def format_attr(v: Any) -> str:
    if isinstance(v, bool) or isinstance(v, np.bool_):
        return "true" if v else "false"
    if isinstance(v, DType):
        return v.mlir
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, float):
        return repr(v) if np.isfinite(v) else ("0x7F800000" if v > 0 else "0xFF800000")
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(format_attr(x) for x in v) + "]"
    return format_attr(str(v))


def _const_attr(v: Value) -> str:
    arr = v.const
    assert arr is not None
    if arr.size <= _INLINE_LIMIT:
        flat = ", ".join(format_attr(x.item()) for x in arr.reshape(-1))
        return f"dense<[{flat}]>" if arr.ndim else f"dense<{flat}>"
    digest = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()[:12]
    return f"dense_resource<{v.name}_{digest}>"


def print_graph(g: Graph) -> str:
    names: dict[int, str] = {}

    def name(v: Value) -> str:
        if id(v) not in names:
            names[id(v)] = f"%{len(names) - len(g.inputs)}"
        return names[id(v)]

    for i, v in enumerate(g.inputs):
        names[id(v)] = f"%arg{i}"
    args = ", ".join(f"%arg{i}: {v.type}" for i, v in enumerate(g.inputs))
    rets = ", ".join(str(v.type) for v in g.outputs)
    lines = [f"func.func @{g.name}({args}) -> ({rets}) {{"]
    for c in g.constants():
        lines.append(f'  {name(c)} = "ir.constant"() {{value = {_const_attr(c)}}} : () -> {c.type}'
                     f"  // {c.name}")
    for n in g.nodes:
        outs = ", ".join(name(v) for v in n.outputs)
        ins = ", ".join(name(v) for v in n.inputs)
        attrs = ", ".join(f"{k} = {format_attr(v)}" for k, v in n.attrs.items())
        attrs = f" {{{attrs}}}" if attrs else ""
        in_t = ", ".join(str(v.type) for v in n.inputs)
        out_t = ", ".join(str(v.type) for v in n.outputs)
        out_t = out_t if len(n.outputs) == 1 else f"({out_t})"
        loc = f'  // {n.name}' if n.name else ""
        lines.append(f'  {outs} = "{n.op.name}"({ins}){attrs} : ({in_t}) -> {out_t}{loc}')
    ret_t = ", ".join(str(v.type) for v in g.outputs)
    lines.append(f'  "func.return"({", ".join(name(v) for v in g.outputs)}) : ({ret_t}) -> ()')
    lines.append("}")
    return "\n".join(lines) + "\n"
