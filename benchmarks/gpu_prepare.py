"""Prepare the GPU check, here, where the compilers are (no GPU needed): one folder that
benchmarks/gpu_check.sh checks and times on a GPU machine that has CUDA, PyTorch and onnxruntime but
not our compilers. The folder (at most --max-mb) holds:

    runtime-bundle/                         compiler/tools/runtime_bundle.py: loads .dyc with no compiler
    <model>_<mode>_b<batch>_<backend>.dyc   compiled for 'cuda -arch=sm_90' (llvm with --cpu)
    <model>_input.npz                       the fixed batch-1 inputs (saved_inputs() reads them)
    <model>_<mode>_<backend>.npz            the interpreter's outputs on it (out_0, out_1, ...)
    cuda_cache/                             the tvm artifacts' CUDA C compiled here (tvm_runtime.cuda_binary)
    manifest.json                           target, models, artifacts, what could not be built

With --pack the folder also goes into DIR.tar.xz, which is what travels (and what --max-mb limits): xz takes
the runtime bundle's 16 MB of libraries to ~4 MB and the artifacts to about two thirds, so a folder without
the fused kernels (--disable-pass) fits beside the full one. gpu_check.py takes the archive as its DIR.

Models (MODELS; torch_model() builds each for PyTorch eager too; seeded weights, BatchNorm statistics
randomized): cnn = ResNet-18 (examples/zoo.py), 3x224x224; encoder = BERT-small (zoo.BertEncoder: 4
layers, hidden 512, 8 heads, FFN 2048, seq 128, vocab 1000); detector = YOLOv8n (examples/real_arch),
3x320x320; attention = one attention of 12 heads, seq 4096, d 64 (q, k, v in; batch 1 only, no int8);
ocr = the CRNN of examples/crnn.py (hidden 256, 1x16x128 images, 64 steps; its output is time-major; only with
--models: its integer-only INT8 is refused, there is no integer LSTM).
Modes: fp32; fp16 (--precision fp16: float16 compute, the references the interpreter's float16 run of
the same graph); int8 = integer-only INT8 calibrated on two seeded batches (a larger batch on the same
samples repeated, so every batch size gets the same integer graph).

Weights: in the final IR every constant of 16 KiB or more becomes a seeded sample of its own values
repeated with a prime period (PERIOD elements), so the artifacts compress ~60x (ResNet-18 FP32: 49 MB
of library -> 0.8 MB) and the folder fits; the references are the interpreter's on that same graph. A weight
packed for a CPU kernel (--cpu) keeps its padding, which the kernel multiplies (periodic_weights).
A batch > 1 runs batch_input(): its sample 0 is the batch-1 input, the others rolled copies of it (no
random numbers on the checking side, whose numpy may be another version).

    python benchmarks/gpu_prepare.py [-o DIR] [--cpu] [--batch 1 32] [--models cnn encoder detector
                                     attention ocr] [--modes fp32 fp16 int8] [--backends tvm mlir]
                                     [--max-mb 64] [--python X.Y] [--kernel-outputs] [--int8 mma|dp4a]
                                     [--mma sync|wmma]
                                     [--disable-pass NAME ...] [--integer-attention]
                                     [--shiftadd-attention] [--pack]
  -o DIR      the folder, replaced (default out/gpu-check; out/gpu-check-cpu with --cpu)
  --cpu       compile for llvm (this CPU), batches 1 2 by default: to try gpu_check.sh --cpu here
  --batch     batch sizes (default 1 32)
  --models, --modes   subsets of the above
  --backends  tvm (CUDA C, its kernels compiled ahead into cuda_cache/) and/or mlir (IREE: PTX in the
              vmfb); default both. What a backend cannot build is listed in the manifest and skipped.
  --max-mb    fail if the folder is larger (default 64)
  --kernel-outputs  every kernel's result an output of the artifact too (and of its reference): the check
              then names the first kernel that departs from the interpreter (for finding a backend's bug)
  --int8      the cuda int8 convs / matmuls on tensor cores (mma, the default) or with dp4a (the target
              option -int8=)
  --mma       the tensor cores through mma.sync and ldmatrix (sync, the default) or WMMA (wmma: the baseline;
              the target option -mma=)
  --disable-pass  compile without these passes (e.g. fuse_kernels fuse_attention: every op its own kernel, the
              baseline the fused kernels are timed against: prepare a second, smaller folder with it, e.g.
              --models cnn attention --modes int8 fp32 --backends tvm, and check both in one session;
              assign_gpu_layouts: the convs on NCHW, the baseline of the GPU's blocked layouts; or
              choose_tiles: every tensor-core GEMM on the rule's block tile, the baseline of the tile model's)
  --integer-attention  int8 with integer_attention=True: each integer attention of the encoder one q.attention
              kernel (opt-in; a folder of its own, e.g. --models encoder --modes int8)
  --shiftadd-attention  fp32 / fp16 with shiftadd_attention=True: each softmax attention ShiftAddViT's binary-code
              attention (mfree.binary_attention; changes the output, so the reference is the interpreter's on
              that graph, as always; a folder of its own, e.g. --models encoder --modes fp32)
  --pack      also write DIR.tar.xz (xz -9) and limit its size, not the folder's, by --max-mb
  --python    the CPython version of the checking machine (default this one's; its runtime bundle's
              extension modules then come from pip download, see compiler/tools/runtime_bundle.py)
"""
from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

