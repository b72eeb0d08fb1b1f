"""Import an ONNX model, print its IR, run the canonicalize pipeline pass by pass, and check
with the reference interpreter that every pass kept the meaning.

    python examples/ir_and_passes.py [model.onnx]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler  # noqa: E402
from compiler import interp  # noqa: E402
from compiler.pipeline import pipeline_for  # noqa: E402
from passes import PASSES  # noqa: E402

DEFAULT = Path(__file__).parent / "models" / "digits_cnn.onnx"


def main(path: Path) -> None:
    g = compiler.import_model(path)
    print(f"imported {path.name}: {len(g.nodes)} nodes {g.op_histogram()}\n")
    print(g)
    rng = np.random.default_rng(0)
    x = [rng.standard_normal(v.type.shape).astype(v.type.dtype.numpy) for v in g.inputs]
    want = interp.run(g, *x)
    for name in pipeline_for(compiler.Target.parse("llvm")):
        g = PASSES[name].fn(g)
        err = max(float(np.max(np.abs(a - b))) for a, b in zip(interp.run(g, *x), want))
        print(f"{name:16} -> {len(g.nodes):3} nodes, max |diff| vs the imported graph {err:.1e}")
    print()
    print(g)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
