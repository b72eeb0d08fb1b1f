"""onnxruntime as the baseline of `compile bench --compare`: a CPU session pinned to a thread
count with spinning off (so it does not steal cores from the runtime timed next to it), the
feed built from the artifact's inputs, and onnxruntime's own static INT8 model on the same
calibration data. onnxruntime is optional; `require` says how to get it."""
from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from compiler.diagnostics import InvalidInput, Unsupported


def require(flag: str) -> None:
    if importlib.util.find_spec("onnxruntime") is None:
        raise Unsupported(f"{flag} needs onnxruntime, which is not installed",
                          hint="pip install onnxruntime (it is part of pip install -e '.[dev]')")


def session(path: str | Path, threads: int):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001  (onnxruntime raises its own exception types)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidInput(f"onnxruntime cannot load {path}: {first}") from None


def feed(sess, inputs, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays keyed by onnxruntime's input names: by name where the names agree with the
    artifact's, else by position."""
    ort_names = [i.name for i in sess.get_inputs()]
    names = [n for n, _ in inputs]
    if len(ort_names) != len(names):
        raise InvalidInput(f"the ONNX model takes {len(ort_names)} input(s) {ort_names}; the artifact "
                           f"takes {len(names)} {names}", hint="--compare the model the artifact was compiled from")
    return feed_names(ort_names, inputs, arrays)


def load_batches(path: str | Path, inputs) -> list[list[np.ndarray]]:
    """An .npz of calibration batches (compiler.calibration's format) for the artifact's inputs."""
    from compiler.calibration import load_npz
    g = SimpleNamespace(inputs=[SimpleNamespace(name=n, type=t) for n, t in inputs])
    return load_npz(path, g)      # type: ignore[arg-type]  (only .inputs is read)


def quantized_session(path: str | Path, batches: list[list[np.ndarray]], inputs, threads: int,
                      fmt: str = "qoperator"):
    """onnxruntime's quantize_static of the ONNX model (per-channel int8 weights, uint8
    activations) calibrated on `batches`, as a session; or a string saying why it failed."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    fp32 = session(path, threads)
    ort_names = [i.name for i in fp32.get_inputs()]
    del fp32

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else feed_names(ort_names, inputs, b)

    with tempfile.TemporaryDirectory() as d:
        pre, out = Path(d) / "pre.onnx", Path(d) / "int8.onnx"
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process
            quant_pre_process(str(path), str(pre))
        except Exception:  # noqa: BLE001  (pre-processing is an optimization; quantize the original)
            pre = Path(path)
        try:
            quantize_static(str(pre), str(out), Reader(),
                            quant_format=QuantFormat.QOperator if fmt == "qoperator" else QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        except Exception as e:  # noqa: BLE001
            return f"quantize_static failed: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}"
        return session(out, threads)


def feed_names(ort_names: list[str], inputs, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    names = [n for n, _ in inputs]
    if set(ort_names) == set(names):
        by_name = dict(zip(names, arrays))
        return {n: by_name[n] for n in ort_names}
    return dict(zip(ort_names, arrays))
