"""Check and time, on a GPU machine, the folder benchmarks/gpu_prepare.py wrote. That machine needs an
NVIDIA driver (CUDA 13), the Python the folder was prepared for (manifest "python") with numpy >= 2, and
PyTorch for the timing, but not our compilers: the artifacts load through the folder's runtime bundle
alone (PyTorch's models come from examples/).

  1. checks: loads each artifact and compares its outputs with the interpreter's references: bit-exact
     for the integer-only (int8) graphs, norm-relative error <= 1e-3 for fp32 and <= 2e-2 for fp16 (a
     batch > 1 on its sample 0, which is the batch-1 input); and that no compiler module or library got
     loaded. Artifacts run in child processes, so one that crashes its process fails alone.
  2. timing: the CNN, encoder and detector at every batch the folder has, ours (FP32, FP16, INT8, per
     backend) against PyTorch eager FP32 and FP16 on the same device (cudnn.benchmark on: cuDNN times its
     algorithms per conv and keeps the fastest, PyTorch at its best; without it PyTorch's FP16 ResNet-18 at
     batch 32 took 1.67-5.88 ms in different processes; TF32 off for matmuls and convs, so that PyTorch FP32
     is FP32 as ours is: cuDNN's convs default to TF32); the attention against PyTorch's
     scaled_dot_product_attention, math path and default path. Numpy in -> numpy out for all (host
     copies included), median of --repeat runs after 3 warmups; then the same GPU-resident (inputs
     already on the device, outputs left there, synchronized after each call; ours: tvm artifacts).

    python benchmarks/gpu_check.py [--cpu] [--repeat N] [--no-time] [--models M ...] [--profile] [--json FILE] [DIR]
                                                                            (gpu_check.sh runs this)
  DIR         the folder (default out/gpu-check; out/gpu-check-cpu with --cpu), or the DIR.tar.xz that
              gpu_prepare.py --pack wrote (extracted first, into a temporary folder)
  --cpu       the folder holds llvm artifacts (gpu_prepare.py --cpu): check and time on the CPU
  --repeat N  timed runs per model, batch and runtime (default 20)
  --no-time   the checks only
  --models M  only these models (cnn, encoder, detector, attention, ocr)
  --profile   also list each tvm artifact's slowest kernels (the device synchronized around each call)
  --json FILE also write every check's status and every time (and profile) measured, as JSON
Exit status: 0 when every check passed, 1 when one failed, 2 on a usage error.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}
STALL_S = 150           # a child that prints nothing for this long is killed
PROFILE_ROWS = 12       # kernels listed per profiled artifact


# -- the child processes ------------------------------------------------------------------------------
def _setup(folder: Path) -> None:
    sys.path[:0] = [str(folder / "runtime-bundle"), str(ROOT)]  # the bundle first: its `compiler` is the runtime's
    os.environ["DYC_RUNTIME_ONLY"] = "1"     # its loaders even where apache-tvm is installed (--cpu here), whose
                                             # libraries would otherwise load beside the bundle's


def _inputs(folder: Path, model: str, batch: int) -> list:
    from benchmarks.gpu_prepare import batch_input, saved_inputs
    return [batch_input(x, batch) for x in saved_inputs(folder, model)]


def child_check(folder: Path, files: list[str]) -> None:
    """One JSON line per artifact (file, status, seconds), then one of the modules and libraries loaded."""
    import numpy as np

    from benchmarks.gpu_prepare import sliced
    from compiler.diagnostics import CompileError
    from compiler.runtime import load
    manifest = json.loads((folder / "manifest.json").read_text())
    by_file = {a["file"]: a for a in manifest["artifacts"]}
    for file in files:
        a, t0 = by_file[file], time.perf_counter()
        try:
            got = load(folder / file).run(*_inputs(folder, a["model"], a["batch"]))
            with np.load(folder / a["reference"]) as ref:
                status = _compare([sliced(g, a["model"]) for g in got], [ref[f"out_{i}"] for i in range(len(got))],
                                  a["mode"], a.get("outputs"))
        except Exception as e:  # noqa: BLE001  (a failed load or run is a failed check)
            first = " | ".join(ln.strip() for ln in str(e).splitlines()[:3] if ln.strip())[:400]
            status = f"FAIL: {'' if isinstance(e, CompileError) else type(e).__name__ + ': '}{first}"
        print(json.dumps({"file": file, "status": status, "seconds": round(time.perf_counter() - t0, 1)}),
              flush=True)
    modules = [m for m in sys.modules
               if m == "tvm" or m.startswith(("tvm.", "iree.compiler", "compiler.api", "passes"))]
    libs = sorted({line.split()[-1] for line in open("/proc/self/maps")
                   if "libtvm_compiler" in line or "IREECompiler" in line})
    print(json.dumps({"modules": modules, "libraries": libs}), flush=True)


def _compare(got: list, want: list, mode: str, names: list[str] | None = None) -> str:
    """'ok ...' or 'FAIL: ...': each output (its checked part, gpu_prepare.sliced) against the reference; the
    first one that departs is named (by its kernel, where `names` gives them)."""
    import numpy as np

    def label(i: int) -> str:
        return f" ({names[i]})" if names and i < len(names) else ""
    worst = 0.0
    for i, (g, w) in enumerate(zip(got, want)):
        g = np.asarray(g)
        if mode == "int8":
            if not np.array_equal(g, w):
                diff = np.abs(g.astype(np.float64) - w.astype(np.float64))
                return (f"FAIL: output {i}{label(i)} differs at {int((g != w).sum())} of {g.size} elements (max |diff| "
                        f"{diff.max():.3g}, reference max |x| {np.abs(w.astype(np.float64)).max():.3g})")
            continue
        rel = float(np.linalg.norm((g - w).astype(np.float64)) / max(float(np.linalg.norm(w.astype(np.float64))),
                                                                     1e-30))
        if not rel <= TOLERANCE[mode]:
            return f"FAIL: output {i}{label(i)} relative error {rel:.1e} (bound {TOLERANCE[mode]:g})"
        worst = max(worst, rel)
    return "ok (bit-exact)" if mode == "int8" else f"ok (rel {worst:.0e})"


def median_ms(fn, repeat: int) -> float:
    from benchmarks.common import time_ms      # numpy only
    return time_ms(fn, 3, repeat)


def child_time(folder: Path, model: str, batch: int, files: list[str], device: str, repeat: int,
               profile: bool = False) -> None:
    """One JSON line: PyTorch's times and ours (file -> ms) for `model` at `batch`, numpy in and out and
    (`resident`) with the inputs already on the device; with `profile`, each tvm artifact's slowest kernels."""
    import torch

    from benchmarks.gpu_prepare import torch_model
    from compiler.runtime import load
    dev = torch.device("cuda" if device == "gpu" else "cpu")
    torch.backends.cudnn.benchmark = True     # PyTorch at its best: cuDNN picks each conv's algorithm by timing it
    torch.backends.cudnn.allow_tf32 = False   # FP32 against FP32: cuDNN's convs default to TF32 (10-bit mantissas)
    torch.backends.cuda.matmul.allow_tf32 = False
    xs = _inputs(folder, model, batch)
    net = torch_model(model).to(dev)
    ref = {}
    for dtype_name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        if dtype == torch.float16 and device != "gpu":
            continue
        net = net.to(dtype)
        for mod in net.modules():       # YOLO's head caches its anchors per input shape (and dtype)
            if hasattr(mod, "anchors"):
                mod.shape = None
        if model == "attention":
            from torch.nn.attention import SDPBackend, sdpa_kernel
            for path, backends in (("math", [SDPBackend.MATH]), ("default", None)):
                def run_sdpa(backends=backends, dtype=dtype):
                    ts = [torch.from_numpy(x).to(dev).to(dtype) for x in xs]
                    with torch.no_grad(), (sdpa_kernel(backends) if backends else _null()):
                        return net(*ts).float().cpu().numpy()
                ref[f"{path} {dtype_name}"] = median_ms(run_sdpa, repeat)
            continue

        def run_torch(dtype=dtype):
            ts = [torch.from_numpy(x).to(dev) for x in xs]
            ts = [t.to(dtype) if t.is_floating_point() else t for t in ts]
            with torch.no_grad():
                y = net(*ts)
            return (y[0] if isinstance(y, (tuple, list)) else y).float().cpu().numpy()
        ref[dtype_name] = median_ms(run_torch, repeat)
        resident = [torch.from_numpy(x).to(dev) for x in xs]
        resident = [t.to(dtype) if t.is_floating_point() else t for t in resident]

        def run_resident(ts=resident):
            with torch.no_grad():
                net(*ts)
            if device == "gpu":
                torch.cuda.synchronize()
        ref[f"resident {dtype_name}"] = median_ms(run_resident, repeat)
    net = resident = None
    if device == "gpu":
        torch.cuda.empty_cache()
    ours, ours_resident, profiles, errors = {}, {}, {}, {}
    for file in files:
        try:
            m = load(folder / file)
            ours[file] = median_ms(lambda m=m: m.run(*xs), repeat)
            exe = m.executable
            if hasattr(exe, "time_resident"):            # tvm: the runtime's own device-side timing
                ours_resident[file] = exe.time_resident(xs, 3, repeat)
                if profile:
                    profiles[file] = exe.profile(xs)[:PROFILE_ROWS]
            del m, exe
        except Exception as e:  # noqa: BLE001  (passed its check, fails timed: say so, time the rest)
            errors[file] = (str(e).splitlines() or [""])[0][:200]
    print(json.dumps({"torch": ref, "ours": ours, "resident": ours_resident, "profiles": profiles,
                      "errors": errors,
                      "device": torch.cuda.get_device_name(0) if device == "gpu" else "CPU",
                      "torch_version": torch.__version__,
                      "tf32": bool(torch.backends.cuda.matmul.allow_tf32),
                      "tf32_conv": bool(torch.backends.cudnn.allow_tf32),
                      "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}), flush=True)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# -- the parent ----------------------------------------------------------------------------------------
def _spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def _lines(proc: subprocess.Popen):
    """The child's JSON lines; stops (killing it) when it stalls for STALL_S."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while True:
        if not sel.select(STALL_S):
            proc.kill()
            break
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("{"):
            yield json.loads(line)
    proc.wait()


# an IREE artifact that raised on the GPU runs once more with the CUDA driver's transients allocated synchronously
# (not stream-ordered): a failure first reported by a later queue.dealloca then names its cause or goes away
IREE_RETRY = {"DYC_IREE_FLAGS": "--cuda_async_allocations=false"}


def _raised(status: str) -> bool:
    """A failed check that raised (rather than computed a wrong output)."""
    return status.startswith("FAIL:") and not status.startswith("FAIL: output")


def _check_one(folder: Path, device: str, file: str, reports: list[dict], env: dict[str, str] | None = None) -> str:
    """Check artifact `file` in a process of its own (with `env` added); prints and returns its status, appends
    the process's report of loaded modules and libraries to `reports`."""
    status = None
    proc = _spawn(["--child-check", str(folder), device, file], env)
    for line in _lines(proc):
        if "file" in line:
            status = line["status"]
            print(f"  {file}{' with ' + ' '.join(env.values()) if env else ''}: {status} ({line['seconds']} s)",
                  flush=True)
        else:
            reports.append(line)
    if status is None:          # the child died or stalled
        status = f"FAIL: the process died (exit {proc.returncode})" if proc.returncode else "FAIL: no answer"
        print(f"  {file}: {status}", flush=True)
    return status


def run_checks(folder: Path, artifacts: list[dict], device: str) -> tuple[dict, dict]:
    """file -> status, and the modules/libraries the children loaded. Each artifact runs in a
    process of its own: an IREE device that one artifact's error leaves broken fails the next ones too."""
    status: dict[str, str] = {}
    reports: list[dict] = []
    for a in artifacts:
        file = a["file"]
        status[file] = _check_one(folder, device, file, reports)
        if a["backend"] == "mlir" and device == "gpu" and _raised(status[file]):
            again = _check_one(folder, device, file, reports, IREE_RETRY)
            status[file] += f" [{IREE_RETRY['DYC_IREE_FLAGS']}: {again}]"
    report = {"modules": sorted({m for r in reports for m in r["modules"]}),
              "libraries": sorted({x for r in reports for x in r["libraries"]})} if reports else {}
    return status, report


def _fmt(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def run_timing(folder: Path, manifest: dict, status: dict, device: str, repeat: int,
               profile: bool = False) -> dict:
    """Times the folder's models (a child process per model and batch), prints the tables; returns what each
    child measured, keyed "model/batch" (None where it failed)."""
    from benchmarks.gpu_prepare import MODELS
    arts = [a for a in manifest["artifacts"] if status.get(a["file"], "").startswith("ok")]
    groups = sorted({(a["model"], a["batch"]) for a in arts}, key=lambda k: (list(MODELS).index(k[0]), k[1]))
    results = {}
    for model, batch in groups:
        files = [a["file"] for a in arts if (a["model"], a["batch"]) == (model, batch)]
        got = list(_lines(_spawn(["--child-time", str(folder), device, model, str(batch), str(repeat),
                                  "1" if profile else "0", *files])))
        results[(model, batch)] = got[0] if got else None
        print(f"  timed {model} batch {batch}" + ("" if got else ": the process failed"), flush=True)
        for file, why in (got[0]["errors"] if got else {}).items():
            print(f"    {file}: failed when timed: {why}", flush=True)
    measured = {f"{m}/{b}": r for (m, b), r in results.items()}
    first = next((r for r in results.values() if r), None)
    if first is None:
        return measured
    print(f"\n{first['device']}; PyTorch {first['torch_version']} eager (TF32 matmul "
          f"{'on' if first['tf32'] else 'off'}, conv {'on' if first.get('tf32_conv', True) else 'off'}, cudnn.benchmark {'on' if first.get('cudnn_benchmark') else 'off'}); "
          f"numpy in -> numpy out; median of {repeat} runs, ms\n")
    print("| model | batch | ours | FP32 | FP16 | INT8 | PyTorch FP32 | PyTorch FP16 | FP32 / PyTorch FP32 "
          "| FP16 / PyTorch FP16 | INT8 / PyTorch FP16 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (model, batch), r in results.items():
        if model == "attention" or r is None:
            continue
        for backend in ("tvm", "mlir"):
            t = {a["mode"]: r["ours"].get(a["file"]) for a in arts
                 if (a["model"], a["batch"], a["backend"]) == (model, batch, backend)}
            if not t:
                continue
            pt32, pt16 = r["torch"].get("fp32"), r["torch"].get("fp16")
            row = [MODELS[model][0].split(",")[0].split(":")[0], str(batch), backend,
                   *(_fmt(t.get(m)) for m in ("fp32", "fp16", "int8")), _fmt(pt32), _fmt(pt16),
                   _ratio(t.get("fp32"), pt32), _ratio(t.get("fp16"), pt16), _ratio(t.get("int8"), pt16)]
            print("| " + " | ".join(row) + " |")
    print(f"\nthe same, GPU-resident: inputs already on the device, outputs left there, synchronized after "
          f"each call (ours: tvm artifacts); median of {repeat} runs, ms\n")
    print("| model | batch | FP32 | FP16 | INT8 | PyTorch FP32 | PyTorch FP16 | FP32 / PyTorch FP32 "
          "| FP16 / PyTorch FP16 | INT8 / PyTorch FP16 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (model, batch), r in results.items():
        t = {a["mode"]: r["resident"].get(a["file"]) for a in arts if r is not None
             and (a["model"], a["batch"], a["backend"]) == (model, batch, "tvm")}
        if model == "attention" or r is None or not any(t.values()):
            continue
        pt32, pt16 = r["torch"].get("resident fp32"), r["torch"].get("resident fp16")
        row = [MODELS[model][0].split(",")[0].split(":")[0], str(batch),
               *(_fmt(t.get(m)) for m in ("fp32", "fp16", "int8")), _fmt(pt32), _fmt(pt16),
               _ratio(t.get("fp32"), pt32), _ratio(t.get("fp16"), pt16), _ratio(t.get("int8"), pt16)]
        print("| " + " | ".join(row) + " |")
    for r in results.values():
        for file, rows in (r or {}).get("profiles", {}).items():
            print(f"\n{file}: slowest kernels (ms per run, device synchronized around each call)")
            for name, calls, ms in rows:
                print(f"  {ms:8.3f}  {calls:3d}x  {name}")
    r = results.get(("attention", 1))
    if r:
        print(f"\n{MODELS['attention'][0]}; PyTorch scaled_dot_product_attention, ms\n")
        print("| ours | precision | ours ms | SDPA math | SDPA default | ours / math | ours / default |")
        print("|---|---|---|---|---|---|---|")
        for a in arts:
            if a["model"] == "attention":
                ms, p = r["ours"].get(a["file"]), a["mode"]
                math, dflt = r["torch"].get(f"math {p}"), r["torch"].get(f"default {p}")
                print(f"| {a['backend']} | {p} | {_fmt(ms)} | {_fmt(math)} | {_fmt(dflt)} | {_ratio(ms, math)} "
                      f"| {_ratio(ms, dflt)} |")
    return measured


def unpack(archive: Path) -> Path:
    """The folder inside gpu_prepare.py --pack's archive, extracted into a fresh temporary folder."""
    import tarfile
    import tempfile
    into = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    t0 = time.perf_counter()
    with tarfile.open(archive, "r:xz") as tar:
        tar.extractall(into, filter="data")
    (folder,) = into.iterdir()
    print(f"{archive.name}: extracted to {folder} in {time.perf_counter() - t0:.1f} s", flush=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child-check":
        _setup(Path(argv[1]))
        child_check(Path(argv[1]), argv[3:])
        return 0
    if argv and argv[0] == "--child-time":
        folder, device, model, batch, repeat, profile, *files = argv[1:]
        _setup(Path(folder))
        child_time(Path(folder), model, int(batch), files, device, int(repeat), profile == "1")
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", default=None, help="the prepared folder, or its .tar.xz (gpu_prepare --pack)")
    ap.add_argument("--cpu", action="store_true", help="the folder holds llvm artifacts: check and time on the CPU")
    ap.add_argument("--repeat", type=int, default=20, help="timed runs per model, batch and runtime (default 20)")
    ap.add_argument("--no-time", action="store_true", help="the checks only")
    ap.add_argument("--models", nargs="+", default=None, help="only these models (cnn, encoder, detector, attention, ocr)")
    ap.add_argument("--profile", action="store_true", help="also list each tvm artifact's slowest kernels")
    ap.add_argument("--json", default=None, metavar="FILE",
                    help="also write every check's status, time and profile to FILE as JSON")
    args = ap.parse_args(argv)
    device = "cpu" if args.cpu else "gpu"
    folder = Path(args.dir or ROOT / "out" / ("gpu-check-cpu" if args.cpu else "gpu-check")).resolve()
    if folder.name.endswith(".tar.xz") and folder.is_file():
        folder = unpack(folder)
    if not (folder / "manifest.json").is_file():
        print(f"gpu_check: no {folder}/manifest.json; run benchmarks/gpu_prepare.py", file=sys.stderr)
        return 2
    manifest = json.loads((folder / "manifest.json").read_text())
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if manifest["python"] != here:
        print(f"gpu_check: the runtime bundle is built for Python {manifest['python']}, this is {here}; "
              f"run it with a python{manifest['python']} (or prepare with --python {here})", file=sys.stderr)
        return 2
    import numpy as np
    if int(np.__version__.split(".")[0]) < 2:
        print(f"gpu_check: the runtime bundle needs numpy >= 2 (its ml_dtypes does); this is {np.__version__}",
              file=sys.stderr)
        return 2
    os.environ.setdefault("DYC_CUDA_CACHE", str(folder / "cuda_cache"))    # the tvm kernels, compiled ahead
    off = manifest.get("disabled_passes") or []
    print(f"{folder}: {manifest['target']}" + (f", without {' '.join(off)}" if off else "")
          + (", int8 with the integer attention kernel (q.attention)" if manifest.get("integer_attention") else "")
          + (", the binary-code attention (mfree.binary_attention)" if manifest.get("shiftadd_attention") else ""),
          flush=True)
    if args.models:
        manifest["artifacts"] = [a for a in manifest["artifacts"] if a["model"] in args.models]
        manifest["not_built"] = [a for a in manifest["not_built"] if a["model"] in args.models]
    status, report = run_checks(folder, manifest["artifacts"], device)
    for a in manifest["not_built"]:
        print(f"  {a['file']}: not built: {a['why']}")
    print(f"compiler modules loaded: {report.get('modules') or 'none'}; "
          f"compiler libraries mapped: {report.get('libraries') or 'none'}", flush=True)
    failed = [f for f, s in status.items() if not s.startswith("ok")]
    if report.get("modules") or report.get("libraries") or not report:
        failed.append("imports")
    timing = None
    if not args.no_time:
        sys.path.insert(0, str(ROOT))
        timing = run_timing(folder, manifest, status, device, args.repeat, args.profile)
    if args.json:
        Path(args.json).write_text(json.dumps({"folder": str(folder), "target": manifest["target"],
                                               "disabled_passes": off,
                                               "integer_attention": bool(manifest.get("integer_attention")),
                                               "shiftadd_attention": bool(manifest.get("shiftadd_attention")),
                                               "checks": status, "timing": timing,
                                               "repeat": args.repeat}, indent=1))
    if failed:
        print(f"\ngpu_check: {len(failed)} check(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
