"""INT8 matmuls and 3x3 convs on Intel AMX: the same integer-only model built for this host (AMX where it has
AMX-INT8) and for a VNNI-only CPU, both bit-exact with the reference interpreter, timed side by side.

The encoder's linear layers and attention's Q K^T / P V (`--model encoder`), or the YOLOv8n detector's 3x3 convs
on 32 or more channels (`--model yolov8n`, the torch port of examples/real_arch, 320 x 320, calibrated on
photographs), take the AMX kernels (compiler/backends/tvm_kernels/amx.py, qconv2d_amx.py: the whole reduction of
a block of 16x16 int32 tiles in tile registers, tdpbusd) where the target CPU has AMX-INT8 and the shape fits;
everything else is the same build. On a host without AMX the script builds the AMX variant for `sapphirerapids`
and shows its machine code has tile instructions, but cannot run it.

    python examples/amx_int8.py [--model encoder|yolov8n] [--layers 2 --hidden 384 --seq 128]
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
from compiler.host import cpu_features, host_cpu_flags, host_cpu_name  # noqa: E402
from examples import zoo  # noqa: E402

VNNI_CPU = "icelake-server"      # AVX-512 VNNI and VBMI, no AMX
KERNELS = ("qmatmul", "qbmm", "qconv2d")


def export(args, folder: Path) -> tuple[Path, list, np.ndarray]:
    """(ONNX file, calibration batches, input) of the model `args` names."""
    if args.model == "yolov8n":
        from examples.real_arch import export_onnx
        from examples.real_arch.photos import photo_batch
        path, _ = export_onnx("yolov8n", folder / "yolov8n.onnx")
        return path, list(photo_batch(320, 8, seed=0)[:, None]), photo_batch(320, 1, seed=7)
    torch.manual_seed(0)
    model = zoo.BertEncoder(1000, args.hidden, args.hidden // 64, 4 * args.hidden, args.layers, args.seq).eval()
    rng = np.random.default_rng(0)
    calib = [rng.integers(0, 1000, (1, args.seq)).astype(np.int64) for _ in range(4)]
    x = rng.integers(0, 1000, (1, args.seq)).astype(np.int64)
    path = folder / "encoder.onnx"
    zoo.export_onnx(model, torch.from_numpy(x), path, input_name="ids")
    return path, calib, x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["encoder", "yolov8n"], default="encoder")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    host = host_cpu_name()
    runs_amx = "amx_int8" in host_cpu_flags() and "amx-int8" in cpu_features(host)
    amx_cpu = host if runs_amx else "sapphirerapids"
    kw = dict(quantize="int8", integer_only=True)
    with tempfile.TemporaryDirectory() as d:
        path, calib, x = export(args, Path(d))
        kw["calibration"] = calib
        amx = compiler.compile(str(path), f"llvm -mcpu={amx_cpu} -num-threads=1", **kw)
        if not runs_amx:
            asm = amx.executable.source("asm")
            print(f"this host ({host}) has no AMX-INT8: built for {amx_cpu} only, not run; tile instructions in "
                  f"its machine code: {asm.count('tdpbusd')} tdpbusd, {asm.count('ldtilecfg')} ldtilecfg")
            return
        vnni = compiler.compile(str(path), f"llvm -mcpu={VNNI_CPU} -num-threads=1", **kw)
    ref = compiler.interp.run(amx.graph, x)
    for name, cm in ((f"AMX ({amx_cpu})", amx), (f"VNNI ({VNNI_CPU})", vnni)):
        exact = all(np.array_equal(a, b) for a, b in zip(cm.run(x), ref))
        kernels = cm.profile(x, runs=5)["kernels"]
        ours = sum(ms for k, _, ms in kernels if k.startswith(KERNELS))
        names = sorted({k.rsplit("_", 1)[0] for k, _, _ in kernels if k.startswith(KERNELS)})
        print(f"{name}: bit-exact with the interpreter: {exact}; kernels {names}: {ours:.3f} ms per run")
    ms = {}
    for _ in range(3):                      # alternate the two builds
        for name, cm in (("amx", amx), ("vnni", vnni)):
            ms.setdefault(name, []).append(cm.benchmark(x, warmup=3, repeat=20)["median_ms"])
    a, v = (float(np.median(ms[k])) for k in ("amx", "vnni"))
    print(f"latency, 1 thread, median of 3 x 20: AMX {a:.3f} ms, VNNI {v:.3f} ms ({v / a:.2f}x)")


if __name__ == "__main__":
    main()
