"""Mean and standard deviation of a benchmark's metrics over several runs that differ only in their seed.

Each run is a results folder written by ``diffguard benchmark CONFIG --seed S`` (the seed of every stochastic
method: Clean-Grad cutouts, oracle labels, MC-Dropout masks, DiffNB noise). The sample plan (limits, limit seed,
sets), the models and the methods must be the same in every run, so that the spread measures the methods'
randomness only. The standard deviation is the population one (``ddof=0``), as in OpenOOD's ``eval_ood.py``.

    diffguard benchmark fmnist6 --limit 200 --seed 0 --out results/s0
    diffguard benchmark fmnist6 --limit 200 --seed 1 --out results/s1
    diffguard seeds results/s0 results/s1 --out results/seeds
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffguard.evaluation.ood_metrics import mean_std
from diffguard.run.store import StoreError

METRICS = ("AUROC", "FPR@95 (OOD-pos, v1.5)", "FPR@95 (ID-pos, paper)", "AUPR-IN", "AUPR-OUT", "ACC")
# run_config.json keys that must agree between runs (everything that decides which rows are scored, and by what)
_SAME = ("benchmark", "sets", "limit", "val_limit", "train_limit", "limit_seed", "classifier", "diffusion",
         "image_size", "ensemble")


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise StoreError(f"{path.parent} has no {path.name}; run `diffguard benchmark` into it (or "
                         f"`diffguard report {path.parent}`) first")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreError(f"{path}: unreadable {what} ({err}); rewrite it with `diffguard report {path.parent}`") \
            from None


def read_run(folder: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(run_config.json, metrics.json rows) of a results folder."""
    folder = Path(folder)
    cfg = _read_json(folder / "run_config.json", "run configuration")
    rows = _read_json(folder / "metrics.json", "metrics")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "key" in r and "set" in r for r in rows):
        raise StoreError(f"{folder}/metrics.json is not a list of metric rows with 'key' and 'set'; rewrite it with "
                         f"`diffguard report {folder}`")
    return cfg, rows


def check_same_plan(configs: Sequence[dict[str, Any]], names: Sequence[str]) -> None:
    """Refuse runs whose sample plan, models or method names differ (ValueError naming the first difference)."""
    def methods(c: dict[str, Any]) -> list[str]:
        return [m.get("name") for m in c.get("methods", [])]

    for cfg, name in zip(configs[1:], names[1:]):
        diff = [k for k in _SAME if cfg.get(k) != configs[0].get(k)]
        if methods(cfg) != methods(configs[0]):
            diff.append("methods")
        if diff:
            raise ValueError(f"{name} differs from {names[0]} in {diff}: mean ± std is only meaningful over runs of "
                             "one configuration that differ in --seed")


def aggregate(runs: Sequence[list[dict[str, Any]]], names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per (method, set) with ``"<metric> mean"`` and ``"<metric> std"`` over the runs (fractions).

    Args:
        runs: the metric rows of each run (``metrics.json``), at least two; every run must hold the same
            (method key, set) rows and metrics.
        names: a label per run for error messages (default: run 0, run 1, ...).
    """
    names = list(names or [f"run {i}" for i in range(len(runs))])
    if len(runs) < 2:
        raise ValueError(f"mean ± std needs at least two runs, got {len(runs)}")
    index = [{(r["key"], r["set"]): r for r in rows} for rows in runs]
    for idx, name in zip(index[1:], names[1:]):
        if set(idx) != set(index[0]):
            missing = sorted(set(index[0]) ^ set(idx))
            raise ValueError(f"{names[0]} and {name} do not hold the same (method, set) rows; differing: "
                             f"{missing[:6]}. Finish both runs (rerun the benchmark command) before aggregating")
    out = []
    for (key, set_name), first in index[0].items():
        metrics = [m for m in METRICS if all(m in idx[(key, set_name)] for idx in index)]
        stats = mean_std([{m: float(idx[(key, set_name)][m]) for m in metrics} for idx in index])
        row = {"method": first.get("method", key), "key": key, "set": set_name, "group": first.get("group"),
               "runs": len(runs)}
        for m in metrics:
            row[f"{m} mean"], row[f"{m} std"] = stats[m]["mean"], stats[m]["std"]
        out.append(row)
    return out


def pm(mean: float, std: float) -> str:
    """``"94.60 ± 0.12"``: a fraction's mean and std in percent."""
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One row per method: AUROC mean ± std per group (near / far / all) and both FPR@95 over all OOD sets."""
    out: list[dict[str, str]] = []
    for key in dict.fromkeys(r["key"] for r in rows):
        got = {r["set"]: r for r in rows if r["key"] == key}
        if "all" not in got:
            continue
        row = {"method": got["all"]["method"]}
        for g in ("near", "far", "all"):
            if g in got and "AUROC mean" in got[g]:
                row[f"AUROC {g} (%)"] = pm(got[g]["AUROC mean"], got[g]["AUROC std"])
        for m in METRICS[1:3]:
            if f"{m} mean" in got["all"]:
                row[f"{m} all (%)"] = pm(got["all"][f"{m} mean"], got["all"][f"{m} std"])
        out.append(row)
    return out
