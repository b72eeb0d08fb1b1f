"""The real-architecture suite (examples/real_arch: YOLOv8n, MobileNetV3-Large, EfficientNet-B0,
ConvNeXt-T) against onnxruntime: the reference interpreter on the imported graph and the TVM
executable, each within a norm-relative error of 1e-4 (||ours - ort|| / ||ort||).

The full-size models are `slow`; the default run compiles reduced variants of each (narrower,
fewer blocks, 64x64) that keep every block kind of the architecture."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.conftest import requires_ort, requires_torch

pytestmark = [requires_torch, requires_ort]

FULL = ["yolov8n", "mobilenetv3_large", "efficientnet_b0", "convnext_t"]
REDUCED = [f"{name}_reduced" for name in FULL]
RTOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (onnx path, input, onnxruntime's output), exported once per module."""
    from examples.real_arch import export_onnx
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            import onnxruntime as ort
            path, x = export_onnx(name, tmp_path_factory.mktemp("real_arch") / f"{name}.onnx")
            x = x.numpy()
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            cache[name] = (path, x, sess.run(None, {sess.get_inputs()[0].name: x})[0])
        return cache[name]
    return get


def _parts(name: str, y: np.ndarray) -> dict[str, np.ndarray]:
    # YOLO's boxes are in pixels (up to the input size), its class probabilities in [0, 1]: one
    # norm over both would hide errors in the classes, so each part is checked on its own
    if name.startswith("yolov8"):
        return {"boxes": y[:, :4], "classes": y[:, 4:]}
    return {"logits": y}


def assert_close(name: str, got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{name} {what}: shape {got.shape} != {want.shape}"
    assert np.isfinite(got).all(), f"{name} {what}: non-finite values"
    for part, w in _parts(name, want).items():
        g = _parts(name, got)[part]
        rel = float(np.linalg.norm(g - w) / np.linalg.norm(w))
        assert rel <= RTOL, f"{name} {what} {part}: norm-relative error {rel:.2e} > {RTOL:.0e}"


def _interp(name, exported):
    import compiler
    from compiler import interp
    path, x, want = exported(name)
    assert_close(name, interp.run(compiler.import_model(path), x)[0], want, "interpreter")


def _tvm(name, exported):
    import compiler
    if importlib.util.find_spec("tvm") is None:
        pytest.skip("apache-tvm is not installed")
    path, x, want = exported(name)
    assert_close(name, compiler.compile(path, target="llvm").run(x)[0], want, "tvm")


@pytest.mark.parametrize("name", REDUCED)
def test_real_arch_reduced_interp_matches_onnxruntime(name, exported):
    _interp(name, exported)


@pytest.mark.tvm
@pytest.mark.parametrize("name", REDUCED)
def test_real_arch_reduced_tvm_matches_onnxruntime(name, exported):
    _tvm(name, exported)


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL)
def test_real_arch_interp_matches_onnxruntime(name, exported):
    _interp(name, exported)


@pytest.mark.slow
@pytest.mark.tvm
@pytest.mark.parametrize("name", FULL)
def test_real_arch_tvm_matches_onnxruntime(name, exported):
    _tvm(name, exported)


def test_real_arch_exports_the_published_structure(exported):
    """The ONNX graphs carry the ops that define each architecture (and YOLO's output layout)."""
    from examples.real_arch import op_histogram
    want = {"yolov8n_reduced": {"Split", "Concat", "Sigmoid", "Resize", "Softmax", "MaxPool"},
            "mobilenetv3_large_reduced": {"HardSwish", "HardSigmoid", "GlobalAveragePool", "Relu"},
            "efficientnet_b0_reduced": {"Sigmoid", "Mul", "GlobalAveragePool"},
            "convnext_t_reduced": {"LayerNormalization", "Erf", "Transpose", "MatMul"}}
    for name, ops in want.items():
        path, _, out = exported(name)
        missing = ops - set(op_histogram(path))
        assert not missing, f"{name}: no {sorted(missing)} in the export"
    _, _, out = exported("yolov8n_reduced")
    assert out.shape == (1, 4 + 16, 8 * 8 + 4 * 4 + 2 * 2)      # xywh + 16 classes, 3 levels at 64x64


# -- integer-only INT8 ----------------------------------------------------------------------------
def _integer_only(name, exported):
    """`--quantize int8 --integer-only` on photographs: every node integer (no float between the input
    quantize and the output dequantize), the TVM executable bit-exact with the interpreter on the integer
    graph, and the output's cosine with FP32 on other photographs."""
    import compiler
    from compiler import interp
    from examples.real_arch import MODELS
    from examples.real_arch.photos import photo_batch
    from passes.quantize import QuantConfig
    from passes.quantize_pipeline import quantize_graph
    from passes.verify_integer_only import verify_integer_only
    path, _, _ = exported(name)
    size = MODELS[name][1]
    g = compiler.import_model(path)
    ig, stats = quantize_graph(g, list(photo_batch(size, 4, seed=0)[:, None]), QuantConfig(integer_only=True))
    assert verify_integer_only(ig) == []
    x = photo_batch(size, 1, seed=1)
    want = interp.run(ig, x)[0]
    if importlib.util.find_spec("tvm") is not None:
        np.testing.assert_array_equal(compiler.compile(ig, target="llvm").run(x)[0], want)
    ref = interp.run(stats.graph, x)[0].ravel().astype(np.float64)
    got = want.ravel().astype(np.float64)
    return float(ref @ got / (np.linalg.norm(ref) * np.linalg.norm(got)))


@pytest.mark.slow
@pytest.mark.parametrize("name", REDUCED)
def test_real_arch_reduced_integer_only_bit_exact(name, exported):
    cos = _integer_only(name, exported)
    assert cos >= 0.95, f"{name}: integer-only output cosine {cos:.4f} with FP32"
