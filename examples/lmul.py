"""L-Mul: a float multiply as one integer add of the bit patterns (compiler/ops/lmul.py), its error per form
next to float8 / bfloat16 multipliers, and a transformer compiled with L-Mul attention vs FP32.

    python examples/lmul.py                  # BERT-6L (zoo.BertEncoder: 6 layers, hidden 384, seq 128)
    python examples/lmul.py --layers 2 --hidden 64 --seq 32      # a small one, seconds

Prints (1) the mean and 99th-percentile relative error of each L-Mul form on standard-normal operands,
with float8 e4m3 / e5m2 and bfloat16 multiplies (operands and product rounded to the format) for comparison;
(2) the encoder's pooled-output cosine vs PyTorch FP32 with each form on attention's matmuls (reference
interpreter), then the TVM build with lmul="attention" (3-bit) against the FP32 build: cosine, max
difference, latency. Random weights, so attention is close to uniform: a mild test of the scores.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compiler  # noqa: E402
from compiler import interp  # noqa: E402
from compiler.ops import kernel, lmul  # noqa: E402
from examples import zoo  # noqa: E402
from passes.lmul import LMUL_KERNEL, rewrite_attention  # noqa: E402

FORMS = (("f32", 3), ("f32", 4), ("bf16", 7), ("f32", 23))


def _rel(approx: np.ndarray, exact: np.ndarray) -> np.ndarray:
    return np.abs(approx.astype(np.float64) - exact) / np.abs(exact)


def error_table(n: int = 200_000) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, n)).astype(np.float32)
    exact = x.astype(np.float64) * y
    print(f"relative error of x * y, {n} standard-normal pairs: mean and 99th percentile")
    print(f"  {'multiplier':<34} {'mean':>8} {'p99':>8}")
    for dtype, m in FORMS:
        r = _rel(lmul.lmul_values(x, y, m), exact)
        print(f"  {f'L-Mul {dtype}, {m}-bit mantissa (l={lmul.offset_exponent(m)})':<34} "
              f"{r.mean():8.2%} {np.percentile(r, 99):8.2%}")
    try:
        import ml_dtypes
    except ImportError:
        print("  (install ml_dtypes for the float8 / bfloat16 rows)")
        return
    for name, dt in (("float8 e4m3 multiply", ml_dtypes.float8_e4m3fn),
                     ("float8 e5m2 multiply", ml_dtypes.float8_e5m2),
                     ("bfloat16 multiply", ml_dtypes.bfloat16)):
        xq, yq = (v.astype(dt).astype(np.float32) for v in (x, y))
        r = _rel((xq * yq).astype(dt).astype(np.float32), exact)
        print(f"  {name:<34} {r.mean():8.2%} {np.percentile(r, 99):8.2%}")


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def transformer(layers: int, hidden: int, seq: int) -> None:
    torch.manual_seed(0)
    heads = max(1, hidden // 64)
    model = zoo.BertEncoder(hidden=hidden, heads=heads, ffn=4 * hidden, layers=layers, seq=seq).eval()
    ids = torch.randint(0, 1000, (1, seq))
    ref = model(ids).detach().numpy()
    print(f"\nBERT-style encoder: {layers} layers, hidden {hidden}, {heads} heads, seq {seq}, random weights")
    g = compiler.optimize(compiler.import_model(model, example_inputs=(ids,)))
    print("  interpreter, pooled-output cosine vs PyTorch FP32 with L-Mul on attention's matmuls:")
    for dtype, m in FORMS:
        out = interp.run(rewrite_attention(g, dtype, m), ids.numpy())[0]
        print(f"    {dtype:<4} {m:>2}-bit: {_cosine(out, ref):.6f}   "
              f"max |diff| {np.abs(out - ref).max():.2e}")
    target = "llvm -num-threads=1"
    fp32 = compiler.compile(model, target, example_inputs=(ids,))
    lm = compiler.compile(model, target, example_inputs=(ids,), lmul="attention")
    n_att = sum(n.op is kernel.fused and n.attrs["kernel"] == LMUL_KERNEL for n in lm.graph.nodes)
    y32, ylm = fp32.run(ids.numpy())[0], lm.run(ids.numpy())[0]
    t32 = fp32.benchmark(ids.numpy(), warmup=2, repeat=10)["median_ms"]
    tlm = lm.benchmark(ids.numpy(), warmup=2, repeat=10)["median_ms"]
    print(f"  TVM, lmul=\"attention\" ({n_att} {LMUL_KERNEL} kernels, 3-bit):")
    print(f"    cosine vs PyTorch FP32 {_cosine(ylm, ref):.6f}, vs our FP32 build {_cosine(ylm, y32):.6f}, "
          f"max |diff| {np.abs(ylm - y32).max():.2e}")
    print(f"    latency (1 thread, median of 10): FP32 {t32:.1f} ms, L-Mul attention {tlm:.1f} ms "
          "(L-Mul simulated on a CPU with integer ops: the saving is energy on hardware with an L-Mul "
          "unit, not time here)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--seq", type=int, default=128)
    a = ap.parse_args()
    error_table()
    transformer(a.layers, a.hidden, a.seq)


if __name__ == "__main__":
    main()
