"""Named, versioned feature vectors for one (kernel spec, schedule knobs, target).

A *task* is one kernel instance (a ``Conv2dSpec``, ``QConvSpec``, ``MatmulSpec``, ``QMatmulSpec``, ``QBmmSpec`` or
``AttentionSpec``); a *candidate* is a task plus its knobs (the register tile; attention's query and key blocks).
:func:`features` maps a candidate to a fixed-length float vector whose columns are named by :data:`FEATURE_NAMES`
(version :data:`FEATURE_VERSION`; bump it whenever a column changes meaning, a saved model records the version and
the names it was trained with and refuses a mismatch).

Groups (all sizes log2-scaled, as MetaSchedule's ``slog``):

* op:      one-hot kind (conv fp32 / conv int8 / matmul fp32 / matmul int8 / batched matmul int8; fp32 attention,
           added after version 2, has no column: all five are 0), depthwise / grouped / 1x1 / k-split flags;
* shapes:  batch, n*oh*ow (or m) output rows, output channels (n), reduction length (k), h, w, ci, co, kh, kw,
           stride, groups;
* work:    FLOPs (int ops for int8), bytes moved (inputs + weights + output), arithmetic intensity;
* knobs:   tile_a (reg_oc | reg_m), tile_b (reg_w | reg_n), lanes, vector accumulators, accumulators / registers,
           spill flag, loads per FMA in the inner loop, padding waste of the tiled axes, parallel tasks (and per
           core), trip counts of the two tiled loops, bytes of the weight panel one tile streams;
* target:  vector bits, number of vector registers, cores, avx512 / vnni flags.

Optional text channel (``text=True``; "ML-driven Hardware Cost Model for MLIR", Das & Mannarswamy 2023): hashed
token 1/2-grams of the scheduled kernel's printed TIR, :data:`TEXT_DIM` buckets of log1p(count).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler import tunable as T
from compiler.host import host_cpu_name, host_vector_lanes

FEATURE_VERSION = 2      # 2: op_matmul_int8 / op_bmm_int8 (the qmatmul and qbmm kernels); 1: three kinds
TEXT_DIM = 64

KINDS = ("conv", "qconv", "matmul", "qmatmul", "qbmm", "attention")   # attention: no op_* column (above)

ATTENTION_QUERY_BLOCKS = (8, 16, 32, 64, 128, 256)
ATTENTION_KEY_BLOCKS = (16, 32, 64, 128, 256)
SHORT_SEQUENCE = 256     # up to this length one block may hold the whole sequence
ATTENTION_BLOCK_FLOATS = 8192   # the largest attention block (query block x key block scores) otherwise

FEATURE_NAMES: tuple[str, ...] = (
    # op
    "op_conv_fp32", "op_conv_int8", "op_matmul_fp32", "op_matmul_int8", "op_bmm_int8", "is_depthwise", "is_grouped",
    "is_1x1", "k_split",
    # shapes (log2)
    "log_batch", "log_rows", "log_cols", "log_red", "log_h", "log_w", "log_ci", "log_co", "kh", "kw",
    "stride", "log_groups",
    # work
    "log_flops", "log_bytes", "log_intensity",
    # knobs
    "tile_a", "tile_b", "lanes", "vec_acc", "acc_per_reg", "spill", "loads_per_fma", "pad_waste",
    "log_par_tasks", "tasks_per_core", "log_trip_a", "log_trip_b", "log_panel_bytes", "tile_b_divides",
    # target
    "vector_bits", "n_vregs", "cores", "avx512", "vnni",
)
TEXT_NAMES: tuple[str, ...] = tuple(f"tir_hash_{i:02d}" for i in range(TEXT_DIM))


def feature_names(text: bool = False) -> tuple[str, ...]:
    return FEATURE_NAMES + (TEXT_NAMES if text else ())


# ----------------------------------------------------------------------------------------------------------------
# target description
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TargetInfo:
    """What the features need to know about a CPU target."""

    mcpu: str = "generic"
    cores: int = 1
    vector_bits: int = 512
    vnni: bool = True

    @property
    def key(self) -> str:
        return f"{self.mcpu}/{self.cores}/{self.vector_bits}/{int(self.vnni)}"


_AVX512_CPUS = ("znver4", "znver5", "skylake-avx512", "cascadelake", "cooperlake", "icelake", "sapphirerapids",
                "tigerlake", "rocketlake", "alderlake-avx512", "graniterapids", "emeraldrapids")
_VNNI_CPUS = ("znver4", "znver5", "cascadelake", "cooperlake", "icelake", "sapphirerapids", "tigerlake",
              "rocketlake", "graniterapids", "emeraldrapids")


def target_info(target: Any = None) -> TargetInfo:
    """TargetInfo of a ``tvm.target.Target``, a target string such as ``"llvm"`` / ``"llvm -mcpu=znver4"``, a
    TargetInfo, or None (the host)."""
    if isinstance(target, TargetInfo):
        return target
    mcpu, cores = None, None
    if target is not None and not isinstance(target, str):
        try:
            attrs = target.attrs
            mcpu = str(attrs["mcpu"]) if "mcpu" in attrs else None
            cores = int(attrs["num-cores"]) if "num-cores" in attrs else None
        except Exception:  # noqa: BLE001 - unusual target objects: fall back to the host
            pass
    elif isinstance(target, str):
        m = re.search(r"-mcpu=(\S+)", target)
        mcpu = m.group(1) if m else None
        m = re.search(r"-num-(?:cores|threads)=(\d+)", target)
        cores = int(m.group(1)) if m else None
    if mcpu is None:
        mcpu = host_cpu_name()
        bits = host_vector_lanes(32) * 32
    else:
        bits = 512 if mcpu in _AVX512_CPUS else 256 if mcpu not in ("generic",) else 128
    if cores is None:
        import os
        env = os.environ.get("TVM_NUM_THREADS")
        cores = int(env) if env else (os.cpu_count() or 1)
    vnni = mcpu in _VNNI_CPUS or (mcpu not in _AVX512_CPUS and bits >= 512)
    return TargetInfo(mcpu, int(cores), int(bits), bool(vnni))


# ----------------------------------------------------------------------------------------------------------------
# kernel descriptions
# ----------------------------------------------------------------------------------------------------------------
def kind_of(spec: Any) -> str:
    """The kernel kind of ``spec`` (one of :data:`KINDS`), as its tunable kernel registers it."""
    try:
        return T.kernel_of(spec).kind
    except TypeError:
        raise TypeError(f"no cost-model features for {type(spec).__name__}") from None


def _log2(x: float) -> float:
    return math.log2(max(float(x), 1e-12) + 1.0) if x >= 0 else -math.log2(-x + 1.0)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def describe(spec: Any) -> dict[str, float]:
    """Shape-level description of a kernel (independent of the knobs), as its tunable kernel gives it."""
    return T.kernel_of(spec).describe(spec)


# ----------------------------------------------------------------------------------------------------------------
# the vector
# ----------------------------------------------------------------------------------------------------------------
def features(spec: Any, tile: Sequence[int], target: Any = None, text: bool = False,
             func: Any = None) -> np.ndarray:
    """Feature vector (float64, ``len(feature_names(text))``) of ``spec`` scheduled with ``tile``.

    ``tile``: (reg_oc, reg_w) for conv / qconv, (reg_m, reg_n, lanes) for matmul, (rm, rn) = (rows, 16-column
    blocks) for qmatmul / qbmm, (tq, tk) = (query block, key block) for attention.  The int8 matmuls' knobs are
    written in the int8 conv's terms (the same u8 x s8 vpdpbusd tile): tile_a = rn (column blocks, as reg_oc),
    tile_b = rm (rows, as reg_w).  Attention (its own booster, so its columns mean its own loops): tile_a = tq,
    tile_b = tk, vec_acc = the Q K^T register tile (rows x tk / lanes), pad_waste = scores computed and then
    masked (causal blocks crossing the diagonal), parallel tasks = bh x query blocks, trip counts = query
    blocks and key blocks walked per task, panel = the key block (K and V rows of tk keys).  ``func``: the
    scheduled PrimFunc for the text channel (built with the kernel's ``make_*`` when omitted and ``text`` is
    set)."""
    kind = kind_of(spec)
    ti = target_info(target)
    d = describe(spec)
    n_vregs = 32 if ti.vector_bits >= 512 else 16
    if kind == "matmul":
        reg_m, reg_n, lanes = (int(t) for t in tile)
        ta, tb = reg_m, reg_n
        vec_acc = reg_m * max(1, reg_n // lanes)
        loads = (reg_m + max(1, reg_n // lanes)) / max(1, vec_acc)
        waste = _ceil_div(d["mtot"], reg_m) * reg_m / d["mtot"] - 1.0
        trip_a = _ceil_div(d["mtot"], reg_m)
        trip_b = _ceil_div(d["cols"], d["ob"])
        par = d["outer"] * trip_b
        panel = d["red"] * reg_n * d["esz"]
        divides = float(d["mtot"] % reg_m == 0)
    elif kind == "attention":
        tq, tk = (int(t) for t in tile[:2])
        lanes = 16 if tk % 16 == 0 else 1
        rows = next(r for r in (4, 2, 1) if tq % r == 0)
        ta, tb = tq, tk
        vec_acc = rows * (tk // lanes)
        loads = (rows + tk // lanes) / vec_acc
        walked = attention_blocks_walked(d, tq, tk)
        waste = tq * tk * sum(walked) / d["pairs"] - 1.0
        trip_a = len(walked)
        trip_b = sum(walked) / len(walked)
        par = d["batch"] * len(walked)
        panel = tk * (d["d"] + d["dv"]) * d["esz"]
        divides = 1.0                                        # the blocks divide the lengths (the spec checks)
    elif kind in ("qmatmul", "qbmm"):
        rm, rn = (int(t) for t in tile[:2])
        lanes = 16
        ta, tb = rn, rm
        vec_acc = rm * rn
        # per 4-deep reduction step: rm row broadcasts + rn weight vectors feed rm * rn vpdpbusd
        loads = (rm + rn) / max(1, vec_acc)
        waste = (_ceil_div(d["ow"], rm) * rm / d["ow"]) * (_ceil_div(d["n_ocb"], rn) * rn / d["n_ocb"]) - 1.0
        trip_a = _ceil_div(d["n_ocb"], rn)
        trip_b = _ceil_div(d["ow"], rm)
        par = d["outer"] * trip_a * trip_b                   # the fused (batch, row tile, column tile) loop
        panel = d["red"] * rn * 16 * d["esz"]
        divides = float(d["ow"] % rm == 0)
    else:
        reg_oc, reg_w = (int(t) for t in tile[:2])
        lanes = d["ob"] if kind == "conv" else 16
        ta, tb = reg_oc, reg_w
        vec_acc = reg_oc * reg_w
        # per reduction step: reg_w input broadcasts + reg_oc weight vectors feed reg_oc * reg_w FMAs
        loads = (reg_oc + reg_w) / max(1, vec_acc)
        waste = (_ceil_div(d["ow"], reg_w) * reg_w / d["ow"]) * (_ceil_div(d["n_ocb"], reg_oc) * reg_oc
                                                                   / d["n_ocb"]) - 1.0
        trip_a = _ceil_div(d["n_ocb"], reg_oc)
        trip_b = _ceil_div(d["ow"], reg_w)
        par = d["batch"] * trip_a * d["oh"]
        panel = (d["red"] if not d["depthwise"] else d["kh"] * d["kw"]) * reg_oc * d["ob"] * d["esz"]
        divides = float(d["ow"] % reg_w == 0)
    flops = float(d["flops"])
    row = [
        float(kind == "conv"), float(kind == "qconv"), float(kind == "matmul"), float(kind == "qmatmul"),
        float(kind == "qbmm"), float(d["depthwise"]),
        float(d["groups"] > 1), float(d["kh"] == 1 and d["kw"] == 1), float(d["ksplit"]),
        _log2(d["batch"]), _log2(d["rows"]), _log2(d["cols"]), _log2(d["red"]), _log2(d["h"]), _log2(d["w"]),
        _log2(d["ci"]), _log2(d["co"]), float(d["kh"]), float(d["kw"]), float(d["stride"]), _log2(d["groups"]),
        _log2(flops), _log2(d["bytes"]), math.log2(flops / max(1.0, d["bytes"])),
        float(ta), float(tb), float(lanes), float(vec_acc), vec_acc / n_vregs, float(vec_acc > n_vregs - 4),
        loads, waste, _log2(par), par / ti.cores, _log2(trip_a), _log2(trip_b), _log2(panel), divides,
        float(ti.vector_bits), float(n_vregs), float(ti.cores), float(ti.vector_bits >= 512), float(ti.vnni),
    ]
    assert len(row) == len(FEATURE_NAMES)
    vec = np.asarray(row, dtype=np.float64)
    if text:
        if func is None:
            func = build_func(spec, tile)
        vec = np.concatenate([vec, text_features(func)])
    return vec


def attention_blocks_walked(d: dict[str, float], tq: int, tk: int) -> list[int]:
    """Key blocks each query block walks (all of them, or with a causal mask those up to its last query's
    last visible key), for the attention description ``d``."""
    lq, lk, causal = int(d["lq"]), int(d["lk"]), int(d["causal"])
    reach = tq + (causal if causal >= 0 else lk) + tk - 1
    return [min(lk // tk, (qb * tq + reach) // tk) for qb in range(lq // tq)]


def feature_dict(spec: Any, tile: Sequence[int], target: Any = None, text: bool = False) -> dict[str, float]:
    return dict(zip(feature_names(text), features(spec, tile, target, text).tolist()))


# ----------------------------------------------------------------------------------------------------------------
# text channel
# ----------------------------------------------------------------------------------------------------------------
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z_0-9.]*|\d+|[^\sA-Za-z_0-9]")


def _bucket(tok: str) -> int:
    return int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=4).digest(), "little") % TEXT_DIM


def text_features(func_or_text: Any) -> np.ndarray:
    """Hashed 1- and 2-gram counts (log1p) of the printed TIR; numbers are kept only up to 3 digits and
    identifiers with a trailing numeric suffix are normalized (``x_1`` -> ``x_#``) so the vector is stable."""
    src = func_or_text if isinstance(func_or_text, str) else func_or_text.script()
    toks = []
    for t in _TOKEN.findall(src):
        if t.isdigit():
            t = t if len(t) <= 3 else "<num>"
        else:
            t = re.sub(r"_\d+$", "_#", t)
        toks.append(t)
    v = np.zeros(TEXT_DIM)
    for i, t in enumerate(toks):
        v[_bucket(t)] += 1
        if i:
            v[_bucket(toks[i - 1] + " " + t)] += 1
    return np.log1p(v)


# ----------------------------------------------------------------------------------------------------------------
# candidates
# ----------------------------------------------------------------------------------------------------------------
def build_func(spec: Any, tile: Sequence[int] | None = None):
    """The scheduled kernel of ``spec`` with ``tile`` (None: the kernel's own choice)."""
    tile = None if tile is None else tuple(int(t) for t in tile)
    return T.kernel_of(spec).build(spec, tile)


def _divs(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def candidate_tiles(spec: Any, max_acc: int = 28, limit: int = 32) -> list[tuple[int, ...]]:
    """The valid register tiles of ``spec`` (at most ``limit``, most accumulators first, the kernel's own
    ``pick_tile`` always included, but where an int8 conv's write-back ends in a table: `_table_tile`).  conv: reg_oc | n_ocb (<= 8), reg_w | ow or 8 (predicated), reg_oc * reg_w <=
    max_acc; int8 conv: reg_w must divide ow (tensorize), <= 16 accumulators; matmul: reg_n in {nb, nb/2, nb/4}
    multiples of the lanes, reg_m | rows, vector accumulators <= max_acc (a skinny k-split matmul: only its
    ``pick_tile``, its schedule ignores the tile but for the lanes); int8 matmul / batched matmul (rm, rn):
    rm | m (<= 32), rn | n/16 (the column blocks), rm * rn <= max_acc; attention (tq, tk): tq in
    :data:`ATTENTION_QUERY_BLOCKS`, tk in :data:`ATTENTION_KEY_BLOCKS` dividing the lengths, and the whole
    sequence as one block where it is short (<= :data:`SHORT_SEQUENCE`)."""
    kind = kind_of(spec)
    default = default_tile(spec)
    d = describe(spec)
    out: list[tuple[int, ...]] = []
    if kind == "matmul" and d["ksplit"]:
        return [default]            # a skinny (k-split) matmul's schedule uses only the lanes: one kernel
    if kind == "matmul":
        lanes = default[2]
        nb = d["ob"]
        for reg_n in sorted({nb, nb // 2, nb // 4}, reverse=True):
            if reg_n < lanes or reg_n % lanes:
                continue
            for reg_m in _divs(d["mtot"]):
                if reg_m * (reg_n // lanes) <= max_acc:
                    out.append((reg_m, reg_n, lanes))
    elif kind == "attention":
        for tq in _attention_blocks(int(d["lq"]), ATTENTION_QUERY_BLOCKS, default[0]):
            for tk in _attention_blocks(int(d["lk"]), ATTENTION_KEY_BLOCKS, default[1]):
                # a block's scores within L1 (32 KiB), or a short sequence as one block
                if tq * tk <= ATTENTION_BLOCK_FLOATS or (tq, tk) == (d["lq"], d["lk"]):
                    out.append((tq, tk))
    elif kind in ("qmatmul", "qbmm"):
        for rm in _divs(d["ow"]):
            if rm > 32:
                break
            for rn in _divs(d["n_ocb"]):
                if rm * rn <= max_acc:
                    out.append((rm, rn))
    else:
        n_ocb, ow = d["n_ocb"], d["ow"]
        cap = 16 if kind == "qconv" else max_acc
        if kind == "conv" and d["depthwise"]:
            cap = min(cap, 16)
        widths = _divs(ow)
        if kind == "conv" and ow > 8 and 8 not in widths:
            widths.append(8)
        for roc in _divs(n_ocb):
            if roc > 8:
                break
            for rw in widths:
                if roc * rw <= cap and rw <= 32:
                    out.append((roc, rw))
    # keep the candidates spread: largest accumulator counts first, but always the default
    def acc(t):
        return t[0] * (t[1] // t[2] if len(t) == 3 else t[1])
    out = sorted(set(out), key=lambda t: (-acc(t), t))[:limit]
    if default not in out:
        out = out[:limit - 1] + [default]
    if kind == "qconv" and getattr(spec, "table", None) is not None:     # the default too, where others remain
        out = [t for t in out if _table_tile(t)] or out
    return sorted(out)


TABLE_TILE_MIN_ACC = 12


def _table_tile(tile: tuple[int, ...]) -> bool:
    """Whether an int8 conv tile suits a write-back that ends in an activation table: at least 2 output-channel
    blocks and TABLE_TILE_MIN_ACC accumulators. Measured (1 thread, Sapphire Rapids, 1x1 convs of EfficientNet-B0
    with SiLU's table): 16->96 at 112x112 0.74 ms with (1, 16), 0.39 with (2, 8) / (3, 4) / (6, 2); 24->144
    at 56x56 0.27-0.28 with (1, 7) / (1, 14) / (3, 2), 0.16 with (3, 4); without the table every tile is within
    1.3x. The learned model has no feature for the table (its training kernels have none), so it ranks
    only these."""
    return tile[0] >= 2 and tile[0] * tile[1] >= TABLE_TILE_MIN_ACC


def _attention_blocks(n: int, sizes: Sequence[int], default: int) -> list[int]:
    """The blocks of a length-``n`` axis: ``sizes`` dividing it, the whole axis when it is short, the default."""
    return sorted({b for b in sizes if n % b == 0} | ({n} if n <= SHORT_SEQUENCE else set()) | {default})


def default_tile(spec: Any) -> tuple[int, ...]:
    """The hand-written choice of the kernel (its ``pick_tile``, with the same arguments ``make_*`` uses)."""
    return tuple(T.kernel_of(spec).default_tile(spec))


def spec_to_json(spec: Any) -> dict[str, Any]:
    """JSON-able {kind, fields} of a spec (nested Requant dataclasses become dicts)."""
    return {"kind": kind_of(spec), "fields": dataclasses.asdict(spec)}


def spec_from_json(obj: dict[str, Any]) -> Any:
    """The spec of a :func:`spec_to_json` object (fields a newer spec added are dropped by the kernel)."""
    kind, f = obj["kind"], dict(obj["fields"])
    for k, v in list(f.items()):
        if isinstance(v, list):
            f[k] = tuple(v)
    return T.kernel(kind).from_fields(f)


def make_spec(kind: str, **fields: Any) -> Any:
    """The ``kind`` kernel spec with these dataclass fields (nested requants as dicts, as in the JSON).
    Unlike :func:`spec_from_json`, a field the spec does not have is an error (a typo, not an old row)."""
    kernel = T.kernel(kind)
    unknown = set(fields) - {f.name for f in dataclasses.fields(kernel.spec_type)}
    if unknown:
        raise TypeError(f"{kernel.spec_type.__name__} has no field(s) {', '.join(sorted(unknown))}")
    return kernel.from_fields(fields)