GPU_TARGET = "cuda -arch=sm_90"
SEED = 0
PERIOD = 2039                  # elements; prime, so the repeats line up with no tensor dimension
MIN_CONST_BYTES = 16384
# name -> (description, input name, per-sample input shape, input dtype)
MODELS = {
    "cnn": ("ResNet-18, 3x224x224", "input", (3, 224, 224), "float32"),
    "encoder": ("BERT-small: 4 layers, hidden 512, seq 128", "ids", (128,), "int64"),
    "detector": ("YOLOv8n, 3x320x320", "images", (3, 320, 320), "float32"),
    "attention": ("attention: 12 heads, seq 4096, d 64", "q", (12, 4096, 64), "float32"),
    "ocr": ("CRNN: conv stack, bidirectional 2-layer LSTM (hidden 256, 64 steps)", "x", (1, 16, 128), "float32"),
}
DEFAULT_MODELS = ("cnn", "encoder", "detector", "attention")     # ocr on request (--models ocr)
MODES = ("fp32", "fp16", "int8")
ATTENTION = {"heads": 12, "length": 4096, "d": 64}
VOCAB = 1000


def torch_model(name: str, seed: int = SEED):
    """The PyTorch module of model `name`, eval mode, seeded (needs torch and this repo's examples/).
    The attention is F.scaled_dot_product_attention on (q, k, v): the backend is the caller's choice."""
    import torch

    from examples import zoo
    torch.manual_seed(seed)
    if name == "attention":
        class Attention(torch.nn.Module):
            def forward(self, q, k, v):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return Attention().eval()
    if name == "ocr":
        from examples.crnn import crnn
        return crnn(hidden=256, width=128, batch=1, seed=seed)[0]
    if name == "cnn":
        model = zoo.ResNet([2, 2, 2, 2], [64, 128, 256, 512], False, 1000, 64, True)
    elif name == "encoder":
        model = zoo.BertEncoder(vocab=VOCAB, hidden=512, heads=8, ffn=2048, layers=4, seq=128)
    else:
        from examples.real_arch import MODELS as REAL
        model = REAL["yolov8n"][0]()
    return zoo.randomize_batch_norm(model, seed).eval()


def inputs(name: str, batch: int, seed: int) -> list[np.ndarray]:
    """Seeded inputs of model `name`: Gaussian images, uniform token ids; for the attention q, k, v from
    hashed() (the checking side computes them: 38 MB would not fit in the folder)."""
    _, _, shape, dtype = MODELS[name]
    if name == "attention":
        return [hashed((batch, *shape), seed * 3 + i) for i in range(3)]
    rng = np.random.default_rng(seed)
    if dtype == "int64":
        return [rng.integers(0, VOCAB, (batch, *shape), dtype=np.int64)]
    return [rng.standard_normal((batch, *shape), dtype=np.float32)]


def hashed(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """float32 of unit variance, uniform in [-sqrt 3, sqrt 3), from an integer hash of each element's index
    (splitmix64's mixer): the same bits on every numpy version, unlike its random generators."""
    m = np.uint64((2**64 - 1))
    h = np.arange(int(np.prod(shape)), dtype=np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) & int(m))
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    u = (h >> np.uint64(40)).astype(np.float32) / np.float32(2**24)
    return ((u - np.float32(0.5)) * np.float32(2 * 3**0.5)).reshape(shape)


