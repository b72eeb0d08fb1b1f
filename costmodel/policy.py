"""The one interface the backends (and passes) ask for schedule decisions.

    choose_conv_tile(spec, target)   -> (reg_oc, reg_w)            fp32 conv2d (tvm_kernels.conv2d)
    choose_qconv_tile(spec, target)  -> (reg_oc, reg_w)            int8 VNNI conv2d (tvm_kernels.qconv2d)
    choose_matmul_tile(spec, target) -> (reg_m, reg_n, lanes)      fp32 matmul (tvm_kernels.matmul)
    choose_qmatmul_tile(spec, target) -> (rm, rn)                  int8 VNNI matmul, constant weight (qmatmul)
    choose_qbmm_tile(spec, target)   -> (rm, rn)                   int8 VNNI batched matmul (tvm_kernels.qbmm)
    kernel(spec, target)             -> scheduled PrimFunc with the chosen tile, attr ``costmodel.tile``
    predict_layer_latency(...)       -> seconds of an integer layer's kernel (mixed precision)
    choose_table(ops, bits, n)       -> tabulate an elementwise chain? (costmodel.elementwise, measured)

Each ranks the valid candidate tiles (:func:`costmodel.features.candidate_tiles`) with the cost model and returns
the one predicted fastest.  Decisions are cached per (spec, target, model identity, feature version) in-process
and on disk (:class:`DecisionCache`, ``$DYC_CACHE_DIR/policy_decisions.json``, default ``~/.cache/dyc/``;
``DYC_CACHE_DIR=off`` disables it), so a second compile of the same kernels neither loads nor asks the model.
Without a model (xgboost missing,
no model file, ``DYC_COSTMODEL=off``) the kernel's hand-written ``pick_tile`` is returned.  :func:`kernel` also
records the decision on the PrimFunc (``costmodel.tile`` = "reg_oc,reg_w" / "reg_m,reg_n,lanes",
``costmodel.source`` = "model" | "fallback"; "rm,rn" for the int8 matmuls), so it shows in ``compile --emit tir``; if the chosen tile fails to
schedule it falls back to the hand-written one.

Model lookup (:func:`default_model`): ``$DYC_COSTMODEL`` (a path, or "off"), else ``~/.cache/dyc/costmodel.json``
(written by ``compile tune-costmodel``), else the shipped ``costmodel/data/default_x86_64.json``.
Tests swap the model with :func:`use_model` (any object satisfying :class:`costmodel.model.CostModel`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from compiler import tunable as T
from compiler.layouts import int_in_block

from . import features as F
from .elementwise import choose_table  # noqa: F401  (the tabulate pass's decision)

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
SHIPPED_MODEL = os.path.join(DATA_DIR, "default_x86_64.json")
USER_MODEL = os.path.join(os.path.expanduser("~"), ".cache", "dyc", "costmodel.json")
TILE_ATTR = "costmodel.tile"
SOURCE_ATTR = "costmodel.source"
DECISIONS_FILE = "policy_decisions.json"
CACHE_FORMAT = "dyc-policy-cache"
CACHE_VERSION = 1
CACHE_MAX_ENTRIES = 4096

_UNSET = object()
_lock = threading.Lock()
_model: Any = _UNSET
_cache: dict[tuple[Any, str, Any], tuple[tuple[int, ...], str]] = {}
_file_ids: dict[str, tuple[int, int, str]] = {}       # path -> (mtime_ns, size, sha256)
_disk: dict[str, DecisionCache] = {}


def model_path() -> str | None:
    env = os.environ.get("DYC_COSTMODEL")
    if env:
        return None if env.lower() in ("off", "none", "0") else env
    if os.path.exists(USER_MODEL):
        return USER_MODEL
    return SHIPPED_MODEL if os.path.exists(SHIPPED_MODEL) else None


# ----------------------------------------------------------------------------------------------------------------
# the on-disk decision cache
# ----------------------------------------------------------------------------------------------------------------
def cache_dir() -> str | None:
    """Where decisions are cached: ``$DYC_CACHE_DIR`` (``off`` / ``none`` / ``0`` / empty: no disk cache), else
    ``~/.cache/dyc``."""
    env = os.environ.get("DYC_CACHE_DIR")
    if env is not None:
        return None if env.strip().lower() in ("", "off", "none", "0") else os.path.expanduser(env)
    return os.path.join(os.path.expanduser("~"), ".cache", "dyc")


class DecisionCache:
    """A small JSON file of policy decisions ``{key: {"tile": [...], "task": ..., "target": ...}}``.

    The key hashes (kernel spec, target, model identity, feature version), so a retrained model or a new feature
    version never reuses an entry.  Reads tolerate anything (a missing, truncated or foreign file is an empty
    cache); writes merge with what is on disk (another process may have added entries), keep the newest
    :data:`CACHE_MAX_ENTRIES`, and replace the file atomically (temporary file + ``os.replace``).  An unwritable
    directory only costs the caching."""

    def __init__(self, path: str):
        self.path = path
        self._entries: dict[str, dict[str, Any]] | None = None

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self.path) as f:
                obj = json.load(f)
            if not (isinstance(obj, dict) and obj.get("format") == CACHE_FORMAT
                    and obj.get("version") == CACHE_VERSION and isinstance(obj.get("entries"), dict)):
                return {}
            return {k: v for k, v in obj["entries"].items() if isinstance(v, dict)}
        except Exception:  # noqa: BLE001 - a corrupt cache is an empty cache
            return {}

    def get(self, key: str) -> dict[str, Any] | None:
        if self._entries is None:
            self._entries = self._read()
        return self._entries.get(key)

    def put(self, key: str, value: dict[str, Any]) -> None:
        entries = self._read()
        entries.update(self._entries or {})
        entries.pop(key, None)
        entries[key] = value
        if len(entries) > CACHE_MAX_ENTRIES:
            entries = dict(list(entries.items())[-CACHE_MAX_ENTRIES:])
        self._entries = entries
        try:
            d = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(d, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".policy_decisions.", suffix=".tmp", dir=d)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump({"format": CACHE_FORMAT, "version": CACHE_VERSION, "entries": entries}, f,
                              separators=(",", ":"))
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError:
            pass


def decision_cache() -> DecisionCache | None:
    d = cache_dir()
    if d is None:
        return None
    path = os.path.join(d, DECISIONS_FILE)
    with _lock:
        if path not in _disk:
            _disk[path] = DecisionCache(path)
        return _disk[path]


def decision_key(spec: Any, target_key: str, model_id: str) -> str:
    blob = json.dumps([F.spec_to_json(spec), target_key, model_id, F.FEATURE_VERSION], sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _file_identity(path: str) -> str | None:
    try:
        st = os.stat(path)
        hit = _file_ids.get(path)
        if hit and hit[:2] == (st.st_mtime_ns, st.st_size):
            return hit[2]
        with open(path, "rb") as f:
            h = "file:" + hashlib.sha256(f.read()).hexdigest()
        _file_ids[path] = (st.st_mtime_ns, st.st_size, h)
        return h
    except OSError:
        return None


def model_identity() -> str | None:
    """A string naming the model the policy uses now (the sha256 of its file, or the ``identity`` a model object
    carries), None without a model or for a model without an identity (its decisions stay in-process).  The
    default model is not loaded for this: a decision cache hit never needs it."""
    with _lock:
        m = _model
    if m is _UNSET:
        path = model_path()
        return _file_identity(path) if path else None
    if m is None:
        return None
    try:
        ident = getattr(m, "identity", None)
        return str(ident) if ident else None
    except Exception:  # noqa: BLE001
        return None


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
                    _model.identity = _file_identity(path) or _model.identity
                except Exception:  # noqa: BLE001 - any load failure means "use the hand-written tiles"
                    _model = None
        return _model


@contextlib.contextmanager
def use_model(model: Any) -> Iterator[None]:
    """Temporarily use ``model`` (None = no model: the fallback) and a fresh in-process decision cache (the disk
    cache is re-read, as by a new process)."""
    global _model
    with _lock:
        old, old_cache = _model, dict(_cache)
        _model = model
        _cache.clear()
        _disk.clear()
    try:
        yield
    finally:
        with _lock:
            _model = old
            _cache.clear()
            _cache.update(old_cache)
            _disk.clear()


def clear_cache() -> None:
    """Forget the in-process decisions and the loaded model (the disk cache stays)."""
    global _model
    with _lock:
        _cache.clear()
        _disk.clear()
        _model = _UNSET


def forget_decisions() -> None:
    """Forget the in-process decisions only (as a new process would; the model and the disk cache stay)."""
    with _lock:
        _cache.clear()
        _disk.clear()


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
    """(tile, source) with source "model" or "fallback" ("analytic": a GPU GEMM, costmodel/gpu_tiles.py). Looked
    up in the in-process cache, then in the disk cache (:class:`DecisionCache`; only for models with an
    identity), then asked of the model."""
    from costmodel import gpu_tiles
    if isinstance(spec, gpu_tiles.GpuGemm):     # no GPU measurements to learn from yet: the analytic model
        return gpu_tiles.choose(spec, gpu_tiles.arch_of(target)), "analytic"
    if getattr(spec, "amx", False):     # the learned model knows the VNNI kernels; an AMX block is the kernel's pick
        return F.default_tile(spec), "fallback"
    tkey = F.target_info(target).key
    ident = model_identity()
    key = (spec, tkey, ident if ident is not None else id(default_model()))
    hit = _cache.get(key)
    if hit is not None:
        return hit
    disk = decision_cache() if ident is not None else None
    dkey = decision_key(spec, tkey, ident) if disk is not None else ""
    if disk is not None:
        ent = disk.get(dkey)
        try:
            tile = tuple(int(t) for t in ent["tile"]) if ent else None
        except Exception:  # noqa: BLE001 - a malformed entry is a miss
            tile = None
        if tile is not None and tile in F.candidate_tiles(spec):
            res = (tile, "model")
            _cache[key] = res
            return res
    model = default_model()
    if model is None:
        res = (F.default_tile(spec), "fallback")
    else:
        try:
            tiles, scores = rank(spec, target, model)
            res = (tuple(tiles[int(np.argmin(scores))]), "model")
        except Exception:  # noqa: BLE001 - a broken model must never break compilation
            res = (F.default_tile(spec), "fallback")
    _cache[key] = res
    if disk is not None and res[1] == "model":
        disk.put(dkey, {"tile": list(res[0]), "kind": F.kind_of(spec), "target": tkey})
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


def choose_qmatmul_tile(spec: Any, target: Any = None) -> tuple[int, int]:
    """(rm, rn) = (rows, 16-column blocks) for an int8 ``QMatmulSpec`` (rm | m, rn | np_ / 16)."""
    assert F.kind_of(spec) == "qmatmul"
    return choose(spec, target)[0]


def choose_qbmm_tile(spec: Any, target: Any = None) -> tuple[int, int]:
    """(rm, rn) = (rows, 16-column blocks) for an int8 batched ``QBmmSpec`` (rm | m, rn | n / 16)."""
    assert F.kind_of(spec) == "qbmm"
    return choose(spec, target)[0]


def kernel(spec: Any, target: Any = None):
    """The scheduled PrimFunc of ``spec`` with the policy's tile, the decision recorded as attributes.  Falls back
    to the hand-written tile if the chosen one does not give the tiled schedule."""
    tile, source = choose(spec, target)
    try:
        func = F.build_func(spec, tile)
        ok = T.provider().schedule_of(func) in (None, "tiled")
    except Exception:  # noqa: BLE001
        ok = False
    if not ok and source == "model":
        tile, source = F.default_tile(spec), "fallback"
        func = F.build_func(spec, tile)
    elif not ok:
        func = F.build_func(spec, tile)
    return func.with_attr(TILE_ATTR, ",".join(str(int(t)) for t in tile)).with_attr(SOURCE_ATTR, source)


# ----------------------------------------------------------------------------------------------------------------
# latency queries (mixed precision)
# ----------------------------------------------------------------------------------------------------------------
class LatencyUnavailable(ValueError):
    """The cost model cannot predict this latency (no model, a ranking-only model, a layer no kernel covers)."""


def predict_latency(spec: Any, target: Any = None) -> float:
    """Predicted seconds of the kernel of ``spec`` scheduled with the tile the policy chooses for it.  Needs a
    model that regresses latency (``objective == "reg"``); raises :class:`LatencyUnavailable` otherwise."""
    model = default_model()
    if model is None:
        raise LatencyUnavailable("no cost model (xgboost missing, no model file, or DYC_COSTMODEL=off)")
    if getattr(model, "objective", None) != "reg":
        raise LatencyUnavailable("the cost model ranks candidates only (objective "
                                 f"{getattr(model, 'objective', '?')!r}); latencies need the 'reg' model")
    from .model import UntrainedKind
    tile, _source = choose(spec, target)
    ti = _model_target(model, target)
    text = len(getattr(model, "feature_names", ())) > len(F.FEATURE_NAMES)
    x = F.features(spec, tile, ti, text=text)
    try:
        return float(np.exp(np.asarray(model.predict(x[None]), dtype=np.float64)[0]))
    except UntrainedKind as e:
        raise LatencyUnavailable(str(e)) from None


def layer_kernel_spec(kind: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...], *,
                      strides: tuple[int, ...] = (1, 1), pads: tuple[int, ...] = (0, 0, 0, 0), groups: int = 1,
                      dilations: tuple[int, ...] = (1, 1)) -> tuple[Any, str]:
    """(kernel spec, note) of the int8 kernel an integer layer runs as on the TVM fast path:

    * ``conv`` (NCHW x, OIHW w, groups 1, 2-D): the VNNI conv (``QConvSpec``, uint8 activations, fused requant);
    * ``matmul`` (x (..., k) by a constant (k, n)): the VNNI matmul kernel (``QMatmulSpec``, uint8 rows, fused
      requant).
    Raises :class:`LatencyUnavailable` for layers no measured kernel covers (grouped / depthwise / dilated / 1-D
    / 3-D convs)."""
    rq = dict(in_zp=0, out_zp=0, qmin=0, qmax=255, dtype="uint8")
    if kind == "conv":
        if len(x_shape) != 4 or len(w_shape) != 4:
            raise LatencyUnavailable(f"{len(x_shape) - 2}-D conv: the cost model covers 2-D convs only")
        if groups != 1:
            raise LatencyUnavailable(f"grouped conv (groups {groups}): no int8 kernel in the cost model's data")
        if any(int(d) != 1 for d in dilations):
            raise LatencyUnavailable("dilated conv: not in the cost model's data")
        n, ci, h, w = (int(v) for v in x_shape)
        co, _, kh, kw = (int(v) for v in w_shape)
        spec = F.make_spec("qconv", n=n, ci=ci, h=h, w=w, co=co, kh=kh, kw=kw,
                           stride=tuple(int(s) for s in strides[:2]), pad=tuple(int(p) for p in pads[:4]),
                           x_dtype="uint8", in_block=int_in_block(ci), rq1=rq)
        return spec, "int8 VNNI conv"
    if kind == "matmul":
        if len(w_shape) != 2:
            raise LatencyUnavailable("matmul with a batched weight: not in the cost model's data")
        k, n_out = (int(v) for v in w_shape)
        rows = int(np.prod(x_shape[:-1])) if len(x_shape) > 1 else 1
        spec = F.make_spec("qmatmul", m=rows, k=k, n=n_out, a_dtype="uint8", a_zp=0, rq=rq)
        return spec, "int8 VNNI matmul"
    raise LatencyUnavailable(f"layer kind {kind!r}: conv or matmul")


# Weight bit widths that have a kernel of their own on a target.  On x86 (AVX-512 VNNI) 4-bit weights are stored
# in int8 containers and run through the same u8 x s8 kernels as 8-bit ones: same instructions, same latency.
_DISTINCT_WEIGHT_KERNELS: dict[str, tuple[int, ...]] = {}


def kernel_weight_bits(bits: int, target: Any = None) -> int:
    """The weight width of the kernel that runs a ``bits``-bit layer on ``target`` (8 for 4-bit weights on x86:
    there is no faster int4 kernel)."""
    if bits not in (4, 8):
        raise LatencyUnavailable(f"{bits}-bit weights: 4 or 8")
    distinct = _DISTINCT_WEIGHT_KERNELS.get(F.target_info(target).mcpu, ())
    return bits if bits in distinct else 8


def predict_layer_latency(kind: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...], bits: int,
                          target: Any = None, *, strides: tuple[int, ...] = (1, 1),
                          pads: tuple[int, ...] = (0, 0, 0, 0), groups: int = 1,
                          dilations: tuple[int, ...] = (1, 1)) -> tuple[float, str]:
    """(predicted seconds, note) of an integer ``conv`` / ``matmul`` layer with ``bits``-bit weights: the latency
    the cost model predicts for the kernel that runs it (:func:`layer_kernel_spec`) with the tile the policy
    chooses.  4-bit conv weights run through the 8-bit kernels on x86, so their latency is the 8-bit one; a
    linear layer's run the int4 VNNI matmul, its latency the int8 prediction times int4_matmul_ratio (the
    note says which).  Raises :class:`LatencyUnavailable` when the model cannot answer."""
    spec, note = layer_kernel_spec(kind, tuple(x_shape), tuple(w_shape), strides=strides, pads=pads,
                                   groups=groups, dilations=dilations)
    if kind == "matmul" and bits == 4:     # a linear layer's int4 weights run the int4 VNNI matmul
        rows = int(np.prod(x_shape[:-1]))
        r = int4_matmul_ratio(rows)
        note += (f"; int4 linear layer: {r:g} x the int8 kernel's prediction (the int4 VNNI matmul at {rows} rows; "
                 "measured by benchmarks/lut_vs_vnni.py, not in the model's data)")
        return predict_latency(spec, target) * r, note
    kb = kernel_weight_bits(bits, target)
    if kb != bits:
        note += f"; {bits}-bit weights run in the {kb}-bit kernel (no {bits}-bit kernel on this target)"
    return predict_latency(spec, target), note


def int4_matmul_ratio(rows: int) -> float:
    """The int4 VNNI matmul's time over the int8 one's for a linear layer of `rows` rows (the weight streamed
    from memory): `python benchmarks/lut_vs_vnni.py --threads 1` on a Zen 4 core gave 0.50-0.58 at 1 row
    (k x n 1024-4096 x 4096-11008), 0.60-0.66 at 4-16 rows, 1.0 at 64 rows."""
    return 0.55 if rows <= 1 else 0.63 if rows <= 16 else 1.0
