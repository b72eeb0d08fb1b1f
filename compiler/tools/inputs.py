"""Inputs for `compile run` / `compile bench`: `--input NAME=FILE.npy`, `--input FILE.npz`
(arrays by input name) or `--random`, checked against the artifact's signature. Every mistake is
an InvalidInput (exit 2) that names the input and what the model expects."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler.diagnostics import InvalidInput
from compiler.types import TensorType


def describe(t: TensorType) -> str:
    """`float32[1, 3, 8, 8]`: how the signature is written in messages."""
    return f"{t.dtype.value}{list(t.shape)}"


def _describe_array(a: np.ndarray) -> str:
    return f"{a.dtype}{list(a.shape)}"


def signature_text(inputs) -> str:
    return ", ".join(f"'{n}' {describe(t)}" for n, t in inputs)


def _read(path: Path, what: str):
    if not path.exists():
        raise InvalidInput(f"{what}: no such file {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001  (numpy raises several types for bad files)
        raise InvalidInput(f"{what}: {path} is not a readable .npy or .npz file ({e})",
                           hint="save arrays with np.save('x.npy', x) or np.savez('in.npz', name=x)") from None
    return data


def random_input(t: TensorType, rng: np.random.Generator) -> np.ndarray:
    """Standard normal floats; integers in {0, 1} (valid indices for any embedding); booleans."""
    if t.dtype.is_float:
        return rng.standard_normal(t.shape).astype(t.dtype.numpy)
    if t.dtype.numpy == np.bool_:
        return rng.integers(0, 2, t.shape).astype(np.bool_)
    return rng.integers(0, 2, t.shape).astype(t.dtype.numpy)


def gather_inputs(inputs, specs: list[str], random: bool = False,
                  seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """The model's inputs in signature order, and where each came from, from `--input` specs;
    inputs no spec gives are random when `random`, else an error. `inputs` is the signature's
    ((name, TensorType), ...)."""
    types = dict(inputs)
    given: dict[str, tuple[np.ndarray, str]] = {}     # name -> (array, where it came from)

    def put(name: str, arr: np.ndarray, where: str, spec: str) -> None:
        if name not in types:
            raise InvalidInput(f"--input {spec}: the model has no input '{name}'",
                               hint=f"its inputs are {signature_text(inputs)}")
        if name in given:
            raise InvalidInput(f"input '{name}' is given twice ({given[name][1]} and {where})")
        given[name] = (arr, where)

    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep:
            name, file = "", spec
        path = Path(file)
        if not file:
            raise InvalidInput(f"--input {spec!r}: expected NAME=FILE.npy or FILE.npz")
        data = _read(path, f"input '{name}'" if name else f"--input {spec}")
        if isinstance(data, np.ndarray):
            if not name:
                if len(inputs) != 1:
                    raise InvalidInput(f"--input {spec}: the model has {len(inputs)} inputs; say which "
                                       f"this file is with NAME={file}",
                                       hint=f"its inputs are {signature_text(inputs)}")
                name = inputs[0][0]
            put(name, data, str(path), spec)
            continue
        with data:
            arrays = {k: data[k] for k in data.files}
        if name:                        # NAME=FILE.npz: the array called NAME, or the only one
            if name in arrays:
                arr = arrays[name]
            elif len(arrays) == 1:
                arr = next(iter(arrays.values()))
            else:
                raise InvalidInput(f"input '{name}': {path} holds {sorted(arrays)} but no '{name}'")
            put(name, arr, f"{path}[{name}]", spec)
            continue
        positional = [f"arr_{i}" for i in range(len(arrays))]
        if sorted(arrays) == sorted(positional) and not set(arrays) & set(types):
            if len(arrays) > len(inputs):
                raise InvalidInput(f"{path} holds {len(arrays)} unnamed arrays; the model has "
                                   f"{len(inputs)} input(s): {signature_text(inputs)}")
            for (n, _), key in zip(inputs, positional):
                put(n, arrays[key], f"{path}[{key}]", spec)
            continue
        unknown = sorted(set(arrays) - set(types))
        if unknown:
            raise InvalidInput(f"{path} holds array(s) {unknown} that are not inputs of the model",
                               hint=f"its inputs are {signature_text(inputs)}; save the file with "
                                    "np.savez(path, **{input_name: array})")
        for k, arr in arrays.items():
            put(k, arr, f"{path}[{k}]", spec)

    rng = np.random.default_rng(seed)
    out, sources = [], []
    for name, t in inputs:
        if name not in given:
            if not random:
                raise InvalidInput(f"input '{name}' ({describe(t)}) is not given",
                                   hint=f"pass --input {name}=FILE.npy, an .npz holding '{name}', or "
                                        "--random for random data")
            out.append(random_input(t, rng))
            sources.append(f"random, seed {seed}")
            continue
        arr, where = given[name]
        if arr.shape != t.shape or arr.dtype != t.dtype.numpy:
            hint = None
            if arr.shape == t.shape:
                hint = f"convert it: np.save(..., x.astype(np.{np.dtype(t.dtype.numpy).name}))"
            elif arr.size == int(np.prod(t.shape)):
                hint = f"reshape it: x.reshape({', '.join(map(str, t.shape))})"
            raise InvalidInput(f"input '{name}' from {where} is {_describe_array(arr)}; the model "
                               f"expects {describe(t)}", hint=hint)
        out.append(np.ascontiguousarray(arr))
        sources.append(where)
    return out, sources
