"""One trial's work: the method of a drawn spec scores the validation sets; the objective is computed from the
scores (for DiffGuard after its post-hoc distance choice); the scores are stored for fusion tuning and reports.

Post-hoc detectors (``needs.images`` False) score the cached classifier outputs of :class:`ValidationData`; their
cost per image is the shared classifier pass plus their own scoring. Image-level detectors score images batch by
batch; their cost is the wall time of ``details`` per image. Fits (KNN, ViM, MDS) use ID-train and are timed apart.

DiffGuard (``Space.post_hoc == "distance"``): each trial computes every available distance in one synthesis pass
(``dist:<name>`` columns) and :func:`rank_scores` ranks each distance and the sum of every pair of them after a
robust standardisation on ID-val (z = (s - median) / IQR). The trial's objective is that of the best of them: a
single distance, raw or class-calibrated (``<name>|class``: the method spec's ``calibration: class``, scored on
ID-val out of sample by 2-fold cross-fitting), or a pair ``<a>+<b>`` (the spec's ``score_distance: a+b`` with
the ID-val medians and scales as ``score_scales``, :mod:`diffguard.distances.combined`; two statistics per
distance, so they are fitted on all of ID-val).
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from diffguard.detectors.calibration import ClassCalibration, cross_fitted
from diffguard.detectors.detector import detector_factory
from diffguard.detectors.diffguard_presets import resolve_preset
from diffguard.detectors.fusion import robust_standardise
from diffguard.diffusion.early_stop import STANDARD_PSNR_PEAK
from diffguard.distances import list_distances
from diffguard.distances.combined import score_names
from diffguard.specs.method_specs import MethodConfig
from diffguard.tune.data import Models, ValidationData
from diffguard.tune.objective import Evaluation, Objective
from diffguard.tune.space import Space

Columns = dict[str, dict[str, np.ndarray]]  # set name -> column ("ids", "labels", "score", "dist:<name>") -> (N,)
NEEDS_WEIGHTS = ("dists", "lpips")  # distances that need a local weights file


def _parameters(detector: str) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(detector_factory(detector)).parameters)


def resolved_kwargs(cfg: MethodConfig) -> dict[str, Any] | None:
    """A preset-based detector's (DiffGuard's) resolved keyword arguments; None for other detectors."""
    params = _parameters(cfg.detector)
    if "overrides" not in params or "preset" not in params:
        return None

    options = {k: v for k, v in cfg.params.items() if k not in ("preset", "overrides")}
    return resolve_preset(cfg.params.get("preset", params["preset"].default), cfg.params.get("overrides", ()),
                          **options)


def _stop_label(rule: Any) -> str | None:
    """"none" or "psnr:<dB>" for a standard-PSNR early-stop rule (read from its closure); None when unknown."""
    if rule is None:
        return "none"
    cells = dict(zip(rule.__code__.co_freevars, (c.cell_contents for c in rule.__closure__ or ())))

    if "psnr_below" in getattr(rule, "__qualname__", "") and cells.get("peak") == STANDARD_PSNR_PEAK:
        return f"psnr:{cells['threshold_db']:g}"
    return None


def start_values(cfg: MethodConfig, space: Space, facts: dict[str, Any]) -> dict[str, Any]:
    """The start spec's value of every parameter of ``space`` that can be read (for conditions and the first
    trial)."""
    resolved = resolved_kwargs(cfg)
    defaults = {k: p.default for k, p in _parameters(cfg.detector).items()}
    out: dict[str, Any] = {}
    for p in space.params:
        head, _, field = p.key.partition(".")
        if p.via == "param" or resolved is None:
            value = cfg.params.get(p.key, defaults.get(p.key))
        elif field:
            value = getattr(resolved.get(head), field, None)
        else:
            value = resolved.get(p.key)
        if p.key == "inversion.stop":
            value = _stop_label(value)
        if p.fraction_of and value is not None:
            value = value / facts[p.fraction_of]
        elif p.fraction_of and p.key == "inversion.cap":  # no cap: inversion may reach the top of the grid
            value = 1.0
        if value is not None and value is not inspect.Parameter.empty:
            out[p.name] = value
    return out


def facts_of(cfg: MethodConfig, data: ValidationData, models: Models) -> dict[str, Any]:
    """Quantities fractions refer to: the feature width D and DiffGuard's DDIM steps."""
    out: dict[str, Any] = {}
    resolved = resolved_kwargs(cfg)
    if resolved is not None:
        out["inversion.steps"] = resolved["inversion"].steps
    else:
        out["feature_dim"] = int(data.outputs(data.val, models.classifier, models.device).features.shape[1])
    return out


