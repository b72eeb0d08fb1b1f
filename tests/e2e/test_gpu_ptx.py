"""The GPU target's model set to PTX that ptxas assembles for sm_90, through both backends, in FP32,
FP16 (precision="fp16", passes/fp16.py) and integer-only INT8, with nvcc and ptxas only (no GPU): onnx's
nine light zoo graphs (AlexNet, Inception-v1 and ZFNet have LRN: FP32 and FP16 only, integer LRN is not
asked for), ResNet-50, the 6-layer BERT encoder and the real-architecture suite (YOLOv8n-style detector,
MobileNetV3-Large, EfficientNet-B0, ConvNeXt-T: examples/real_arch). INT8 is calibrated on
two random batches (the light graphs' weights are all one value; the PTX, not the accuracy, is what is
checked here).

FP16 uses tensor cores through both backends with no setting: through TVM every ungrouped 2-D conv is
our implicit GEMM on mma.sync (tvm_kernels/cuda_gemm.py: `mma.sync.aligned.m16n8k16 ... f32.f16.f16.f32`,
float32 accumulators) and dlight's Matmul rule tensorizes a float16 matmul whose non-batch extents all exceed
64 on WMMA (`wmma.mma.sync`);
IREE's CUDA pipeline gives `mma.sync.aligned.m16n8k16 ... f32.f16.f16.f32` (the sm_80..sm_89 MMA list, no
wgmma; float32 accumulators, as the MLIR lowering sums float16 products in float32). INT8 through TVM:
the convs and constant-weight matmuls run on int8 tensor cores (`mma.sync.aligned.m16n8k32 ... s32.s8.s8.s32`;
WMMA's `wmma.mma.sync ... s32.s8.s8.s32` where the reduction pads to 32 badly: gpu_tile.fragment_k). In one pytest
process on 2 cores an FP16 case takes 4-58 s through TVM and 4-35 s through MLIR (DenseNet-121 the
longest; the 24 cases 7.2 min)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import has_module
from tests.ptxas import assemble

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("ptxas") is None,
                                 reason="nvcc / ptxas are not installed"),
              pytest.mark.skipif(not (has_module("tvm") and has_module("iree.compiler")),
                                 reason="needs apache-tvm and iree-base-compiler")]

ZOO = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
       "squeezenet", "vgg19", "zfnet512")
LRN = {"bvlc_alexnet", "inception_v1", "zfnet512"}
REAL_ARCH = ("yolov8n", "mobilenetv3_large", "efficientnet_b0", "convnext_t")
BIG = ("resnet50_224", "bert_6l", *REAL_ARCH)
# the tensor-core instructions an FP16 PTX holds, per backend, and the FP16 cases without any (see above)
TENSOR_CORE = {"tvm": ("mma.sync.aligned.m16n8k16", "wmma.mma.sync"), "mlir": ("mma.sync.aligned.m16n8k16",)}
NO_TENSOR_CORE: set[tuple[str, str]] = set()
INT8_TENSOR_CORE = "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32"       # TVM's int8 GEMMs
KNOWN: dict[tuple[str, str, str], str] = {}      # (model, backend, mode) -> why it gives no PTX (xfail)
CASES = [pytest.param(m, b, q, marks=[pytest.mark.xfail(strict=True, reason=KNOWN[m, b, q])] if (m, b, q) in KNOWN
                      else []) for m in ZOO + BIG for b in ("tvm", "mlir") for q in ("fp32", "fp16", "int8")
         if not (m in LRN and q == "int8")]


def _model(name: str) -> Path:
    if name in ZOO:
        import onnx.backend.test
        return Path(onnx.backend.test.__file__).parent / "data" / "light" / f"light_{name}.onnx"
    pytest.importorskip("torch")
    from benchmarks.common import CACHE, export_model
    if name in REAL_ARCH:
        from examples.real_arch import export_onnx
        return export_onnx(name, CACHE / "real_arch" / f"{name}.onnx")[0]
    return export_model(name.split("_")[0])[0]


def _calibration(g) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return [[rng.standard_normal(v.type.shape).astype(np.float32) if v.type.dtype.is_float
             else rng.integers(0, 2, v.type.shape).astype(v.type.dtype.numpy) for v in g.inputs]
            for _ in range(2)]


@pytest.mark.parametrize("name,backend,mode", CASES)
def test_model_gives_ptx_that_assembles(name, backend, mode):
    import compiler
    path = _model(name)
    kw = {}
    if mode == "int8":
        kw = dict(quantize="int8", integer_only=True, calibration=_calibration(compiler.import_model(str(path))))
    elif mode == "fp16":
        kw = {"precision": "fp16"}
    cm = compiler.compile(str(path), "cuda -arch=sm_90", backend=backend, **kw)
    ptx = cm.executable.source("ptx")
    assert ".target sm_90" in ptx and ".entry" in ptx
    if mode == "fp16":
        assert any(t in ptx for t in TENSOR_CORE[backend]) == ((name, backend) not in NO_TENSOR_CORE)
    if mode == "int8" and backend == "tvm":
        assert INT8_TENSOR_CORE in ptx
    assemble(ptx)
