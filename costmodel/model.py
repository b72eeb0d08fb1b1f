"""The cost model: a Protocol the passes and the tile policy call, and its XGBoost implementation.

``CostModel.predict(X)`` maps a (candidates x features) matrix (columns :func:`costmodel.features.feature_names`)
to scores where **lower is faster** -- for :class:`XGBCostModel` with the ``reg`` objective the score is the
predicted log-latency (seconds); with ``rank`` it is a ranking score only comparable within one task.  Tests can
stub the Protocol with any object that has ``predict`` and ``feature_names``.

:class:`XGBCostModel` holds one booster per kernel kind (conv, qconv, matmul, qmatmul, qbmm, attention: each is its
own loop nest, and the knob columns mean different loops in each, so one shared ensemble spends its splits
separating the kinds).  A row goes to the booster of its ``op_*`` one-hot column (attention: none set); a kind the
model was not trained on raises :class:`UntrainedKind`.  Each booster regresses ``log(latency / flops)`` (seconds
per FLOP: the shape-dependent scale is removed so the trees spend their splits on the knobs) and adds
``log(flops)`` back, or fits XGBoost's ``rank:pairwise`` objective with one query group per task.  ``python -m
costmodel.model --kinds K --update M.json`` retrains only kind K's booster inside an existing model file, the
other boosters left as they were.  The model saves to / loads from one JSON file holding the boosters (XGBoost's
own JSON) and the metadata (feature version and names, objective, the machine it was measured on, metrics).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from . import features as F

__all__ = ["CostModel", "Dataset", "UntrainedKind", "XGBCostModel", "dataset_from_rows", "evaluate", "spearman",
           "split_tasks"]


@runtime_checkable
class CostModel(Protocol):
    """What a pass / the tile policy needs: scores for candidate feature rows, lower = faster."""

    feature_names: tuple[str, ...]

    def predict(self, X: np.ndarray) -> np.ndarray: ...


# ----------------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Dataset:
    X: np.ndarray                 # (rows, features)
    y: np.ndarray                 # log(latency seconds)
    log_flops: np.ndarray
    task: list[str]
    tiles: list[tuple[int, ...]]
    names: tuple[str, ...]
    machine: dict[str, Any] = field(default_factory=dict)
    noise: np.ndarray | None = None   # repeat-to-repeat noise of each label: robust std of log(runs_s)

    def subset(self, idx: Sequence[int]) -> Dataset:
        idx = np.asarray(idx, dtype=int)
        return Dataset(self.X[idx], self.y[idx], self.log_flops[idx], [self.task[i] for i in idx],
                       [self.tiles[i] for i in idx], self.names, self.machine,
                       None if self.noise is None else self.noise[idx])

    def groups(self) -> dict[str, list[int]]:
        g: dict[str, list[int]] = defaultdict(list)
        for i, t in enumerate(self.task):
            g[t].append(i)
        return dict(g)


def dataset_from_rows(rows: Sequence[dict[str, Any]], text: bool = False) -> Dataset:
    """Featurize measured JSONL rows (see :mod:`costmodel.measure`).  Features are computed for the machine the
    rows were measured on (its mcpu and thread count).  Rows of a tile that is no longer a candidate of its kernel
    (:func:`costmodel.features.candidate_tiles`, e.g. the tiles of a k-split matmul, which all compile to the same
    kernel) are skipped: the policy never chooses among them."""
    X, y, lf, task, tiles, noise = [], [], [], [], [], []
    machine: dict[str, Any] = {}
    cands: dict[str, set[tuple[int, ...]]] = {}
    for r in rows:
        m = r.get("machine", {})
        machine = machine or m
        spec = F.spec_from_json(r["spec"])
        tile = tuple(int(t) for t in r["tile"])
        if r["task"] not in cands:
            cands[r["task"]] = set(F.candidate_tiles(spec))
        if tile not in cands[r["task"]]:
            continue
        ti = F.target_info(f"llvm -mcpu={m.get('mcpu', 'znver4')} -num-cores={m.get('threads', 1)}")
        X.append(F.features(spec, tile, ti, text=text))
        y.append(math.log(r["latency_s"]))
        lf.append(math.log(max(1.0, F.describe(spec)["flops"])))
        task.append(r["task"])
        tiles.append(tile)
        noise.append(run_noise(r.get("runs_s") or []))
    return Dataset(np.asarray(X), np.asarray(y), np.asarray(lf), task, tiles, F.feature_names(text), machine,
                   np.asarray(noise))


def run_noise(runs: Sequence[float]) -> float:
    """Repeat-to-repeat noise of one measured candidate: 1.4826 x the median absolute deviation of its log
    repeat times (all sessions' repeats for merged rows, so it includes the load shifts between sessions)."""
    r = np.log(np.asarray([x for x in runs if x > 0], dtype=np.float64))
    if len(r) < 2:
        return 0.0
    return float(1.4826 * np.median(np.abs(r - np.median(r))))


def noise_tied_ranks(lat: np.ndarray, tol: float) -> np.ndarray:
    """Ranks of ``lat`` where candidates whose log-latencies lie within ``tol`` of the first (fastest) member of
    their group share the group's average rank: the measurement cannot order them."""
    order = np.argsort(lat, kind="stable")
    ll = np.log(lat[order])
    ranks = np.empty(len(lat))
    i = 0
    while i < len(ll):
        j = i
        while j + 1 < len(ll) and ll[j + 1] - ll[i] <= tol:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


def split_tasks(ds: Dataset, test_frac: float = 0.25, seed: int = 0) -> tuple[list[int], list[int]]:
    """Row indices (train, test) with whole tasks held out (the test shapes are never seen in training),
    stratified by kernel kind.  Each kind draws from its own random stream, so adding kernels of one kind leaves
    the other kinds' held-out kernels unchanged; a kind with a single kernel is never held out (the per-kind model
    could not score it)."""
    by_kind: dict[str, list[str]] = defaultdict(list)
    for t in sorted(set(ds.task)):
        by_kind[t.split(":")[0]].append(t)
    test_tasks = set()
    for kind, ts in sorted(by_kind.items()):
        if len(ts) < 2:
            continue                 # the only kernel of its kind stays in training (its kind needs a booster)
        ts = list(ts)
        np.random.default_rng([seed, *kind.encode()]).shuffle(ts)
        test_tasks.update(ts[:max(1, int(round(test_frac * len(ts))))])
    train = [i for i, t in enumerate(ds.task) if t not in test_tasks]
    test = [i for i, t in enumerate(ds.task) if t in test_tasks]
    return train, test


# ----------------------------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------------------------
class UntrainedKind(ValueError):
    """A feature row of a kernel kind the model has no booster for (it was trained without that kind's rows)."""


#: the one-hot feature column of each kernel kind, in :data:`costmodel.features.KINDS` order
KIND_COLUMNS = ("op_conv_fp32", "op_conv_int8", "op_matmul_fp32", "op_matmul_int8", "op_bmm_int8")
#: the kind added without a column of its own (the feature columns stay those of version 2, so the saved
#: boosters of the other kinds keep loading): its rows have every op_* column 0
COLUMNLESS_KIND = "attention"


def row_kinds(X: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """The kernel kind (an index into :data:`costmodel.features.KINDS`) of each feature row: its op_* column, or
    :data:`COLUMNLESS_KIND` where none is set."""
    cols = [list(names).index(c) for c in KIND_COLUMNS]
    onehot = np.asarray(X)[:, cols]
    if not len(onehot):
        return np.zeros(0, dtype=int)
    if not np.all(np.isin(onehot, (0, 1))) or np.any(onehot.sum(axis=1) > 1):
        raise ValueError("feature rows with more than one op_* kind column set")
    return np.where(onehot.sum(axis=1) == 1, np.argmax(onehot, axis=1), F.KINDS.index(COLUMNLESS_KIND))


FORMAT_VERSION = 2      # 2: one booster per kernel kind ("boosters"); 1: one booster for all kinds ("booster")
DEFAULT_PARAMS = {"max_depth": 6, "eta": 0.1, "subsample": 0.9, "colsample_bytree": 0.9, "min_child_weight": 1,
                  "lambda": 1.0, "seed": 0, "nthread": 1}


class XGBCostModel:
    """XGBoost on log-latency (``objective="reg"``) or pairwise ranking within tasks (``"rank"``), one booster per
    kernel kind."""

    def __init__(self, objective: str = "reg", num_rounds: int = 150, params: dict[str, Any] | None = None,
                 text: bool = False):
        if objective not in ("reg", "rank"):
            raise ValueError(objective)
        self.objective = objective
        self.num_rounds = num_rounds
        self.params = dict(DEFAULT_PARAMS, **(params or {}))
        self.text = text
        self.feature_names: tuple[str, ...] = F.feature_names(text)
        self.meta: dict[str, Any] = {}
        self._boosters: dict[str, Any] = {}        # kind -> xgboost.Booster
        self._identity: str | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kernel kinds this model has a booster for."""
        return tuple(k for k in F.KINDS if k in self._boosters)

    @property
    def identity(self) -> str | None:
        """What the policy's decision cache keys on: the sha256 of the model file it was loaded from, else of the
        trained booster (None before training).  A retrained model has another identity."""
        if self._identity is None and self._boosters:
            import hashlib
            h = hashlib.sha256()
            for kind in self.kinds:
                h.update(kind.encode())
                h.update(bytes(self._boosters[kind].save_raw(raw_format="json")))
            h.update(json.dumps([self.objective, list(self.feature_names), F.FEATURE_VERSION]).encode())
            self._identity = "booster:" + h.hexdigest()
        return self._identity

    @identity.setter
    def identity(self, value: str | None) -> None:
        self._identity = value

    # -- training ----------------------------------------------------------------------------------------
    def fit(self, ds: Dataset) -> XGBCostModel:
        """Train one booster per kernel kind present in ``ds`` (replacing any earlier training)."""
        if tuple(ds.names) != self.feature_names:
            raise ValueError("dataset features do not match the model's (text channel on/off?)")
        kinds = row_kinds(ds.X, self.feature_names)
        self._boosters = {F.KINDS[k]: self._fit_one(ds.subset(np.flatnonzero(kinds == k)))
                          for k in np.unique(kinds)}
        self._identity = None
        self.meta.update({"machine": ds.machine, "rows": len(ds.y), "tasks": len(set(ds.task))})
        return self

    def refit_kinds(self, ds: Dataset) -> XGBCostModel:
        """Train the boosters of the kinds present in ``ds`` only; the other kinds' boosters stay as they are
        (a kind measured later joins a shipped model without retraining the rest)."""
        kinds = row_kinds(ds.X, self.feature_names)
        for k in np.unique(kinds):
            sub = ds.subset(np.flatnonzero(kinds == k))
            self._boosters[F.KINDS[k]] = self._fit_one(sub)
            self.meta.setdefault("kinds", {})[F.KINDS[k]] = {"rows": len(sub.y), "tasks": len(set(sub.task))}
        self._identity = None
        return self

    def _fit_one(self, ds: Dataset):
        import xgboost as xgb
        params = dict(self.params)
        if self.objective == "reg":
            params["objective"] = "reg:squarederror"
            dm = xgb.DMatrix(ds.X, label=ds.y - ds.log_flops, feature_names=list(self.feature_names))
        else:
            params["objective"] = "rank:pairwise"
            order = np.argsort(np.asarray(ds.task), kind="stable")
            X, y = ds.X[order], ds.y[order]
            tasks = [ds.task[i] for i in order]
            qid = np.unique(np.asarray(tasks), return_inverse=True)[1]
            # relevance: higher = faster; integer grades from the within-task latency rank
            rel = np.zeros(len(y))
            for q in np.unique(qid):
                m = qid == q
                r = np.argsort(np.argsort(-y[m]))        # 0 = slowest
                rel[m] = np.floor(31 * r / max(1, m.sum() - 1))
            dm = xgb.DMatrix(X, label=rel, qid=qid, feature_names=list(self.feature_names))
        return xgb.train(params, dm, num_boost_round=self.num_rounds)

    # -- inference ---------------------------------------------------------------------------------------
    def predict(self, X: np.ndarray) -> np.ndarray:
        """Scores, lower = faster (log-seconds for ``reg``)."""
        import xgboost as xgb
        if not self._boosters:
            raise RuntimeError("model is not trained")
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        kinds = row_kinds(X, self.feature_names)
        out = np.empty(len(X), dtype=np.float64)
        for k in np.unique(kinds):
            booster = self._boosters.get(F.KINDS[k])
            if booster is None:
                raise UntrainedKind(f"the cost model has no {F.KINDS[k]!r} kernels (trained on: "
                                    f"{', '.join(self.kinds)}); retrain with `compile tune-costmodel`")
            idx = np.flatnonzero(kinds == k)
            out[idx] = booster.predict(xgb.DMatrix(X[idx], feature_names=list(self.feature_names)))
        if self.objective == "reg":
            li = self.feature_names.index("log_flops")
            # log_flops column is log2(flops + 1); convert to natural log of flops
            flops = np.maximum(np.exp2(X[:, li]) - 1.0, 1.0)
            return out + np.log(flops)
        return -out

    # -- persistence -------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"format": "dyc-costmodel", "format_version": FORMAT_VERSION, "feature_version": F.FEATURE_VERSION,
                "feature_names": list(self.feature_names), "objective": self.objective, "text": self.text,
                "num_rounds": self.num_rounds, "params": self.params, "meta": self.meta,
                "boosters": {k: json.loads(bytes(self._boosters[k].save_raw(raw_format="json")).decode())
                             for k in self.kinds}}

    def save(self, path: str) -> None:
        import os
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
        with open(path, "w") as f:
            json.dump(self.to_json(), f, separators=(",", ":"))

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> XGBCostModel:
        import xgboost as xgb
        if obj.get("format") != "dyc-costmodel":
            raise ValueError("not a dyc cost model")
        if obj.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"cost model file format {obj.get('format_version')}, this code {FORMAT_VERSION}: "
                             "retrain with `compile tune-costmodel`")
        if obj["feature_version"] != F.FEATURE_VERSION or \
                tuple(obj["feature_names"]) != F.feature_names(obj.get("text", False)):
            raise ValueError(f"cost model has feature version {obj['feature_version']}, "
                             f"this code {F.FEATURE_VERSION}: retrain with `compile tune-costmodel`")
        m = cls(obj["objective"], obj["num_rounds"], obj["params"], obj.get("text", False))
        m.meta = obj.get("meta", {})
        for kind, raw in obj["boosters"].items():
            if kind not in F.KINDS:
                raise ValueError(f"cost model has a booster for an unknown kernel kind {kind!r}")
            b = xgb.Booster()
            b.load_model(bytearray(json.dumps(raw).encode()))
            m._boosters[kind] = b
        return m

    @classmethod
    def load(cls, path: str) -> XGBCostModel:
        with open(path) as f:
            return cls.from_json(json.load(f))


# ----------------------------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------------------------
def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); nan for fewer than 2 distinct values."""
    from scipy.stats import spearmanr
    a, b = np.asarray(a), np.asarray(b)
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(spearmanr(a, b).statistic)


def evaluate(model: CostModel, ds: Dataset, default_tiles: dict[str, tuple[int, ...]] | None = None
             ) -> dict[str, Any]:
    """Quality on ``ds`` (normally held-out tasks):

    * ``spearman_global``: predicted vs measured latency over all rows (only meaningful for ``reg`` models);
    * ``spearman_within_task``: mean over tasks of the within-task Spearman (ranking the tiles of one kernel);
    * ``spearman_noise_tied`` (rows with repeats): the same against noise-tied measured ranks
      (:func:`noise_tied_ranks`, tolerance = the task's median :func:`run_noise`): candidates the measurement
      cannot order share a rank, so near-tied tiles neither reward nor punish the model;
    * ``regret_median`` / ``regret_mean`` / ``regret_max``: latency of the model's top-1 tile / best measured - 1;
    * ``top1``: fraction of tasks where the model picks the measured best;
    * ``default_regret_*`` (when ``default_tiles`` maps task -> hand-written tile and that tile was measured).
    """
    pred = np.asarray(model.predict(ds.X))
    out: dict[str, Any] = {"rows": len(ds.y), "tasks": len(set(ds.task))}
    if getattr(model, "objective", "reg") == "reg":
        out["spearman_global"] = spearman(pred, ds.y)
    per_task, per_task_adj, regrets, top1, dreg, per = [], [], [], 0, [], {}
    for t, idx in sorted(ds.groups().items()):
        lat = np.exp(ds.y[idx])
        p = pred[idx]
        rho = spearman(p, lat)
        if not math.isnan(rho):
            per_task.append(rho)
        rho_adj = float("nan")
        if ds.noise is not None:
            rho_adj = spearman(p, noise_tied_ranks(lat, float(np.median(ds.noise[idx]))))
            if not math.isnan(rho_adj):
                per_task_adj.append(rho_adj)
        best = lat.min()
        chosen = lat[int(np.argmin(p))]
        regrets.append(chosen / best - 1.0)
        top1 += int(chosen == best)
        entry = {"spearman": rho, "spearman_noise_tied": rho_adj, "regret": chosen / best - 1.0, "n": len(idx)}
        if default_tiles and t in default_tiles:
            tl = [ds.tiles[i] for i in idx]
            if tuple(default_tiles[t]) in tl:
                r = lat[tl.index(tuple(default_tiles[t]))] / best - 1.0
                dreg.append(r)
                entry["default_regret"] = r
        per[t] = entry
    out["spearman_within_task"] = float(np.mean(per_task)) if per_task else float("nan")
    out["spearman_within_task_median"] = float(np.median(per_task)) if per_task else float("nan")
    if per_task_adj:
        out["spearman_noise_tied"] = float(np.mean(per_task_adj))
        out["spearman_noise_tied_median"] = float(np.median(per_task_adj))
    out["regret_median"] = float(np.median(regrets))
    out["regret_mean"] = float(np.mean(regrets))
    out["regret_max"] = float(np.max(regrets))
    out["top1"] = top1 / max(1, len(regrets))
    if dreg:
        out["default_regret_median"] = float(np.median(dreg))
        out["default_regret_mean"] = float(np.mean(dreg))
    out["per_task"] = per
    out["per_kind"] = per_kind_summary(per)
    return out


def per_kind_summary(per_task: dict[str, dict[str, Any]] | Sequence[tuple[str, dict[str, Any]]]
                     ) -> dict[str, dict[str, float]]:
    """Per kernel kind (the task name's prefix: conv, qconv, matmul, qmatmul, qbmm) of per-task entries of
    :func:`evaluate`: tasks, within-task Spearman mean / median, regret median / mean / max, and the hand-written
    tile's regret median / mean.  ``per_task``: a dict task -> entry or (task, entry) pairs (several splits'
    held-out tasks pooled; a task held out in two splits counts twice)."""
    items = per_task.items() if isinstance(per_task, dict) else per_task
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t, e in items:
        by[t.split(":")[0]].append(e)
    out = {}
    for kind, es in sorted(by.items()):
        rho = [e["spearman"] for e in es if not math.isnan(e["spearman"])]
        adj = [e["spearman_noise_tied"] for e in es if not math.isnan(e.get("spearman_noise_tied", math.nan))]
        reg = [e["regret"] for e in es]
        dreg = [e["default_regret"] for e in es if "default_regret" in e]
        d = {"tasks": float(len(es)),
             "spearman_within_task": float(np.mean(rho)) if rho else float("nan"),
             "spearman_within_task_median": float(np.median(rho)) if rho else float("nan"),
             "regret_median": float(np.median(reg)), "regret_mean": float(np.mean(reg)),
             "regret_max": float(np.max(reg))}
        if adj:
            d["spearman_noise_tied"] = float(np.mean(adj))
        if dreg:
            d["default_regret_median"] = float(np.median(dreg))
            d["default_regret_mean"] = float(np.mean(dreg))
        out[kind] = d
    return out


def default_tiles_of(rows: Sequence[dict[str, Any]]) -> dict[str, tuple[int, ...]]:
    """task -> the kernel's hand-written pick_tile, for the rows' specs."""
    out = {}
    for r in rows:
        if r["task"] not in out:
            out[r["task"]] = F.default_tile(F.spec_from_json(r["spec"]))
    return out


# ----------------------------------------------------------------------------------------------------------------
# train / evaluate entry points (used by `compile tune-costmodel` and docs/costmodel.md)
# ----------------------------------------------------------------------------------------------------------------
def holdout_report(rows: Sequence[dict[str, Any]], objective: str = "reg", seeds: Sequence[int] = (0, 1, 2),
                   test_frac: float = 0.25, text: bool = False, num_rounds: int = 150) -> dict[str, Any]:
    """Train on 75 % of the tasks and evaluate on the held-out 25 % (whole shapes never seen in training),
    for each seed of the split; returns the per-seed metrics and their mean."""
    ds = dataset_from_rows(rows, text=text)
    dt = default_tiles_of(rows)
    res = []
    for s in seeds:
        tr, te = split_tasks(ds, test_frac, s)
        m = XGBCostModel(objective, num_rounds, text=text).fit(ds.subset(tr))
        r = evaluate(m, ds.subset(te), dt)
        r["seed"] = s
        res.append(r)
    keys = [k for k in res[0] if isinstance(res[0][k], float)]
    mean = {k: float(np.nanmean([r[k] for r in res])) for k in keys}
    pooled = per_kind_summary([(t, e) for r in res for t, e in r["per_task"].items()])
    return {"objective": objective, "text": text, "splits": res, "mean": mean, "per_kind": pooled}


def train_full(rows: Sequence[dict[str, Any]], objective: str = "reg", text: bool = False,
               num_rounds: int = 150, metrics: dict[str, Any] | None = None) -> XGBCostModel:
    m = XGBCostModel(objective, num_rounds, text=text).fit(dataset_from_rows(rows, text=text))
    if metrics:
        m.meta["holdout"] = metrics
    return m


def main(argv: Sequence[str] | None = None) -> int:
    """python -m costmodel.model --data D.jsonl [--objective reg|rank] [--text] [--out M.json] [--eval]
    [--kinds K,...] [--update M.json]"""
    import argparse

    from .measure import load_jsonl
    p = argparse.ArgumentParser(description="train / evaluate the cost model on measured JSON lines")
    p.add_argument("--data", required=True)
    p.add_argument("--objective", default="reg", choices=["reg", "rank"])
    p.add_argument("--text", action="store_true", help="add the hashed-TIR text channel")
    p.add_argument("--rounds", type=int, default=150)
    p.add_argument("--eval", action="store_true", help="held-out-task evaluation (3 splits; per kind too)")
    p.add_argument("--per-task", action="store_true", help="print per-task metrics of the first split")
    p.add_argument("--splits", type=int, default=3, help="held-out splits (seeds 0..N-1, default 3)")
    p.add_argument("--out", help="train on all rows and write the model here")
    p.add_argument("--kinds", help="comma-separated kernel kinds: use only their rows (evaluation, training)")
    p.add_argument("--update", metavar="M.json",
                   help="retrain only the boosters of the rows' kinds inside this model file (its other "
                        "boosters, objective and parameters kept) and write it back")
    a = p.parse_args(argv)
    rows = load_jsonl(a.data)
    if a.kinds:
        kinds = {k.strip() for k in a.kinds.split(",") if k.strip()}
        if kinds - set(F.KINDS):
            p.error(f"unknown kernel kind(s) {sorted(kinds - set(F.KINDS))}; known: {', '.join(F.KINDS)}")
        rows = [r for r in rows if r["spec"]["kind"] in kinds]
    metrics = None
    if a.eval:
        rep = holdout_report(rows, a.objective, seeds=tuple(range(a.splits)), text=a.text, num_rounds=a.rounds)
        metrics = rep["mean"]
        for r in rep["splits"]:
            print(f"split {r['seed']}: " + "  ".join(f"{k}={r[k]:.3f}" for k in sorted(r)
                                                   if isinstance(r[k], float)))
        print("mean: " + "  ".join(f"{k}={v:.3f}" for k, v in sorted(metrics.items())))
        print(f"per kernel kind (held-out kernels of the {len(rep['splits'])} splits pooled):")
        for kind, d in rep["per_kind"].items():
            print(f"  {kind:<8s} tasks={int(d['tasks']):<3d} " + "  ".join(
                f"{k}={v:.3f}" for k, v in d.items() if k != "tasks"))
        if a.per_task:
            for t, e in sorted(rep["splits"][0]["per_task"].items()):
                print(f"  {t:<48s} n={e['n']:<3d} rho={e['spearman']:.3f} regret={e['regret']:.3f} "
                      f"default_regret={e.get('default_regret', float('nan')):.3f}")
    if a.out:
        m = train_full(rows, a.objective, a.text, a.rounds, metrics)
        m.save(a.out)
        print(f"wrote {a.out} ({len(rows)} rows)")
    if a.update:
        m = XGBCostModel.load(a.update)
        if (m.objective, m.text) != (a.objective, a.text):
            p.error(f"{a.update} is a {m.objective!r} model (text {m.text}); pass the same --objective / --text")
        m.refit_kinds(dataset_from_rows(rows, text=m.text))
        retrained = sorted({r["spec"]["kind"] for r in rows})
        for kind in retrained:
            m.meta["kinds"][kind]["holdout"] = metrics
        m.save(a.update)
        print(f"updated {a.update}: retrained {', '.join(retrained)} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