def with_every_distance(cfg: MethodConfig) -> MethodConfig:
    """The spec computing every distance this machine can (those needing weights only when the spec names them)."""

    have = tuple(resolved_kwargs(cfg)["distances"])
    names = [n for n in list_distances() if n not in NEEDS_WEIGHTS or n in have]
    return cfg.with_option("distances", repr(tuple(names)))


def with_score(cfg: MethodConfig, choice: str, scales: dict[str, Any] | None = None) -> MethodConfig:
    """The deployable spec: only the chosen distance(s), as the score; ``<name>|class`` also sets the class
    calibration; a pair ``<a>+<b>`` needs its ID-val ``scales`` {name: (median, scale)} (its ranking row's)."""

    score, _, cal = choice.partition("|")
    names = score_names(score)
    out = cfg.with_option("distances", repr(names)).with_option("score_distance", score)
    if len(names) > 1:
        if scales is None:
            raise ValueError(f"the combined score {score!r} needs its ID-val scales")
        out = out.with_option("score_scales", repr({n: tuple(float(v) for v in scales[n]) for n in names}))
    return dataclasses.replace(tidy(out), calibration=cal or None)


def tidy(cfg: MethodConfig) -> MethodConfig:
    """The spec with each override key once (its last value, which is the one that applies)."""
    overrides = cfg.params.get("overrides")
    if not overrides:
        return cfg
    last = {o.partition("=")[0]: i for i, o in enumerate(overrides)}
    kept = [o for i, o in enumerate(overrides) if last[o.partition("=")[0]] == i]
    return dataclasses.replace(cfg, params={**cfg.params, "overrides": kept})


def fit_detector(det: Any, data: ValidationData, models: Models) -> float:
    """Fit on ID-train outputs when the detector needs it; returns the seconds it took."""
    t0 = time.perf_counter()
    if det.needs.fit:
        det.fit(data.outputs(data.train, models.classifier, models.device))
    return time.perf_counter() - t0


def score_detector(det: Any, data: ValidationData, models: Models, batch_size: int,
                   progress: bool = False) -> tuple[Columns, float]:
    """Score every evaluation set with a fitted detector: (columns, seconds per image)."""
    cols, seconds, n = {}, 0.0, 0
    for name in data.eval_sets():
        if not det.needs.images:
            out = data.outputs(name, models.classifier, models.device)  # cached; its cost is added below
            t0 = time.perf_counter()
            found = {"score": det.score(out)}
        else:
            t0 = time.perf_counter()
            found = _score_images(det, data, name, models.device, batch_size, progress)
        seconds += time.perf_counter() - t0
        n += data.size(name)
        cols[name] = {"ids": data.ids(name), "labels": data.labels(name),
                      **{k: v.detach().double().cpu().numpy() for k, v in found.items()}}
    return cols, seconds / n + (0.0 if det.needs.images else data.classifier_cost())


