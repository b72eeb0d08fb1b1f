#!/usr/bin/env bash
# Check and time, on a GPU machine, the folder benchmarks/gpu_prepare.py wrote. That machine needs an
# NVIDIA driver (CUDA 13), Python 3.11 with numpy >= 2, and PyTorch for the timing, but not our compilers:
# the artifacts load through the folder's runtime bundle alone (PyTorch's models come from examples/).
#   1. loads each artifact and checks its outputs against the interpreter's references: bit-exact for the
#      integer-only (int8) graphs, norm-relative error <= 1e-3 for fp32 (a batch > 1 on its sample 0,
#      which is the batch-1 input), and that no compiler module or library got loaded;
#   2. times the CNN, encoder and detector at every batch the folder has: ours (FP32 and INT8, per backend)
#      against PyTorch eager FP32 on the same device, numpy in -> numpy out for both (host copies
#      included), median of --repeat runs after 3 warmups; prints one markdown table.
#
# Usage: benchmarks/gpu_check.sh [--cpu] [--repeat N] [--no-time] [DIR]
#   DIR         the folder (default out/gpu-check; out/gpu-check-cpu with --cpu)
#   --cpu       the folder holds llvm artifacts (gpu_prepare.py --cpu): check and time on the CPU,
#               to try this script on a machine without a GPU
#   --repeat N  timed runs per model, batch and runtime (default 20)
#   --no-time   the checks only
# Environment: PYTHON (default python3), TIMEOUT in seconds for the whole run (default 470).
# Exit status: 0 when every check passed, 1 when one failed, 2 on a usage error.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEVICE=gpu REPEAT=20 TIMING=1 DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) DEVICE=cpu ;;
    --repeat) REPEAT="${2:?--repeat needs a number}"; shift ;;
    --no-time) TIMING=0 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "gpu_check: unknown flag $1 (see --help)" >&2; exit 2 ;;
    *) DIR="$1" ;;
  esac
  shift
done
[ -n "$DIR" ] || DIR="$ROOT/out/gpu-check$([ "$DEVICE" = cpu ] && echo -cpu || true)"
if [ ! -f "$DIR/manifest.json" ]; then
  echo "gpu_check: no $DIR/manifest.json; run benchmarks/gpu_prepare.py" >&2; exit 2
fi
export DYC_CUDA_CACHE="$DIR/cuda_cache"    # the tvm artifacts' kernels, compiled ahead

exec timeout "${TIMEOUT:-470}" "${PYTHON:-python3}" - "$DIR" "$DEVICE" "$REPEAT" "$TIMING" "$ROOT" <<'PY'
import json, statistics, sys, time
from pathlib import Path

folder, device, root = Path(sys.argv[1]), sys.argv[2], sys.argv[5]
repeat, timing = int(sys.argv[3]), sys.argv[4] == "1"
manifest = json.loads((folder / "manifest.json").read_text())
if manifest["python"] != f"{sys.version_info.major}.{sys.version_info.minor}":
    sys.exit(f"gpu_check: the runtime bundle is built for Python {manifest['python']}, this is "
             f"{sys.version.split()[0]}; set PYTHON to a python{manifest['python']}")
sys.path[:0] = [str(folder / "runtime-bundle"), root]     # the bundle first: its `compiler` is the runtime's
import numpy as np
if int(np.__version__.split(".")[0]) < 2:
    sys.exit(f"gpu_check: the runtime bundle needs numpy >= 2 (its ml_dtypes does); this is {np.__version__}")
from benchmarks.gpu_prepare import MODELS, batch_input    # numpy only
from compiler.diagnostics import CompileError
from compiler.runtime import load

x1 = {m: np.load(folder / d["input"])["x"] for m, d in manifest["models"].items()}

def median_ms(fn):
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)