def saved_inputs(folder: Path, name: str) -> list[np.ndarray]:
    """The batch-1 inputs of model `name` in a prepared folder."""
    if name == "attention":
        return inputs(name, 1, SEED + 1)
    with np.load(folder / f"{name}_input.npz") as z:
        return [z[k] for k in sorted(z.files)]


def sliced(y: np.ndarray, name: str) -> np.ndarray:
    """The part of output `y` that is checked: sample 0 (the batch-1 input; the CRNN's output is time-major);
    of the attention, head 0 alone (the whole reference would take 12.6 MB per mode and backend)."""
    if name == "ocr":
        return y[:, :1]
    return y[:1, :1] if name == "attention" else y[:1]


def batch_input(x1: np.ndarray, batch: int) -> np.ndarray:
    """The input of a batch-`batch` run made from the batch-1 input `x1`: sample k is x1 rolled by k
    along its last axis, so sample 0 is x1 (checked against the batch-1 reference)."""
    return np.concatenate([np.roll(x1, k, axis=-1) for k in range(batch)])


# -- compiling ---------------------------------------------------------------------------------------
def _model(name: str, batch: int, folder: Path):
    """What the compiler takes for model `name`: the attention as our IR graph, the others as ONNX."""
    if name == "attention":
        from benchmarks.attention_vs_torch import attention_graph
        return attention_graph(ATTENTION["heads"], ATTENTION["length"], ATTENTION["d"])
    return str(_onnx(name, batch, folder))


def _onnx(name: str, batch: int, folder: Path) -> Path:
    import torch

    from examples.zoo import export_onnx
    path = folder / f"{name}_b{batch}.onnx"
    if path.exists():           # exported for another mode or backend
        return path
    model, x = torch_model(name), torch.from_numpy(inputs(name, batch, SEED)[0])
    with torch.no_grad():
        model(x)                # a dry run caches YOLO's anchors, as ultralytics' exporter does
    return export_onnx(model, x, path, input_name=MODELS[name][1])


def _nodes(g) -> list:
    """Every node of `g` and of its fused kernels' bodies."""
    from compiler.ir import Graph
    found, stack = [], [g]
    while stack:
        h = stack.pop()
        found += h.nodes
        stack += [a for n in h.nodes for a in n.attrs.values() if isinstance(a, Graph)]
    return found


def _constants(g) -> list:
    """Every constant of `g` and of its fused kernels' bodies."""
    return list({id(v): v for n in _nodes(g) for v in n.inputs if v.is_const}.values())


def _read_elements(g) -> dict[int, np.ndarray | None]:
    """id(packed weight) -> where its layout.unpack_weight reads it (False: padding, which the kernels multiply
    as the packer left it, zeros); None for an int4 form, whose elements are nibble pairs."""
    from compiler.ops import layout as lay
    read: dict[int, np.ndarray | None] = {}
    for n in _nodes(g):
        if n.op is lay.unpack_weight and n.inputs[0].is_const:
            c = n.inputs[0].const
            if n.attrs["form"] == "vnni_matmul_int4":
                read[id(n.inputs[0])] = None
                continue
            where = n.op.reference([np.arange(c.size, dtype=np.int64).reshape(c.shape)], n.attrs)[0]
            mask = np.zeros(c.size, bool)
            mask[where.reshape(-1)] = True
            read[id(n.inputs[0])] = mask.reshape(c.shape)
    return read


def periodic_weights(g) -> int:
    """Replace (in place) each constant of MIN_CONST_BYTES or more by a seeded sample of its values
    repeated every PERIOD elements; returns the bytes replaced. Seeded by the constant's name, so every
    batch size of a model gets the same weights. A packed weight keeps its padding (the elements its
    unpacking does not read: a kernel multiplies them, so they must stay what the packer wrote); an int4
    packed weight stays as it is."""
    replaced = 0
    read = _read_elements(g)
    for v in _constants(g):
        if v.const.nbytes >= MIN_CONST_BYTES and read.get(id(v), True) is not None:
            flat = v.const.reshape(-1)
            rng = np.random.default_rng([SEED, zlib.crc32(v.name.encode())])
            periodic = np.resize(flat[rng.integers(0, flat.size, PERIOD)], v.const.shape)
            v.const = periodic if id(v) not in read else np.where(read[id(v)], periodic, v.const)
            replaced += v.const.nbytes
    return replaced