def _score_images(det: Any, data: ValidationData, name: str, device: torch.device, batch_size: int,
                  progress: bool) -> dict[str, torch.Tensor]:
    parts: dict[str, list[torch.Tensor]] = {}
    total = -(-data.size(name) // batch_size)
    for x, ids, labels in tqdm(data.batches(name, batch_size, device), total=total, desc=f"{det.name} {name}",
                               unit="batch", disable=not progress, leave=False, dynamic_ncols=True):
        scored = det.details(x, ids, labels)
        for k, v in {"score": scored.score, **scored.columns}.items():
            parts.setdefault(k, []).append(v.detach().cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def evaluate_column(cols: Columns, data: ValidationData, objective: Objective, column: str,
                    diffguard_share: float | None = None) -> Evaluation:
    """The objective of one score column (``diffguard_share``: see :class:`~diffguard.tune.objective.Objective`)."""
    return objective.evaluate(cols[data.val][column], {s: cols[s][column] for s in data.by_role("val_ood")},
                              {s: cols[s][column] for s in data.by_role("val_csid")}, diffguard_share)


CAL = "cal:"  # column prefix of class-calibrated distances, e.g. "cal:l1"
SUM = "sum:"  # column prefix of z-scored distance sums, e.g. "sum:gmsd+l2"


def add_calibrated(cols: Columns, data: ValidationData) -> Columns:
    """Add a ``cal:<name>`` column per ``dist:<name>``: class-calibrated (:mod:`diffguard.detectors.calibration`)
    with the guided ``label`` column; ID-val itself is calibrated out of sample (2-fold cross-fitting), the other
    sets with the calibration fitted on all of ID-val. Without a ``label`` column the columns are returned as they
    are. Changes and returns ``cols``."""

    val = cols[data.val]
    if "label" not in val:
        return cols
    for key in [k for k in val if k.startswith("dist:")]:
        cal = ClassCalibration().fit(val[key], val["label"].astype(np.int64))
        for s, c in cols.items():
            c[CAL + key[5:]] = (cross_fitted(c[key], c["label"].astype(np.int64)) if s == data.val
                                else cal(c[key], c["label"].astype(np.int64)))
    return cols


def column_of(choice: str) -> str:
    """The score column of a ranked choice: ``l1`` -> ``dist:l1``, ``l1|class`` -> ``cal:l1``,
    ``gmsd+l2`` -> ``sum:gmsd+l2`` (made by :func:`add_sum`)."""
    name, _, cal = choice.partition("|")
    if "+" in name:
        return SUM + name
    return CAL + name if cal else f"dist:{name}"


def id_val_scales(cols: Columns, data: ValidationData, names: Any) -> dict[str, tuple[float, float]]:
    """{name: (median, scale)} of each raw distance on ID-val (the constants of a combined score)."""
    return {n: robust_standardise(cols[data.val][f"dist:{n}"]) for n in names}


def add_sum(cols: Columns, data: ValidationData, column: str) -> Columns:
    """Add the ``sum:<a>+<b>`` column (z-scored with ID-val scales, as the deployed detector computes it) when
    ``column`` is one and missing; other columns are left alone. Changes and returns ``cols``."""
    if not column.startswith(SUM) or column in cols[data.val]:
        return cols
    names = column[len(SUM):].split("+")
    scales = id_val_scales(cols, data, names)
    for c in cols.values():
        c[column] = sum((c[f"dist:{n}"] - m) / sc for n, (m, sc) in scales.items())
    return cols


def rank_scores(cols: Columns, data: ValidationData, objective: Objective) -> list[dict[str, Any]]:
    """Every ``dist:<name>`` column (raw, and class-calibrated as ``<name>|class`` when :func:`add_calibrated`
    added it) and every z-scored pair sum of raw distances, best first (see the module docstring)."""
    names = sorted(k[5:] for k in cols[data.val] if k.startswith("dist:"))
    cand = {n: {s: c[f"dist:{n}"] for s, c in cols.items()} for n in names}
    calibrated = {f"{n}|class": {s: c[CAL + n] for s, c in cols.items()} for n in names if CAL + n in cols[data.val]}
    scales = id_val_scales(cols, data, names)
    z = {n: {s: (v - scales[n][0]) / scales[n][1] for s, v in cand[n].items()} for n in names}
    for a, b in itertools.combinations(names, 2):
        cand[f"{a}+{b}"] = {s: z[a][s] + z[b][s] for s in cols}
    cand.update(calibrated)
    rows = []
    for key, by_set in cand.items():
        ev = evaluate_column({s: {"x": v} for s, v in by_set.items()}, data, objective, "x")
        pair = {n: list(scales[n]) for n in key.split("+")} if "+" in key else None
        rows.append({"score": key, "objective": ev.objective,
                     "AUROC": ev.mean_auroc, "FPR csid": ev.csid_flag_rate, "FPR@95 (OOD-pos, v1.5)": ev.fpr95_ood,
                     "FPR@95 (ID-pos, paper)": ev.fpr95_id, "_key": ev.sort_key(),
                     **({"scales": pair} if pair else {})})
    rows.sort(key=lambda r: r.pop("_key"))
    return rows


def save_scores(path: Path, cols: Columns) -> None:
    """Write the columns as one .npz (keys ``<set>::<column>``), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **{f"{s}::{k}": v for s, c in cols.items() for k, v in c.items()})
    os.replace(tmp, path)


def load_scores(path: Path) -> Columns:
    cols: Columns = {}
    with np.load(path) as z:
        for key in z.files:
            s, _, k = key.partition("::")
            cols.setdefault(s, {})[k] = z[key]
    return cols
