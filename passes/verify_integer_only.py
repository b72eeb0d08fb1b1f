"""verify_integer_only: proves a quantized graph has no float op between the input quantizes
and the output dequantizes (DESIGN.md); `compile --integer-only` fails when it does not."""
from __future__ import annotations

from compiler.diagnostics import SourceLoc, Unsupported
from compiler.ir import Graph, Node
from compiler.ops import quant, shape
from passes.base import register_pass
from passes.quantize import resize_refusal


def verify_integer_only(g: Graph) -> list[Node]:
    """The nodes with a float input or result, other than a q.quantize of a graph input and a
    q.dequantize whose result is a graph output."""
    inputs = {id(v) for v in g.inputs}
    outputs = {id(v) for v in g.outputs}
    bad = []
    for n in g.nodes:
        if n.op is quant.quantize and id(n.inputs[0]) in inputs:
            continue
        if n.op is quant.dequantize and id(n.outputs[0]) in outputs:
            continue
        if any(v.type.dtype.is_float for v in list(n.inputs) + list(n.outputs)):
            bad.append(n)
    return bad


def float_reason(n: Node) -> str | None:
    """Why node n has no integer form, where a rule says (a resize: passes.quantize.resize_refusal)."""
    return resize_refusal(n) if n.op is shape.resize else None


def describe(g: Graph, n: Node) -> str:
    loc = n.loc or SourceLoc(g.source, n.name, n.op.name)
    why = float_reason(n)
    return f"{n.name} ({n.op.name}) at {loc}" + (f": {why}" if why else "")


@register_pass("verify_integer_only")
def verify_integer_only_pass(g: Graph) -> Graph:
    """Check only: a graph with float ops inside => Unsupported naming each of them."""
    bad = verify_integer_only(g)
    if bad:
        names = "\n    ".join(describe(g, n) for n in bad)
        first = bad[0]
        raise Unsupported(f"the graph is not integer-only: {len(bad)} node(s) compute in float:\n    {names}",
                          first.loc or SourceLoc(g.source, first.name, first.op.name),
                          hint="these ops have no integer form yet (e.g. cubic resize, a product of a value and its "
                               "own function that no quantize follows): "
                               "drop --integer-only to keep them in float, or end the model in logits")
    return g