def compile_artifact(name: str, mode: str, batch: int, target, backend: str, work: Path,
                     kernel_outputs: bool = False, disable_passes: tuple[str, ...] = (),
                     integer_attention: bool = False, shiftadd_attention: bool = False):
    """(the final IR with periodic weights, its CompiledModel). `kernel_outputs`: every node's output is a
    graph output too (in order), so that the check names the first kernel whose result departs;
    `integer_attention`: int8 with the one-pass integer attention (q.attention); `shiftadd_attention`: a float
    mode with the binary-code attention (mfree.binary_attention)."""
    from compiler.api import final_ir
    from compiler.backends import get_backend
    from compiler.runtime import CompiledModel, Signature
    kw = {}
    if mode == "int8":          # two seeded samples; at batch > 1 each repeated across the batch
        calibration = [[np.repeat(x, batch, axis=0) for x in inputs(name, 1, SEED + 100 + i)] for i in range(2)]
        kw = {"quantize": "int8", "integer_only": True, "calibration": calibration,
              "integer_attention": integer_attention}
    elif mode == "fp16":
        kw = {"precision": "fp16"}
    if mode != "int8" and shiftadd_attention:
        kw["shiftadd_attention"] = True
    g, _ = final_ir(_model(name, batch, work), target, backend=backend, disable_passes=disable_passes, **kw)
    periodic_weights(g)
    if kernel_outputs:          # no kernel may then write over an operand (assign_inplace): each one is an output
        g.outputs = list(dict.fromkeys([o for n in g.nodes for o in n.outputs if o.type.rank >= 1] + g.outputs))
        for n in g.nodes:
            if "inplace" in n.attrs:
                n.attrs["inplace"] = -1
    exe = get_backend(backend).build(g, target)
    return g, CompiledModel(exe, Signature.of(g), target, backend, str(g), g)


