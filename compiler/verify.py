"""The verifier: SSA form, topological order, attribute schemas, and stored types equal to
what each op's type rule infers. Run after every pass."""
from __future__ import annotations

from compiler.diagnostics import CompileError, SourceLoc
from compiler.ir import Graph, Node
from compiler.ops.registry import TypeRuleError


class VerifyError(CompileError):
    """The IR broke an invariant: a compiler bug, not a user error (exit code 1)."""

    code = 1
    kind = "IR verification failed"


def _context(g: Graph, i: int) -> str:
    lo, hi = max(0, i - 5), min(len(g.nodes), i + 6)
    return "\n".join(("> " if j == i else "  ") + f"{n.op.name} {n.name}" for j, n in
                     enumerate(g.nodes[lo:hi], lo))


def _fail(g: Graph, i: int, n: Node, msg: str) -> VerifyError:
    loc = n.loc or SourceLoc(g.source, n.name, n.op.name)
    return VerifyError(f"{msg} (node #{i} {n.op.name})\n{_context(g, i)}", loc)


def verify(g: Graph) -> None:
    defined: set[int] = {id(v) for v in g.inputs}
    for i, n in enumerate(g.nodes):
        for v in n.inputs:
            if not v.is_const and id(v) not in defined:
                raise _fail(g, i, n, f"operand '{v.name}' used before it is defined")
        try:
            n.op.check_arity(len(n.inputs))
            attrs = n.op.complete_attrs(n.attrs)
            if attrs != n.attrs:
                raise TypeRuleError(f"attributes {n.attrs} are not in canonical form {attrs}")
            types = n.op.infer([v.type for v in n.inputs], n.attrs)
            for body in n.bodies:
                try:
                    verify(body)
                except VerifyError as e:
                    raise TypeRuleError(f"in its body: {e.message}") from None
        except TypeRuleError as e:
            raise _fail(g, i, n, str(e)) from None
        if len(types) != len(n.outputs):
            raise _fail(g, i, n, f"{len(n.outputs)} results, type rule gives {len(types)}")
        for v, t in zip(n.outputs, types):
            if (v.type.shape, v.type.dtype) != (t.shape, t.dtype):
                raise _fail(g, i, n, f"result '{v.name}' typed {v.type}, type rule gives {t}")
            if id(v) in defined:
                raise _fail(g, i, n, f"value '{v.name}' defined twice")
            if v.producer is not n:
                raise _fail(g, i, n, f"result '{v.name}' does not point back to its producer")
            defined.add(id(v))
    for v in g.outputs:
        if not v.is_const and id(v) not in defined:
            raise VerifyError(f"graph output '{v.name}' is never defined")
