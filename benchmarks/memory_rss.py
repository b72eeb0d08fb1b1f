"""What a compiled model's first run() really allocates, against what its memory plan says.

    python benchmarks/memory_rss.py [--models resnet50 bert]

Each model is compiled for llvm and saved; a fresh Python process loads the artifact, makes its
inputs, resets the kernel's peak-RSS counter (/proc/self/clear_refs, 5), calls run() once and reads
VmHWM. The growth (peak during the run minus the RSS before it) is compared with the executable's
arena (tvm_arena: every intermediate at its planned offset, allocated once) plus the largest kernel
workspace (tvm_memory.kernel_workspace_bytes), and with that plus the run's own input staging and
output copies. Relax's own planner (`tvm_planner_bytes`) is printed beside the arena.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import CACHE, export_model  # noqa: E402

CHILD = r"""
import json, sys
import numpy as np
import compiler

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

cm = compiler.load(sys.argv[1])
rng = np.random.default_rng(0)
inputs = []
for _, t in cm.signature.inputs:
    dt = t.dtype.numpy
    if dt.kind in "iu":
        inputs.append(rng.integers(0, 2, t.shape).astype(dt))
    else:
        inputs.append(rng.standard_normal(t.shape).astype(dt))
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS:")
outs = cm.run(*inputs)
outs = outs if isinstance(outs, list) else [outs]
print(json.dumps({"growth": status("VmHWM:") - before, "inputs": sum(x.nbytes for x in inputs),
                  "outputs": sum(o.nbytes for o in outs)}))
"""


def measure(name: str) -> dict:
    import compiler
    path = CACHE / "rss" / f"{name}.dyc"
    path.parent.mkdir(parents=True, exist_ok=True)
    cm = compiler.compile(str(export_model(name)[0]), target="llvm")
    cm.save(path)
    mem = cm.memory
    run = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    child = json.loads(run.stdout.strip().splitlines()[-1])
    return {"name": name, "arena": mem["executable"]["arena_bytes"],
            "workspace": mem["executable"]["workspace_bytes"], "ir_arena": mem["arena_bytes"],
            "bound": mem["lower_bound_bytes"], "relax": mem["tvm_planner_bytes"], **child}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet50", "bert"], choices=["resnet50", "bert"])
    args = ap.parse_args()
    mib = 1 / 2**20
    print("| model | IR arena (bound) MiB | executable arena MiB | Relax planner MiB | largest workspace MiB "
          "| first-run RSS growth MiB | growth / (arena + workspace) | + inputs and 2x outputs MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        r = measure(name)
        planned = r["arena"] + r["workspace"]
        io = r["inputs"] + 2 * r["outputs"]
        print(f"| {name} | {r['ir_arena'] * mib:.2f} ({r['bound'] * mib:.2f}) | {r['arena'] * mib:.2f} | "
              f"{r['relax'] * mib:.2f} | {r['workspace'] * mib:.2f} | {r['growth'] * mib:.2f} | "
              f"{r['growth'] / planned:.3f} | {(planned + io) * mib:.2f} |", flush=True)


if __name__ == "__main__":
    main()
