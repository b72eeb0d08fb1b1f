"""Calibration data for quantization: an iterable of input batches (API) or an .npz file (CLI),
checked against the graph's inputs and turned into a list of positional input lists."""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from compiler.diagnostics import InvalidInput
from compiler.ir import Graph


def _as_numpy(a: Any) -> np.ndarray:
    if type(a).__module__.startswith("torch"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def load_npz(path: str | os.PathLike, g: Graph) -> list[list[np.ndarray]]:
    """An .npz with one array per model input (by input name; `arr_0`... when the model has
    inputs in that order), each shaped (N, *input_shape) (N batches) or (N * batch,
    *input_shape[1:]) (samples stacked along the batch axis, split into batches)."""
    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"calibration file not found: {path}")
    try:
        data = dict(np.load(path, allow_pickle=False))
    except Exception as e:  # noqa: BLE001  (numpy raises several types for bad files)
        raise InvalidInput(f"{path} is not a readable .npz file: {e}") from None
    names = [v.name for v in g.inputs]
    if set(names) <= set(data):
        arrays = [data[n] for n in names]
    elif [f"arr_{i}" for i in range(len(names))] == sorted(data)[:len(names)]:
        arrays = [data[f"arr_{i}"] for i in range(len(names))]
    else:
        raise InvalidInput(f"{path} holds arrays {sorted(data)}; the model's inputs are {names}",
                           hint="save it with np.savez(path, **{input_name: batches})")
    out: list[list[np.ndarray]] = []
    for v, arr in zip(g.inputs, arrays):
        t = v.type
        if arr.shape == t.shape:
            arr = arr[None]
        elif arr.ndim == len(t.shape) and t.shape and arr.shape[1:] == t.shape[1:] and \
                arr.shape[0] % t.shape[0] == 0:
            arr = arr.reshape((-1, *t.shape))           # samples stacked along the batch axis
        if arr.shape[1:] != t.shape:
            raise InvalidInput(f"{path}: '{v.name}' has shape {list(arr.shape)}; expected "
                               f"(N, {', '.join(map(str, t.shape))}) for N calibration batches, or "
                               f"(N*{t.shape[0] if t.shape else 1}, ...) samples")
        arr = arr.astype(t.dtype.numpy) if arr.dtype != t.dtype.numpy and t.dtype.is_float else arr
        out.append(list(arr))
    return [list(batch) for batch in zip(*out)]


def batches_for(calibration: Any, g: Graph) -> list[list[np.ndarray]]:
    """Normalize calibration data: a path to an .npz, or an iterable whose items are an array
    (single-input models), a sequence of arrays, or a mapping by input name."""
    if calibration is None:
        raise InvalidInput("quantization needs calibration data",
                           hint="pass calibration=[batch, ...] (API) or --calibration data.npz (CLI); "
                                "the compiler never calibrates on random data")
    if isinstance(calibration, (str, os.PathLike)):
        return load_npz(calibration, g)
    names = [v.name for v in g.inputs]
    out = []
    for i, item in enumerate(calibration if isinstance(calibration, Iterable) else [calibration]):
        if isinstance(item, Mapping):
            item = [item[n] for n in names]
        elif not isinstance(item, (list, tuple)):
            item = [item]
        batch = [_as_numpy(a) for a in item]
        if len(batch) != len(names) or any(a.shape != v.type.shape for a, v in zip(batch, g.inputs)):
            raise InvalidInput(f"calibration batch {i} has shapes {[list(a.shape) for a in batch]}; "
                               f"the model takes {[list(v.type.shape) for v in g.inputs]}")
        out.append([a.astype(v.type.dtype.numpy) for a, v in zip(batch, g.inputs)])
    if not out:
        raise InvalidInput("calibration data is empty")
    return out


def labels_for(calibration: Any, labels: Any = None) -> Any:
    """The class labels of the calibration samples (for an accuracy budget in top-1 points): `labels` as given
    (an array, or one per batch; passes.accuracy_budget checks them), else the `labels` array of a calibration
    .npz (one class index per sample, in the order of the samples), else None."""
    if labels is not None or not isinstance(calibration, (str, os.PathLike)) or not Path(calibration).exists():
        return labels
    try:
        with np.load(calibration, allow_pickle=False) as data:
            return data["labels"] if "labels" in data.files else None
    except Exception as e:  # noqa: BLE001  (numpy raises several types for bad files)
        raise InvalidInput(f"{calibration} is not a readable .npz file: {e}") from None
