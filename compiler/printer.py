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
    args = ", ".join(f"%arg{i}: {v.type}" for i, v in enumerate(g.inputs))
    rets = ", ".join(str(v.type) for v in g.outputs)
    lines = [f"func.func @{g.name}({args}) -> ({rets}) {{"]
    _print_body(g, lines, "  ", "", "func.return")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _print_body(g: Graph, lines: list[str], indent: str, prefix: str, terminator: str) -> None:
    """Append g's constants, nodes and terminator; values are named %{prefix}N, inputs %{prefix}argN.
    A graph-valued attribute (a fused kernel's body) prints as a region after the operands."""
    names: dict[int, str] = {}

    def name(v: Value) -> str:
        if id(v) not in names:
            names[id(v)] = f"%{prefix}{len(names) - len(g.inputs)}"
        return names[id(v)]

    for i, v in enumerate(g.inputs):
        names[id(v)] = f"%{prefix}arg{i}"
    for c in g.constants():
        lines.append(f'{indent}{name(c)} = "ir.constant"() {{value = {_const_attr(c)}}} : () -> {c.type}'
                     f"  // {c.name}")
    for n in g.nodes:
        outs = ", ".join(name(v) for v in n.outputs)
        ins = ", ".join(name(v) for v in n.inputs)
        regions = {k: v for k, v in n.attrs.items() if isinstance(v, Graph)}
        attrs = ", ".join(f"{k} = {format_attr(v)}" for k, v in n.attrs.items() if k not in regions)
        attrs = f" {{{attrs}}}" if attrs else ""
        in_t = ", ".join(str(v.type) for v in n.inputs)
        out_t = ", ".join(str(v.type) for v in n.outputs)
        out_t = out_t if len(n.outputs) == 1 else f"({out_t})"
        loc = f'  // {n.name}' if n.name else ""
        if not regions:
            lines.append(f'{indent}{outs} = "{n.op.name}"({ins}){attrs} : ({in_t}) -> {out_t}{loc}')
            continue
        lines.append(f'{indent}{outs} = "{n.op.name}"({ins}) ({{{loc}')
        for body in regions.values():
            inner = f"{prefix}{name(n.outputs[0])[1:]}_"
            bargs = ", ".join(f"%{inner}arg{i}: {v.type}" for i, v in enumerate(body.inputs))
            lines.append(f"{indent}^bb0({bargs}):")
            _print_body(body, lines, indent + "  ", inner, "k.yield")
        lines.append(f"{indent}}}){attrs} : ({in_t}) -> {out_t}")
    ret_t = ", ".join(str(v.type) for v in g.outputs)
    lines.append(f'{indent}"{terminator}"({", ".join(name(v) for v in g.outputs)}) : ({ret_t}) -> ()')
