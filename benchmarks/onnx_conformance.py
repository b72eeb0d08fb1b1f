"""ONNX's own node conformance cases (onnx.backend.test.case.node) through our frontend and the
reference interpreter, or compiled with TVM or MLIR on a sample: the pass rate and why the rest fail.

    python benchmarks/onnx_conformance.py                      # every in-scope case, interpreter
    python benchmarks/onnx_conformance.py --tvm --every 8      # every 8th in-scope case, TVM llvm
    python benchmarks/onnx_conformance.py --mlir --every 8     # every 8th in-scope case, MLIR (IREE llvm-cpu)
    python benchmarks/onnx_conformance.py --only gather --list # cases whose name contains "gather"

In scope: every case except those over sequences, optionals, maps or strings, training ops
(losses count), tokenizers and image decoders, and ops whose output shape depends on the data
(NonZero, NonMaxSuppression, Unique, Compress, Loop, If, Scan); those are counted apart.
A case passes when every output matches in shape, dtype and value (the case's rtol/atol, NaN
equal to NaN). Every other case is one of: unsupported (our Unsupported error, exit code 3),
invalid (InvalidModel), wrong result, or crash (any other exception: a bug).

Node tests feed shape-like operands (axes, shape, pads, k, sizes, ...) as graph inputs, which a
static compiler refuses ("must be a constant"). Such a case is run again with those inputs
baked in as initializers, as real models have them; a pass then counts as "pass (baked)".
"""
from __future__ import annotations

import argparse
import collections
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATA_DEPENDENT = {"NonZero", "NonMaxSuppression", "Unique", "Compress", "Loop", "If", "Scan"}
_OUT_OF_SCOPE_NAMES = ("sequence", "optional", "string", "strnorm", "regex", "tokenizer",
                       "image_decoder", "_training_", "adagrad", "adam", "momentum", "gradient",
                       "split_to_sequence", "concat_from_sequence")


def _has_non_tensor(vis) -> bool:
    import onnx
    for vi in vis:
        if not vi.type.HasField("tensor_type") or vi.type.tensor_type.elem_type == onnx.TensorProto.STRING:
            return True
    return False


def scope_of(case) -> str:
    """'in', 'out: <why>' or 'data-dependent'."""
    g = case.model.graph
    name = case.name.lower()
    if any(k in name for k in _OUT_OF_SCOPE_NAMES):
        return "out: name"
    if _has_non_tensor(g.input) or _has_non_tensor(g.output):
        return "out: non-tensor io"
    if any(n.domain == "ai.onnx.preview.training" for n in g.node):
        return "out: training op"
    if any(n.op_type in DATA_DEPENDENT for n in g.node):
        return "data-dependent"
    return "in"


def _reason(e: BaseException) -> str:
    """A histogram key for a failure: the error kind and its message, node names removed."""
    from compiler.diagnostics import CompileError
    if isinstance(e, CompileError):
        msg = e.message.splitlines()[0]
        kind = type(e).__name__
    else:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        kind = f"crash {type(e).__name__}"
    msg = re.sub(r"\(node '[^']*'(, and \d+ more)?\)", "", msg)
    msg = re.sub(r"'[^']*'", "'…'", msg)
    msg = re.sub(r"\d+", "N", msg)
    return f"{kind}: {msg[:110]}"


def _compare(got: list[np.ndarray], want: list[np.ndarray], rtol: float, atol: float) -> str | None:
    if len(got) != len(want):
        return f"{len(got)} outputs, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            return f"output {i} shape {g.shape} != {w.shape}"
        if g.dtype != w.dtype:
            return f"output {i} dtype {g.dtype} != {w.dtype}"
        if w.dtype.kind == "V" and "float" in w.dtype.name:    # ml_dtypes' bfloat16, float8, float4
            g, w = g.astype(np.float32), w.astype(np.float32)
        if w.dtype.kind in "fc":
            if not np.allclose(g, w, rtol=rtol, atol=atol, equal_nan=True):
                return f"output {i} differs by {np.nanmax(np.abs(g.astype(np.float64) - w)):.3g}"
        elif not np.array_equal(g, w):
            return f"output {i} differs"
    return None


def _array(x) -> np.ndarray:
    """Data sets hold numpy arrays, or TensorProtos for types numpy spells differently."""
    import onnx
    from onnx import numpy_helper
    return numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else np.asarray(x)


_NEEDS_CONSTANT = re.compile(r"\(input '([^']+)'\) must be a constant")


def _baked(model, names: set[str], feeds: dict[str, np.ndarray]):
    """A copy of `model` with the graph inputs in `names` turned into initializers."""
    from onnx import numpy_helper
    m = type(model)()
    m.CopyFrom(model)
    keep = [vi for vi in m.graph.input if vi.name not in names]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    m.graph.initializer.extend(numpy_helper.from_array(feeds[n], n) for n in names)
    return m


