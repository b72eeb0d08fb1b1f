"""The one interface the backends (and passes) ask for schedule decisions.

    choose_conv_tile(spec, target)   -> (reg_oc, reg_w)            fp32 conv2d (tvm_kernels.conv2d)
    choose_qconv_tile(spec, target)  -> (reg_oc, reg_w)            int8 VNNI conv2d (tvm_kernels.qconv2d)
    choose_matmul_tile(spec, target) -> (reg_m, reg_n, lanes)      fp32 matmul (tvm_kernels.matmul)
    kernel(spec, target)             -> scheduled PrimFunc with the chosen tile, attr ``costmodel.tile``

Each ranks the valid candidate tiles (:func:`costmodel.features.candidate_tiles`) with the cost model and returns
the one predicted fastest; the result is cached per (spec, target) in-process.  Without a model (xgboost missing,
no model file, ``DYC_COSTMODEL=off``) the kernel's hand-written ``pick_tile`` is returned.  :func:`kernel` also
records the decision on the PrimFunc (``costmodel.tile`` = "reg_oc,reg_w" / "reg_m,reg_n,lanes",
``costmodel.source`` = "model" | "fallback"), so it shows in ``compile --emit tir``; if the chosen tile fails to
schedule it falls back to the hand-written one.

Model lookup (:func:`default_model`): ``$DYC_COSTMODEL`` (a path, or "off"), else ``~/.cache/dyc/costmodel.json``
(written by ``compile tune-costmodel``), else the shipped ``costmodel/data/default_x86_64.json``.
Tests swap the model with :func:`use_model` (any object satisfying :class:`costmodel.model.CostModel`).
"""
from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from . import features as F

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
SHIPPED_MODEL = os.path.join(DATA_DIR, "default_x86_64.json")
USER_MODEL = os.path.join(os.path.expanduser("~"), ".cache", "dyc", "costmodel.json")
TILE_ATTR = "costmodel.tile"
SOURCE_ATTR = "costmodel.source"

_UNSET = object()
_lock = threading.Lock()
_model: Any = _UNSET
_cache: dict[tuple[Any, str, int], tuple[tuple[int, ...], str]] = {}


def model_path() -> str | None:
    env = os.environ.get("DYC_COSTMODEL")
    if env:
        return None if env.lower() in ("off", "none", "0") else env
    if os.path.exists(USER_MODEL):
        return USER_MODEL
    return SHIPPED_MODEL if os.path.exists(SHIPPED_MODEL) else None


def default_model() -> Any:
    """The loaded cost model, or None (no file, xgboost missing, stale feature version)."""
    global _model
    with _lock:
        if _model is _UNSET:
            _model = None
            path = model_path()
            if path:
                try:
                    from .model import XGBCostModel
                    _model = XGBCostModel.load(path)
                except Exception:  # noqa: BLE001 - any load failure means "use the hand-written tiles"
                    _model = None
        return _model


@contextlib.contextmanager
def use_model(model: Any) -> Iterator[None]:
    """Temporarily use ``model`` (None = no model: the fallback) and a fresh decision cache."""
    global _model
    with _lock:
        old, old_cache = _model, dict(_cache)
        _model = model
        _cache.clear()
    try:
        yield
    finally:
        with _lock:
            _model = old
            _cache.clear()
            _cache.update(old_cache)


def clear_cache() -> None:
    global _model
    with _lock:
        _cache.clear()
        _model = _UNSET


def _model_target(model: Any, target: Any) -> F.TargetInfo:
    """Features are computed for the thread count the model was measured with (it only knows that one)."""
    ti = F.target_info(target)
    machine = (getattr(model, "meta", None) or {}).get("machine") or {}
    if "threads" in machine:
        ti = F.TargetInfo(ti.mcpu, int(machine["threads"]), ti.vector_bits, ti.vnni)
    return ti


def rank(spec: Any, target: Any = None, model: Any = None) -> tuple[list, np.ndarray]:
    """(candidate tiles, predicted scores; lower = faster) for ``spec`` under ``model`` (default: the loaded one)."""
    model = default_model() if model is None else model
    tiles = F.candidate_tiles(spec)
    if model is None:
        return tiles, np.zeros(len(tiles))
    ti = _model_target(model, target)
    text = len(getattr(model, "feature_names", ())) > len(F.FEATURE_NAMES)
    X = np.stack([F.features(spec, t, ti, text=text) for t in tiles])
    return tiles, np.asarray(model.predict(X), dtype=np.float64)


def choose(spec: Any, target: Any = None) -> tuple[tuple[int, ...], str]:
    """(tile, source) with source "model" or "fallback"."""
    model = default_model()
    key = (spec, F.target_info(target).key, id(model))
    hit = _cache.get(key)
    if hit is not None:
        return hit
    if model is None:
        res = (F.default_tile(spec), "fallback")
    else:
        try:
            tiles, scores = rank(spec, target, model)
            res = (tuple(tiles[int(np.argmin(scores))]), "model")
        except Exception:  # noqa: BLE001 - a broken model must never break compilation
            res = (F.default_tile(spec), "fallback")
    _cache[key] = res
    return res


def choose_conv_tile(spec: Any, target: Any = None) -> tuple[int, int]:
    """(reg_oc, reg_w) for an fp32 ``Conv2dSpec``."""
    assert F.kind_of(spec) == "conv"
    return choose(spec, target)[0]


def choose_qconv_tile(spec: Any, target: Any = None) -> tuple[int, int]:
    """(reg_oc, reg_w) for an int8 ``QConvSpec`` (reg_w divides the output width)."""
    assert F.kind_of(spec) == "qconv"
    return choose(spec, target)[0]


def choose_matmul_tile(spec: Any, target: Any = None) -> tuple[int, int, int]:
    """(reg_m, reg_n, lanes) for an fp32 ``MatmulSpec``."""
    assert F.kind_of(spec) == "matmul"
    return choose(spec, target)[0]


def kernel(spec: Any, target: Any = None):
    """The scheduled PrimFunc of ``spec`` with the policy's tile, the decision recorded as attributes.  Falls back
    to the hand-written tile if the chosen one does not give the tiled schedule."""
    from compiler.backends.tvm_kernels.common import SCHEDULE_ATTR
    tile, source = choose(spec, target)
    try:
        func = F.build_func(spec, tile)
        ok = SCHEDULE_ATTR not in func.attrs or str(func.attrs[SCHEDULE_ATTR]) == "tiled"
    except Exception:  # noqa: BLE001
        ok = False
    if not ok and source == "model":
        tile, source = F.default_tile(spec), "fallback"
        func = F.build_func(spec, tile)
    elif not ok:
        func = F.build_func(spec, tile)
    return func.with_attr(TILE_ATTR, ",".join(str(int(t)) for t in tile)).with_attr(SOURCE_ATTR, source)
