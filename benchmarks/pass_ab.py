"""One pass on and off, side by side with onnxruntime: the same model compiled twice (the second time with
`--disable-pass PASS`), both timed interleaved with onnxruntime FP32 in one run.

    PYTHONPATH=. python benchmarks/pass_ab.py [--model resnet50|bert|bert512] [--pass assign_inplace] [--repeats 3]

    PYTHONPATH=. python benchmarks/pass_ab.py --model bert512 --pass fuse_attention   # attention fusion, seq 512

Prints, per repeat, the median ms of each (30 interleaved rounds after 5 warmups) and the ratios to
onnxruntime. 1 thread.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import export_model, interleaved_medians, ort_session  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["resnet50", "bert", "bert512"], default="resnet50")
    ap.add_argument("--pass", dest="pass_", default="assign_inplace", help="the pass to switch off")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import compiler
    path, x = export_model(args.model)
    target = "llvm -num-threads=1"
    with_pass = compiler.compile(str(path), target=target)
    without = compiler.compile(str(path), target=target, disable_passes=[args.pass_])
    sess = ort_session(path, 1)
    feed = {sess.get_inputs()[0].name: x}
    fns = {"with": lambda: with_pass.run(x), "without": lambda: without.run(x),
           "onnxruntime": lambda: sess.run(None, feed)}
    print(f"{args.model}, 1 thread: {args.pass_} on / off vs onnxruntime FP32 (median ms of 30, interleaved)")
    for r in range(args.repeats):
        m = interleaved_medians(fns, 5, 30)
        ort = m["onnxruntime"]
        print(f"  run {r + 1}: with {m['with']:.2f} ({m['with'] / ort:.3f}x)  without {m['without']:.2f} "
              f"({m['without'] / ort:.3f}x)  onnxruntime {ort:.2f}", flush=True)


if __name__ == "__main__":
    main()