def check(m, a):
    """'ok', or what differs: each output (of sample 0, the batch-1 input) against the reference."""
    ref = np.load(folder / a["reference"])
    got = m.run(batch_input(x1[a["model"]], a["batch"]))
    for i, g in enumerate(got):
        want, g = ref[f"out_{i}"], g[:1]
        if a["mode"] == "int8":
            if not np.array_equal(g, want):
                return f"FAIL: output {i} differs at {int((g != want).sum())} of {g.size} elements"
        else:
            rel = float(np.linalg.norm((g - want).astype(np.float64)) / max(np.linalg.norm(want), 1e-30))
            if not rel <= 1e-3:
                return f"FAIL: output {i} relative error {rel:.1e}"
    return "ok"

print(f"{folder}: {manifest['target']}", flush=True)
models, status = {}, {}
for a in manifest["artifacts"]:
    key = (a["model"], a["batch"], a["backend"], a["mode"])
    t0 = time.perf_counter()
    try:
        models[key] = load(folder / a["file"])
        status[key] = check(models[key], a)
    except Exception as e:  # a failed load or run is a failed check; the others still run
        first = (str(e).splitlines() or [""])[0][:200]
        kind = "" if isinstance(e, CompileError) else f"{type(e).__name__}: "
        status[key] = f"FAIL: {kind}{first}"
    print(f"  {a['file']}: {status[key]} ({time.perf_counter() - t0:.1f} s)", flush=True)
for a in manifest["not_built"]:
    print(f"  {a['file']}: not built: {a['why']}")
compilers = [m for m in sys.modules
             if m == "tvm" or m.startswith(("tvm.", "iree.compiler", "compiler.api", "passes"))]
libs = {l.split()[-1] for l in open("/proc/self/maps") if "libtvm_compiler" in l or "IREECompiler" in l}
print(f"compiler modules loaded: {compilers or 'none'}; compiler libraries mapped: {sorted(libs) or 'none'}")
failed = [k for k, s in status.items() if s != "ok"] + (["imports"] if compilers or libs else [])

if timing:
    import torch
    from benchmarks.gpu_prepare import torch_model
    dev = torch.device("cuda" if device == "gpu" else "cpu")
    tf32 = "on" if torch.backends.cudnn.allow_tf32 else "off"
    name = (f"{torch.cuda.get_device_name(0)} (cudnn TF32 {tf32})" if device == "gpu"
            else f"CPU, {torch.get_num_threads()} threads")
    print(f"\n{name}; PyTorch {torch.__version__} eager FP32; numpy in -> numpy out; "
          f"median of {repeat} runs, ms\n")
    print("| model | batch | ours | check FP32 | check INT8 | ours FP32 | ours INT8 | PyTorch FP32 "
          "| FP32 / PyTorch | INT8 / PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for model, batch in sorted({k[:2] for k in status}, key=lambda k: (list(MODELS).index(k[0]), k[1])):
        x = batch_input(x1[model], batch)
        net = torch_model(model).to(dev)
        def run_torch():
            with torch.no_grad():
                y = net(torch.from_numpy(x).to(dev))
            return (y[0] if isinstance(y, (tuple, list)) else y).cpu().numpy()
        ref_ms = median_ms(run_torch)
        for backend in sorted({k[2] for k in status if k[:2] == (model, batch)}, reverse=True):
            row = [MODELS[model][0].split(",")[0].split(":")[0], str(batch), backend]
            ours = {}
            for mode in ("fp32", "int8"):
                key = (model, batch, backend, mode)
                ok = status.get(key, "not built")
                ours[mode] = median_ms(lambda: models[key].run(x)) if ok == "ok" else None
                row.append("FAIL" if ok.startswith("FAIL") else ok)
            row += [f"{ours[k]:.2f}" if ours[k] else "-" for k in ("fp32", "int8")] + [f"{ref_ms:.2f}"]
            row += [f"{ours[k] / ref_ms:.2f}x" if ours[k] else "-" for k in ("fp32", "int8")]
            print("| " + " | ".join(row) + " |", flush=True)
        del net
        if device == "gpu":
            torch.cuda.empty_cache()

if failed:
    print(f"\ngpu_check: {len(failed)} check(s) failed", file=sys.stderr)
sys.exit(1 if failed else 0)
PY