def _run_data_set(model, names: list[str], inputs, outputs, case, backend: str, bake: set[str]):
    """None when it passes, else (status, reason). Raises the compiler's errors."""
    import compiler
    from compiler import interp
    from frontends.onnx import load_onnx
    feeds = dict(zip(names, (_array(x) for x in inputs)))
    if bake:
        model = _baked(model, bake, feeds)
    run_feeds = [a for n, a in feeds.items() if n not in bake]
    if backend in ("tvm", "mlir"):
        got = compiler.compile(model, target="llvm", backend=backend).run(*run_feeds)
    else:
        got = interp.run(load_onnx(model), *run_feeds)
    got = got if isinstance(got, (list, tuple)) else [got]
    bad = _compare(list(got), [_array(x) for x in outputs], case.rtol, case.atol)
    return None if bad is None else ("wrong", f"wrong result: {re.sub(r'[0-9.e+-]+$', 'X', bad)}")


def run_case(case, backend: str) -> tuple[str, str]:
    """(status, reason) with status one of pass, pass (baked), unsupported, invalid, wrong, crash."""
    from compiler.diagnostics import CompileError, InvalidInput, InvalidModel, Unsupported
    names = [vi.name for vi in case.model.graph.input
             if vi.name not in {t.name for t in case.model.graph.initializer}]
    bake: set[str] = set()
    try:
        for inputs, outputs in case.data_sets:
            while True:
                try:
                    bad = _run_data_set(case.model, names, inputs, outputs, case, backend, bake)
                    break
                except Unsupported as e:
                    m = _NEEDS_CONSTANT.search(e.message)
                    if m is None or m.group(1) in bake or m.group(1) not in names:
                        raise
                    bake.add(m.group(1))
            if bad is not None:
                return bad
    except Unsupported as e:
        return "unsupported", _reason(e)
    except (InvalidModel, InvalidInput) as e:
        return "invalid", _reason(e)
    except CompileError as e:
        return "crash", _reason(e)
    except Exception as e:  # noqa: BLE001  (every other exception is a bug to report)
        return "crash", _reason(e)
    return ("pass (baked)" if bake else "pass"), ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tvm", action="store_true", help="compile with TVM (llvm) instead of interpreting")
    ap.add_argument("--mlir", action="store_true", help="compile with MLIR (IREE llvm-cpu) instead of interpreting")
    ap.add_argument("--every", type=int, default=1, help="run every Nth in-scope case (default 1; 8 for --tvm / --mlir)")
    ap.add_argument("--only", default="", help="only cases whose name contains this")
    ap.add_argument("--list", action="store_true", help="print every failing case with its reason")
    ap.add_argument("--top", type=int, default=40, help="reasons shown in the histogram")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    np.seterr(all="ignore")
    from onnx.backend.test.case.node import collect_testcases

    cases = sorted(collect_testcases(), key=lambda c: c.name)
    scopes = collections.Counter()
    in_scope, data_dep = [], []
    for c in cases:
        s = scope_of(c)
        scopes[s] += 1
        if s == "in" and args.only in c.name:
            in_scope.append(c)
        elif s == "data-dependent" and args.only in c.name:
            data_dep.append(c)
    sample = in_scope[::args.every]
    backend = "tvm" if args.tvm else "mlir" if args.mlir else "interp"
    print(f"{len(cases)} cases: {dict(scopes)}; running {len(sample)} in-scope through {backend}",
          flush=True)
    t0 = time.time()
    status = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    failures = []
    for c in sample:
        st, why = run_case(c, backend)
        status[st] += 1
        if not st.startswith("pass"):
            reasons[why] += 1
            failures.append((c.name, why))
    dd = collections.Counter(run_case(c, "interp")[0] for c in data_dep)
    n = len(sample)
    ok = status["pass"] + status["pass (baked)"]
    print(f"\n{backend}: {ok}/{n} pass ({100 * ok / max(n, 1):.1f}%; without baking shape-like "
          f"inputs {status['pass']}, {100 * status['pass'] / max(n, 1):.1f}%) in {time.time() - t0:.0f} s; "
          + ", ".join(f"{k} {v}" for k, v in status.most_common()))
    print(f"data-dependent (out of scope): {sum(dd.values())} cases, {dict(dd)}")
    print(f"\nfailure reasons (top {args.top}):")
    for why, k in reasons.most_common(args.top):
        print(f"  {k:4d}  {why}")
    if args.list:
        print()
        for name, why in failures:
            print(f"  {name}: {why}")


if __name__ == "__main__":
    main()
