"""Measured per-element cost of the integer elementwise ops and of a table lookup: the data behind the
tabulate pass's decision (passes/tabulate.py).

Each op is compiled alone (by the TVM backend, reached through the kernels' provider, compiler/tunable.py)
on a (1, ELEMENTS) int16 tensor (int8 for the 256-entry lookup) and timed (median of repeats); the shipped
file holds nanoseconds per element with the machine description.  ``nn.relu`` stands for the memory floor
(read, write, nothing else).  A fused chain f1..fk costs about floor + sum(cost(fi) - floor); the lookup
costs cost(q.table[N]).  Table indices are uniform over the whole range (the worst case for the
65536-entry table's cache footprint).

    python -m costmodel.elementwise --out costmodel/data/elementwise_x86_64.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "elementwise_x86_64.json")
ELEMENTS = 128 * 1536          # one BERT-base-sized FFN activation
FLOOR = "nn.relu"


def _graph(op: str):
    from compiler.ir import Graph
    from compiler.ops import elementwise as ew, ivit, quant
    from compiler.types import DType, TensorType
    g = Graph("kernel")
    if op.startswith("q.table"):
        n = int(op[op.index("[") + 1:-1])
        dt = DType.I8 if n == 256 else DType.I16
        x = g.add_input("x", TensorType((1, ELEMENTS), dt))
        t = g.const(np.random.default_rng(0).integers(-128, 128, n).astype(np.int8), "t")
        g.outputs = [g.add1(quant.table, [x, t])]
        return g
    x = g.add_input("x", TensorType((1, ELEMENTS), DType.I16))
    if op == "q.requant":
        y = g.add1(quant.requant, [x], multiplier=[1258759040], shift=[43], qmin=-128, qmax=127, dtype=DType.I8)
    elif op == "q.shiftgelu":
        y = g.add1(ivit.shiftgelu, [x], scale=0.0026834, n=22, sigma_bits=15, dividend_bits=62, row_max=False)
    elif op == "q.shifttanh":
        y = g.add1(ivit.shifttanh, [x], scale=0.0026834, n=10, dtype=DType.I16, dividend_bits=62)
    elif op == "nn.relu":
        y = g.add1(ew.relu, [x])
    elif op == "nn.clip":
        y = g.add1(ew.clip, [x], min=-100.0, max=100.0)
    else:
        raise ValueError(f"no measurement recipe for {op}")
    g.outputs = [y]
    return g


OPS = ("nn.relu", "nn.clip", "q.requant", "q.shiftgelu", "q.shifttanh", "q.table[256]", "q.table[65536]")


def measure(ops: Sequence[str] = OPS, repeat: int = 15, log=print) -> dict[str, Any]:
    from compiler import tunable
    from compiler.target import Target
    from costmodel.measure import machine_info
    target = Target.parse("llvm -num-threads=1")
    rng = np.random.default_rng(1)
    out: dict[str, float] = {}
    for op in ops:
        g = _graph(op)
        exe = tunable.provider().build_graph(g, target)
        x = g.inputs[0].type
        info = np.iinfo(x.dtype.numpy)
        inp = rng.integers(info.min, info.max + 1, x.shape).astype(x.dtype.numpy)
        for _ in range(3):
            exe.run([inp])
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(5):
                exe.run([inp])
            ts.append((time.perf_counter() - t0) / 5)
        out[op] = float(np.median(ts)) / ELEMENTS * 1e9
        log(f"  {op:16s} {out[op]:.3f} ns/element")
    return {"ns_per_element": out, "elements": ELEMENTS, "machine": machine_info(1)}


@lru_cache(maxsize=None)
def _load(path: str) -> dict[str, float] | None:
    try:
        with open(path) as f:
            return dict(json.load(f)["ns_per_element"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def chain_cost(ops: Sequence[str], costs: dict[str, float]) -> float | None:
    """ns per element of the fused chain, or None if an op was never measured."""
    if any(op not in costs for op in ops) or FLOOR not in costs:
        return None
    floor = costs[FLOOR]
    return floor + sum(max(costs[op] - floor, 0.0) for op in ops)


def measured_costs(path: str | None = None) -> dict[str, float] | None:
    """ns per element of each measured op: `path`, $DYC_ELEMENTWISE_COSTS or the shipped file; None without one."""
    return _load(path or os.environ.get("DYC_ELEMENTWISE_COSTS", DATA))


def choose_table(ops: Sequence[str], index_bits: int, elements: int, path: str | None = None) -> bool:
    """True when the measured lookup (2^index_bits entries) is cheaper per element than computing the
    chain `ops` (op names as printed).  No measurements (or an unmeasured op): False, keep the ops."""
    costs = measured_costs(path)
    lookup = None if costs is None else costs.get(f"q.table[{2 ** index_bits}]")
    compute = None if costs is None else chain_cost(ops, costs)
    return lookup is not None and compute is not None and lookup < compute


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DATA)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args(argv)
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    print(f"measuring {len(OPS)} elementwise kernels on {ELEMENTS} elements", file=sys.stderr)
    data = measure(repeat=args.repeat, log=lambda m: print(m, file=sys.stderr))
    from compiler.tools.common import write_atomic
    write_atomic(args.out, lambda f: f.write(json.dumps(data, indent=1, sort_keys=True).encode()))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
