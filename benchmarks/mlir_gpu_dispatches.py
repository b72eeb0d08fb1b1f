"""How IREE compiles each dispatch of the MLIR backend's cuda programs, without a GPU: for the GPU check's models
(benchmarks/gpu_prepare.py) in FP32, FP16 and integer-only INT8, the share of the multiply-adds of the
contractions (convolutions and matmuls) that each kind of IREE lowering configuration gets:

* "tensor cores": a config with an `mma_kind` (IREE 3.13 has NVIDIA's f16 / bf16 / fp8 mma.sync and WMMA; no
  f32 (TF32) or int8 one);
* "thread tile": a SIMT config in which a thread computes more than one output;
* "1 per thread": a SIMT config in which a thread computes one output, each multiply-add loading both operands
  (IREE's direct convolution for f32 and integer convs, with no shared-memory tiles);
* "other": what has no workgroup tile (e.g. a config-less dispatch).

A contraction's multiply-adds are the product of its loop extents, which IREE writes in the dispatch's name
(`conv_32x64x112x112x3x7x7`, `matmul_like_32x128x784x64`); elementwise, reduction and pooling dispatches are
counted but carry no multiply-adds here, nor does a fused attention (`iree_linalg_ext.attention`). A dispatch
IREE shares among identical launches (a BERT's layers) counts once per launch.

    PYTHONPATH=. python benchmarks/mlir_gpu_dispatches.py [--models cnn encoder detector] [--modes fp32 fp16 int8]
                                                          [--batch 1 32] [--arch sm_90]

Static counts, not times: what explains the MLIR rows of the GPU check's timing table (docs/gpu_check.md).
"""
from __future__ import annotations

import argparse
import itertools
import re
import tempfile
from collections import Counter
from pathlib import Path

_EXPORT = re.compile(r"hal\.executable\.export public @(\w+)")
_LAUNCH = re.compile(r"stream\.cmd\.dispatch @\w+::@\w+::@(\w+)")
_CONFIG = re.compile(r"lowering_config = #iree_gpu\.lowering_config<\{([^}]*)\}>")
_CONTRACTION = re.compile(r"_dispatch_\d+_((?:batch_)?(?:conv|matmul|matmul_like|contract)\w*?)_((?:\d+x)*\d+)_")
KINDS = ("tensor cores", "thread tile", "1 per thread", "other")


def configurations(g, target) -> str:
    """IREE's executable configurations of `g` for cuda `target` (iree-compile --compile-to=executable-configurations)."""
    import iree.compiler as ireec
    from iree.compiler.api import Session

    from compiler.backends import mlir
    session = Session()
    session.context.load_all_available_dialects()
    module = mlir.build_module(g, target, session.context)
    flags, patched = mlir.cuda_target(target)
    if patched is not None:
        mlir.set_device_target(module, patched)
    return ireec.compile_str(str(module), extra_args=[*flags, "--compile-to=executable-configurations"]).decode()


def _ints(field: str, config: str) -> list[int]:
    m = re.search(rf"\b{field} = \[([^\]]*)\]", config)
    return [int(x) for x in m.group(1).split(",")] if m else []


def kind(config: str | None) -> str:
    """The kind (KINDS) of one lowering configuration's text (None: the dispatch has none)."""
    if config is None or not _ints("workgroup", config):
        return "other"
    if "mma_kind" in config:
        return "tensor cores"
    per_thread = 1
    for t in _ints("thread", config):
        per_thread *= max(t, 1)
    return "thread tile" if per_thread > 1 else "1 per thread"


def dispatches(text: str) -> list[tuple[str, str, int]]:
    """(dispatch name, kind, multiply-adds) of each launch in executable-configurations `text` (IREE shares one
    executable among identical dispatches, e.g. a BERT's layers: it appears once per launch here); a dispatch's
    kind is its first configured op's (the contraction's, where it has one)."""
    launches = Counter(_LAUNCH.findall(text))
    found = []
    parts = _EXPORT.split(text)
    for name, body in zip(parts[1::2], parts[2::2]):
        configs = _CONFIG.findall(body.split("hal.executable private", 1)[0])
        m = _CONTRACTION.search(name + "_")
        macs = 0
        if m and "arith.mul" in body:          # not a pooling window (IREE names those conv too)
            macs = 1
            for d in m.group(2).split("x"):
                macs *= int(d)
        pick = next((c for c in configs if "reduction" in c), configs[0] if configs else None)
        found += [(name, kind(pick), macs)] * launches[name]
    return found


def shares(found: list[tuple[str, str, int]]) -> dict[str, float]:
    """kind -> its share of the contractions' multiply-adds."""
    total = sum(m for _, _, m in found) or 1
    by = Counter()
    for _, k, m in found:
        by[k] += m
    return {k: by[k] / total for k in KINDS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["cnn", "encoder", "detector"],
                    choices=["cnn", "encoder", "detector"], help="gpu_prepare's models (default all three)")
    ap.add_argument("--modes", nargs="+", default=["fp32", "fp16", "int8"], choices=["fp32", "fp16", "int8"],
                    help="precisions (default all)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32], help="batch sizes (default 1 32)")
    ap.add_argument("--arch", default="sm_90", help="the cuda arch (default sm_90)")
    args = ap.parse_args()
    import numpy as np

    from benchmarks.gpu_prepare import MODELS, SEED, _model, inputs
    from compiler.api import final_ir
    from compiler.target import Target
    target = Target.parse(f"cuda -arch={args.arch}")
    print(f"IREE's lowering configurations for cuda -arch={args.arch}: share of the contractions' multiply-adds")
    print("| model | batch | mode | launches | contractions | GMAC | " + " | ".join(KINDS) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(KINDS))
    with tempfile.TemporaryDirectory() as d:
        for name, batch, mode in itertools.product(args.models, args.batch, args.modes):
            kw: dict = {}
            if mode == "int8":      # gpu_prepare's calibration: two seeded samples repeated across the batch
                cal = [[np.repeat(x, batch, axis=0) for x in inputs(name, 1, SEED + 100 + i)] for i in range(2)]
                kw = {"quantize": "int8", "integer_only": True, "calibration": cal}
            elif mode == "fp16":
                kw = {"precision": "fp16"}
            g, _ = final_ir(_model(name, batch, Path(d)), target, backend="mlir", **kw)
            found = dispatches(configurations(g, target))
            share = shares(found)
            contractions = [f for f in found if f[2]]
            print(f"| {MODELS[name][0].split(',')[0].split(':')[0]} | {batch} | {mode.upper()} | {len(found)} | "
                  f"{len(contractions)} | {sum(m for *_, m in found) / 1e9:.2f} | "
                  + " | ".join(f"{100 * share[k]:.0f}%" for k in KINDS) + " |", flush=True)


if __name__ == "__main__":
    main()
