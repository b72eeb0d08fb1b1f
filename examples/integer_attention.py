"""Integer-only transformer block on the CPU: what the compiler does with attention and GELU.

A one-layer BERT-style encoder (examples.zoo.BertEncoder) is compiled integer-only three ways: GELU in the form
passes/activation_forms.py picks (here the exact function tabulated on its 8-bit input, 256 entries: as accurate
as ShiftGELU on these grids and cheaper), ShiftGELU on int16 as a 64 K-entry lookup table (`tabulate`), and
ShiftGELU computed.  The script prints which kernels run (the VNNI or AMX attention matmuls, the row-wise
Shiftmax, the tables), checks that each build is bit-exact with the reference interpreter, prints each one's
cosine with the float model, and times the builds and onnxruntime FP32.

    python examples/integer_attention.py [--hidden 384 --seq 128]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler  # noqa: E402
from examples import zoo  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = zoo.BertEncoder(1000, args.hidden, args.hidden // 64, 4 * args.hidden, 1, args.seq).eval()
    rng = np.random.default_rng(0)
    calib = [rng.integers(0, 1000, (1, args.seq)).astype(np.int64) for _ in range(4)]
    x = rng.integers(0, 1000, (1, args.seq)).astype(np.int64)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "encoder.onnx"
        zoo.export_onnx(model, torch.from_numpy(x), path, input_name="ids")
        kw = dict(target="llvm -num-threads=1", quantize="int8", calibration=calib, integer_only=True)
        builds = {"auto": compiler.compile(str(path), **kw),
                  "tabulated": compiler.compile(str(path), gelu_form="shift", **kw),
                  "computed": compiler.compile(str(path), gelu_form="shift", disable_passes=["tabulate"], **kw)}
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for name, cm in builds.items():
        hist = cm.graph.op_histogram()
        q_ops = {k: v for k, v in hist.items() if k.startswith("q.")}
        exact = all(np.array_equal(a, b) for a, b in zip(cm.run(x), compiler.interp.run(cm.graph, x)))
        y, ref = cm.run(x)[0].ravel().astype(np.float64), sess.run(None, {"ids": x})[0].ravel().astype(np.float64)
        cos = float(y @ ref / (np.linalg.norm(y) * np.linalg.norm(ref)))
        print(f"\n{name}: {q_ops}\n  bit-exact with the interpreter: {exact}; cosine with FP32 {cos:.5f}")
        for kernel, calls, ms in cm.profile(x, runs=10)["kernels"][:6]:
            print(f"  {ms:7.3f} ms  {calls:3d} x {kernel}")
    for name in ("auto", "tabulated"):
        tables = [n.inputs[1] for n in builds[name].graph.walk() if n.op.name == "q.table"]
        print(f"\n{name} tables: {[f'{t.type.shape[0]} x {t.type.dtype.value}' for t in tables]}")
    ms = {k: cm.benchmark(x, warmup=5, repeat=30)["median_ms"] for k, cm in builds.items()}
    import time
    t = []
    for _ in range(30):
        t0 = time.perf_counter()
        sess.run(None, {"ids": x})
        t.append((time.perf_counter() - t0) * 1e3)
    print(f"latency, 1 thread: onnxruntime FP32 {np.median(t):.3f} ms, ours integer-only {ms['auto']:.3f} ms "
          f"(ShiftGELU tabulated: {ms['tabulated']:.3f} ms, computed: {ms['computed']:.3f} ms)")


if __name__ == "__main__":
    main()
