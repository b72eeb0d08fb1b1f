"""The layering the design asks for, checked on the source: no import cycle inside passes/, the backends
never import the cost model (the tile decisions reach them as IR attributes) nor the cost model a backend
(it asks kernels through compiler/tunable.py), the passes import without TVM or IREE, and no backend file
grows past 400 lines."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Every module path imported anywhere in the file (function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_no_import_cycle_inside_passes():
    mods = {p.stem: p for p in (ROOT / "passes").glob("*.py") if p.stem != "__init__"}
    edges = {m: {i.split(".")[1] for i in _imports(p) if i.startswith("passes.") and i.split(".")[1] in mods} - {m}
             for m, p in mods.items()}

    def cycle_from(u, stack):
        for v in edges[u]:
            if v in stack:
                return stack[stack.index(v):] + [v]
            found = cycle_from(v, stack + [v])
            if found:
                return found
        return None
    for m in mods:
        assert cycle_from(m, [m]) is None, f"import cycle in passes/: {' -> '.join(cycle_from(m, [m]))}"


def test_backends_do_not_import_the_cost_model():
    bad = [str(p.relative_to(ROOT)) for p in (ROOT / "compiler" / "backends").rglob("*.py")
           if any(i == "costmodel" or i.startswith("costmodel.") for i in _imports(p))]
    assert not bad, f"backend files importing costmodel: {bad}"


def test_cost_model_imports_no_backend():
    """The cost model reaches kernels through compiler/tunable.py only: no import of compiler/backends/,
    TVM or IREE anywhere in costmodel/ (function-level imports count too)."""
    bad = {str(p.relative_to(ROOT)): sorted(i for i in _imports(p) if _is_backend(i))
           for p in (ROOT / "costmodel").rglob("*.py")}
    bad = {p: mods for p, mods in bad.items() if mods}
    assert not bad, f"cost-model files importing a backend: {bad}"


def _is_backend(module: str) -> bool:
    """compiler.backends or anything under it (`from compiler import backends` included), tvm, iree."""
    return module in ("compiler.backends", "tvm", "iree") or module.startswith(
        ("compiler.backends.", "tvm.", "iree."))


def test_no_backend_file_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "compiler" / "backends").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def _import_without_tvm_or_iree(modules: str) -> subprocess.CompletedProcess:
    """Import ``modules`` in a fresh interpreter where importing tvm or iree fails."""
    code = ("import builtins\nreal = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    if name.split('.')[0] in ('tvm', 'iree'):\n"
            "        raise ImportError('blocked ' + name)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\n"
            f"import {modules}\n")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)


def test_passes_import_without_tvm_or_iree():
    r = _import_without_tvm_or_iree("passes, passes.fusion, passes.layout, passes.tiles")
    assert r.returncode == 0, r.stderr


def test_cost_model_imports_without_tvm_or_iree():
    r = _import_without_tvm_or_iree("costmodel.features, costmodel.policy, costmodel.measure, costmodel.model")
    assert r.returncode == 0, r.stderr
