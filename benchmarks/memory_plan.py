"""Arena bytes of the memory planner against the live-bytes lower bound and against what TVM Relax's own
static planner allocates for the same program, on the final IR.

    python benchmarks/memory_plan.py [--models resnet50 bert yolov8n ...] [--target llvm]

Models: ResNet-50 and the 6-layer BERT (benchmarks.common), the real-architecture suite
(examples/real_arch: yolov8n, mobilenetv3_large, efficientnet_b0, convnext_t; exported to
out/bench/real_arch/ when missing) and the torch frontend's test models (tests/frontends/torch:
resnet18_style, mobilenetv2_style, vit, bert_small; imported with torch.export, no ONNX file).

Per model: the arena buffers of the final IR (after reshape views and in-place epilogues), the lower
bound (most bytes live at once), the best greedy placement, the kept placement, its ratio to the bound,
its planner and whether it is proven minimal; `tvm_planner_bytes` (the storage Relax's
StaticPlanBlockMemory allocates for the module the TVM backend compiles) and arena / tvm; the fast-tier
mapping (per-core L2): buffers chosen and predicted DRAM traffic saved (an estimate, not measured); the
planner's time. The bar: arena <= 1.03x the bound or proven optimal, and arena <= tvm_planner_bytes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import CACHE, export_model  # noqa: E402

REAL_ARCH = ["yolov8n", "mobilenetv3_large", "efficientnet_b0", "convnext_t"]
TORCH_MODELS = ["resnet18_style", "mobilenetv2_style", "vit", "bert_small"]
ALL = ["resnet50", "bert", *REAL_ARCH, *TORCH_MODELS]


def _torch_model(name: str):
    """(module, example input) of the torch frontend's test models (tests/frontends/torch/test_models.py)."""
    import torch

    from examples import zoo
    torch.manual_seed(0)
    if name == "resnet18_style":
        return zoo.randomize_batch_norm(zoo.small_resnet()), torch.randn(1, 3, 32, 32)
    if name == "mobilenetv2_style":
        return zoo.randomize_batch_norm(zoo.MobileNetV2()), torch.randn(1, 3, 32, 32)
    if name == "vit":
        return zoo.ViT().eval(), torch.randn(1, 1, 8, 8)
    return (zoo.BertEncoder(vocab=100, hidden=64, heads=4, ffn=128, layers=2, seq=16).eval(),
            torch.randint(0, 100, (1, 16)))


def final_graph(name: str, target: str):
    """The final IR of `name`, without the plan (timed separately)."""
    from compiler.api import final_ir
    skip = ("plan_memory",)
    if name in ("resnet50", "bert"):
        return final_ir(str(export_model(name)[0]), target, disable_passes=skip)[0]
    if name in REAL_ARCH:
        from examples.real_arch import export_onnx
        path = CACHE / "real_arch" / f"{name}.onnx"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            export_onnx(name, path)
        return final_ir(str(path), target, disable_passes=skip)[0]
    model, x = _torch_model(name)
    return final_ir(model, target, example_inputs=(x,), disable_passes=skip)[0]


def relax_bytes(g, target: str) -> int:
    """What Relax's own planner allocates for the module the TVM backend builds from `g`."""
    from compiler.backends import tvm as tvm_backend
    from compiler.backends.tvm_memory import tvm_planner_bytes
    from compiler.target import Target
    t = Target.parse(target)
    tt = tvm_backend.tvm_target(t)
    return tvm_planner_bytes(tvm_backend.optimize(tvm_backend.lower_to_relax(g, t), tt, t.cpu), tt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=ALL, choices=ALL)
    ap.add_argument("--target", default="llvm")
    args = ap.parse_args()
    from compiler.target import Target
    from passes.memory import ALIGNMENT, l2_bytes, plan
    align, fast = ALIGNMENT[Target.parse(args.target).kind], l2_bytes()
    mb = 1 / 2**20
    print(f"alignment {align} bytes, fast tier {fast * mb:.2f} MiB (per-core L2)\n")
    print("| model | buffers | lower bound MB | greedy MB | arena MB | arena / bound | planner | optimal "
          "| tvm_planner MB | arena / tvm | fast tier: buffers, saved / traffic MB | plan ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        g = final_graph(name, args.target)
        t0 = time.perf_counter()
        p = plan(g, align, fast_bytes=fast)
        ms = (time.perf_counter() - t0) * 1e3
        tvm = relax_bytes(g, args.target)
        tier = p.fast_tier
        print(f"| {name} | {len(p.buffers)} | {p.lower_bound_bytes * mb:.3f} | {p.greedy_bytes * mb:.3f} | "
              f"{p.arena_bytes * mb:.3f} | {p.ratio:.4f} | {p.planner} | {p.optimal} | {tvm * mb:.3f} | "
              f"{p.arena_bytes / tvm if tvm else float('inf'):.3f} | {len(tier.chosen)}, "
              f"{tier.saved_bytes * mb:.2f} / {tier.traffic_bytes * mb:.2f} | {ms:.0f} |", flush=True)


if __name__ == "__main__":
    main()