def precompile_cuda(cm, cache: Path) -> None:
    """A tvm cuda executable holds CUDA C: compile it here into the runtime's kernel cache."""
    import os

    from compiler.backends import tvm_runtime
    code = cm.executable.cuda_source()
    if code.encode() not in cm.executable.library_bytes():
        raise SystemExit("gpu_prepare: the library does not hold the CUDA source verbatim; the runtime's "
                         "cache key (its sha256) would not match")
    os.environ["DYC_CUDA_CACHE"] = str(cache)
    tvm_runtime.cuda_binary(code, cm.target.arch)


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=None, metavar="DIR",
                    help="the folder, replaced (default out/gpu-check; out/gpu-check-cpu with --cpu)")
    ap.add_argument("--cpu", action="store_true", help="compile for this CPU (llvm), to try the check here")
    ap.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default 1 32; 1 2 with --cpu)")
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(DEFAULT_MODELS),
                    help=f"models (default {' '.join(DEFAULT_MODELS)})")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="precisions (default all)")
    ap.add_argument("--backends", nargs="+", choices=["tvm", "mlir"], default=["tvm", "mlir"],
                    help="code generators (default both)")
    ap.add_argument("--max-mb", type=float, default=64.0, help="fail if what travels is larger (default 64)")
    ap.add_argument("--python", default=None, metavar="X.Y",
                    help="the checking machine's CPython, for the runtime bundle (default this one)")
    ap.add_argument("--kernel-outputs", action="store_true",
                    help="every kernel's result an output too: the check names the first that departs")
    ap.add_argument("--int8", choices=["mma", "dp4a"], default="mma",
                    help="cuda int8 convs / matmuls on tensor cores (mma) or with dp4a")
    ap.add_argument("--mma", choices=["sync", "wmma"], default="sync",
                    help="the tensor cores through mma.sync and ldmatrix (sync) or WMMA (wmma)")
    ap.add_argument("--disable-pass", nargs="+", default=[], metavar="NAME",
                    help="compile without these passes (e.g. fuse_kernels fuse_attention: the unfused baseline; "
                         "assign_gpu_layouts: the NCHW baseline; choose_tiles: the rule's tiles)")
    ap.add_argument("--integer-attention", action="store_true",
                    help="int8 with integer_attention=True: each integer attention one q.attention kernel")
    ap.add_argument("--shiftadd-attention", action="store_true",
                    help="fp32 / fp16 with shiftadd_attention=True: ShiftAddViT's binary-code attention")
    ap.add_argument("--pack", action="store_true", help="also write DIR.tar.xz (what travels; --max-mb limits it)")
    args = ap.parse_args(argv)
    from compiler import interp
    from compiler.diagnostics import CompileError
    from compiler.target import Target
    from compiler.tools.runtime_bundle import make_bundle
    options = ("" if args.int8 == "mma" else f" -int8={args.int8}") + ("" if args.mma == "sync" else f" -mma={args.mma}")
    target = Target.parse("llvm" if args.cpu else GPU_TARGET + options)
    batches = sorted(set(args.batch or ([1, 2] if args.cpu else [1, 32])) | {1})
    out = Path(args.output or ROOT / "out" / ("gpu-check-cpu" if args.cpu else "gpu-check"))
    if out.exists():
        shutil.rmtree(out)
    (out / "work").mkdir(parents=True)
    t_start = time.perf_counter()
    make_bundle(out / "runtime-bundle", python=args.python)
    manifest = {"target": str(target), "seed": SEED, "period": PERIOD, "disabled_passes": args.disable_pass,
                "integer_attention": args.integer_attention, "shiftadd_attention": args.shiftadd_attention,
                "python": args.python or f"{sys.version_info.major}.{sys.version_info.minor}",
                "models": {m: {"description": MODELS[m][0], "input": f"{m}_input.npz"} for m in args.models},
                "artifacts": [], "not_built": []}
    for name in args.models:
        if name != "attention":
            np.savez(out / f"{name}_input.npz", *inputs(name, 1, SEED + 1))
    for name, mode, backend in itertools.product(args.models, args.modes, args.backends):
        if name == "attention" and mode == "int8":
            continue                    # a float attention (integer-only needs a requantized output to fuse)
        ref = f"{name}_{mode}_{backend}.npz"
        for batch in batches if name != "attention" else [1]:   # batch 1 first: it gives the reference
            file, t0 = f"{name}_{mode}_b{batch}_{backend}.dyc", time.perf_counter()
            try:
                g, cm = compile_artifact(name, mode, batch, target, backend, out / "work", args.kernel_outputs,
                                         tuple(args.disable_pass), args.integer_attention, args.shiftadd_attention)
            except CompileError as e:
                why = str(e).splitlines()[0]
                print(f"{file}: not built: {why}", flush=True)
                manifest["not_built"].append({"file": file, "model": name, "mode": mode, "batch": batch,
                                              "backend": backend, "why": why})
                break                   # nor a larger batch
            cm.save(out / file)
            if backend == "tvm" and target.kind == "cuda":
                precompile_cuda(cm, out / "cuda_cache")
            if batch == 1:              # the reference: the interpreter on the same final IR
                refs = interp.run(g, *inputs(name, 1, SEED + 1))
                np.savez(out / ref, **{f"out_{i}": sliced(r, name) for i, r in enumerate(refs)})
            manifest["artifacts"].append({"file": file, "model": name, "mode": mode, "batch": batch,
                                          "backend": backend, "reference": ref,
                                          "outputs": [o.producer.name if o.producer else o.name
                                                      for o in g.outputs]})
            print(f"{file}: {(out / file).stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.0f} s",
                  flush=True)
    shutil.rmtree(out / "work")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    size = folder_bytes(out)
    print(f"gpu_prepare: {size / 1e6:.1f} MB at {out} in {time.perf_counter() - t_start:.0f} s")
    if args.pack:
        out = pack(out)
        size = out.stat().st_size
        print(f"gpu_prepare: {size / 1e6:.1f} MB at {out}")
    if size > args.max_mb * 1e6:
        raise SystemExit(f"gpu_prepare: {out} is {size / 1e6:.1f} MB, over the {args.max_mb:g} MB limit")
    return 0


def pack(folder: Path) -> Path:
    """folder -> folder.tar.xz (its entries under the folder's name, xz preset 9)."""
    import lzma
    import tarfile
    archive = folder.with_name(folder.name + ".tar.xz")
    with tarfile.open(archive, "w:xz", preset=9 | lzma.PRESET_EXTREME) as tar:
        tar.add(folder, arcname=folder.name)
    return archive


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))       # examples/ and compiler/ from this checkout
    sys.exit(main())
