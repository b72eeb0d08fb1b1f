"""The integer depthwise conv on VNNI: one MobileNet block's depthwise layer compiled integer-only, run bit-exact
against the reference interpreter, and the instructions its kernel is made of.

In the blocked layout (NCHW16c / NCHW8c) 4 horizontally adjacent pixels of one channel block are 64 (32)
contiguous bytes. One vpermb turns them into one 32-bit lane per channel holding its 4 taps, and one vpdpbusd
adds their products to that channel's accumulator: a 3x3 kernel is 3 of each per output vector, where the plain
form widens and multiplies 9 times (int16 activations: 2 taps per lane, vpermw + vpdpwssd).

    python examples/depthwise_vnni.py [--channels 72] [--size 56] [--kernel 3] [--stride 1] [--int16]

Needs a CPU with AVX-512 VNNI and VBMI for the VNNI form (elsewhere the plain form runs, equally exact).
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compiler import interp  # noqa: E402
from compiler.backends.tvm import BACKEND  # noqa: E402
from compiler.api import lower_kernels  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.ops import quant as q  # noqa: E402
from compiler.target import Target  # noqa: E402
from compiler.types import DType, TensorType  # noqa: E402


def depthwise_layer(c: int, size: int, k: int, stride: int, xdt: DType) -> Graph:
    """q.conv (groups = channels) -> per-channel q.requant to uint8, random int8 weights."""
    rng = np.random.default_rng(0)
    g = Graph()
    x = g.add_input("x", TensorType((1, c, size, size), xdt))
    w = g.const(rng.integers(-127, 128, (c, 1, k, k)).astype(np.int8), "w")
    b = g.const(rng.integers(-5000, 5000, c).astype(np.int32), "b")
    acc = g.add1(q.conv, [x, w, b], strides=(stride, stride), pads=(k // 2,) * 4, dilations=(1, 1), groups=c,
                 x_zero_point=0, name="depthwise")
    y = g.add1(q.requant, [acc], multiplier=tuple(int(v) for v in rng.integers(2**29, 2**30, c)),
               shift=(38,) * c, zero_point=0, in_zero_point=0, qmin=0, qmax=255, dtype=DType.U8, axis=1)
    g.outputs = [g.add1(q.dequantize, [y], scale=(0.05,), zero_point=(0,), axis=1)]
    return g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=72)
    ap.add_argument("--size", type=int, default=56)
    ap.add_argument("--kernel", type=int, default=3)
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--int16", action="store_true", help="int16 activations (a --keep-16bit layer)")
    args = ap.parse_args()
    xdt = DType.I16 if args.int16 else DType.U8
    g = depthwise_layer(args.channels, args.size, args.kernel, args.stride, xdt)
    target = Target("llvm", num_threads=1)
    exe = BACKEND.build(lower_kernels(g, target), target)
    info = np.iinfo(xdt.numpy)
    x = np.random.default_rng(1).integers(info.min, info.max + 1, (1, args.channels, args.size, args.size))
    x = x.astype(xdt.numpy)
    same = np.array_equal(exe.run([x])[0], interp.run(g, x)[0])
    asm = exe.source("asm")
    ops = Counter(re.findall(r"^\s+(vpdpbusd|vpdpwssd|vpermb|vpermw|vpmulld|vpmaddwd)\s", asm, re.M))
    print(f"depthwise {args.channels} channels, {args.size}x{args.size}, {args.kernel}x{args.kernel}, stride "
          f"{args.stride}, {xdt.value} data: bit-exact with the interpreter: {same}")
    print("shuffles and multiply-adds in the compiled model:", dict(ops) or "none")
    form = "VNNI (vperm + vpdp)" if ops.get("vpdpbusd") or ops.get("vpdpwssd") else "plain (widen + multiply)"
    print(f"form: {form}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
