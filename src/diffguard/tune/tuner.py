"""``diffguard tune`` in Python: tune methods of a run config, and "DiffGuard + X" fusion rules, on validation data.

:func:`tune` opens the validation data (never a test set, :mod:`diffguard.tune.data`), runs one study per method
(:func:`method_plan`) and per fusion pair (:func:`fusion_plan`) in ``<out>/tune.sqlite`` and writes the report
(:mod:`diffguard.tune.tune_report`). A fusion pair takes each method's validation scores from its best trial when this
folder holds a study of it, else computes them once with the config's own spec.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from diffguard.bench.definitions import BenchmarkSpec
from diffguard.bench.open_sets import resolve_benchmark
from diffguard.detectors.detector import ALIASES
from diffguard.detectors.fusion import BandFusion, column_of, create_fusion, diffguard_input
from diffguard.devices import resolve_device
from diffguard.errors import UserError
from diffguard.run.config_check import check_run_config
from diffguard.specs.method_specs import MethodConfig, build_method
from diffguard.tune import trials as tr
from diffguard.tune.data import Limits, Models, ValidationData
from diffguard.tune.objective import Objective
from diffguard.tune.space import FUSION_COLUMNS, Space, apply_values, fusion_space, space_for
from diffguard.tune.study import StudyPlan, best, load_studies, run_study, storage_for
from diffguard.tune.tune_report import trial_line, write_report

DEFAULT_TRIALS = 20
FUSION_TRIALS = 40


def data_setup(data: ValidationData) -> dict[str, Any]:
    return {"benchmark": data.spec.name, "roles": data.roles, "rows": {n: data.size(n) for n in data.rows},
            "limits": dataclasses.asdict(data.limits)}


def scores_path(out: Path, study: str, number: int | str) -> Path:
    return out / "scores" / re.sub(r"[^A-Za-z0-9._+-]", "_", study) / f"trial-{number}.npz"


def _reuse(trial: optuna.Trial, ident: str, out: Path) -> FrozenTrial | None:
    """An earlier complete trial with the same (pre-post-hoc) spec and stored scores, e.g. DiffGuard drawn twice."""
    for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if t.user_attrs.get("synthesis") == ident and (out / t.user_attrs.get("scores", "-")).is_file():
            return t
    return None


def method_plan(start: MethodConfig, data: ValidationData, models: Models, objective: Objective, out: Path,
                batch_size: int, space: Space | None = None, progress: bool = False) -> StudyPlan:
    """The study of one method: every trial builds the drawn spec, fits it, scores the validation sets."""
    space = space or space_for(ALIASES.get(start.detector, start.detector))
    facts = tr.facts_of(start, data, models) if any(p.fraction_of for p in space.params) else {}
    begin = tr.start_values(start, space, facts)
    setup = {"kind": "method", "start": start.as_dict(), "space": repr(space), "data": data_setup(data),
             "objective": objective.statement(), "models": [models.cfg.classifier, models.cfg.diffusion]}

    def objective_fn(trial: optuna.Trial) -> float:
        cfg = apply_values(space, start, space.suggest(trial, begin), facts, begin)
        if space.post_hoc == "distance":
            cfg = tr.with_every_distance(cfg)
        ident = json.dumps(cfg.as_dict(), sort_keys=True, default=str)
        trial.set_user_attr("synthesis", ident)
        found = _reuse(trial, ident, out)
        if found is None:
            try:
                det = build_method(cfg, models.classifier, models.backend, models.members)
                fit_seconds = tr.fit_detector(det, data, models)
            except UserError as err:  # a drawn setting this data or model cannot take (e.g. k > train rows)
                trial.set_user_attr("pruned", str(err))
                raise optuna.TrialPruned(str(err)) from None
            cols, cost = tr.score_detector(det, data, models, batch_size, progress)
            path = scores_path(out, start.name, trial.number)
            tr.save_scores(path, cols)
            trial.set_user_attr("scores", str(path.relative_to(out)))
        else:
            cols, cost = tr.load_scores(out / found.user_attrs["scores"]), found.user_attrs["seconds_per_image"]
            fit_seconds = found.user_attrs.get("fit_seconds", 0.0)
            trial.set_user_attr("reused_from", found.number)
            trial.set_user_attr("scores", found.user_attrs["scores"])
        column, final = "score", tr.tidy(cfg)
        if space.post_hoc == "distance":
            ranking = tr.rank_scores(tr.add_calibrated(cols, data), data, objective)
            chosen = ranking[0]
            column, final = tr.column_of(chosen["score"]), tr.with_score(cfg, chosen["score"], chosen.get("scales"))
            tr.add_sum(cols, data, column)
            trial.set_user_attr("ranking", ranking)
        ev = tr.evaluate_column(cols, data, objective, column)
        for key, value in {"spec": final.as_dict(), "column": column, "metrics": ev.attrs(),
                           "seconds_per_image": cost, "fit_seconds": fit_seconds}.items():
            trial.set_user_attr(key, value)
        return ev.objective

    return StudyPlan(start.name, space, setup, space.start_labels(begin), objective_fn)


@dataclass
class MethodScores:
    """One method's validation scores for fusion: ``cols`` set -> {"ids", "score", and DiffGuard's raw distances
    "dist:<name>"}; ``config_name`` is the method's name in the tuned config (``<name>-tuned`` for a tuned one)."""

    name: str
    config_name: str
    cols: tr.Columns
    seconds_per_image: float
    source: str


def _same_rows(cols: tr.Columns, data: ValidationData) -> bool:
    return all(s in cols and cols[s]["ids"].tolist() == data.ids(s).tolist() for s in data.eval_sets())


def method_scores(name: str, cfg: Any, data: ValidationData, models: Models, out: Path,
                  studies: Mapping[str, optuna.Study], progress: bool = False) -> MethodScores:
    """The best trial's scores of this folder's study ``name``, else the config spec's (computed once and kept
    in ``scores/<name>/``)."""
    study = studies.get(name)
    trial = best(study) if study is not None else None
    if trial is not None:
        cols = tr.add_calibrated(tr.load_scores(out / trial.user_attrs["scores"]), data)
        if not _same_rows(cols, data):
            raise UserError(f"study {name!r} in {out} was tuned on other validation rows: fuse with the limits and "
                            "seed it was tuned with")
        column = trial.user_attrs["column"]
        tr.add_sum(cols, data, column)
        picked = {s: {**{k: v for k, v in c.items() if k.startswith("dist:")}, "ids": c["ids"], "score": c[column]}
                  for s, c in cols.items()}
        return MethodScores(name, f"{name}-tuned", picked, trial.user_attrs["seconds_per_image"],
                            f"study {name}, trial {trial.number}")
    m = cfg.method(name)
    digest = hashlib.sha256(json.dumps([m.as_dict(), data_setup(data)], sort_keys=True, default=str).encode())
    path = scores_path(out, name, f"config-{digest.hexdigest()[:12]}")
    cost_file = path.with_suffix(".json")
    if path.is_file() and cost_file.is_file() and _same_rows(cols := tr.load_scores(path), data):
        cost = float(json.loads(cost_file.read_text())["seconds_per_image"])
    else:
        det = build_method(m, models.classifier, models.backend, models.members)
        tr.fit_detector(det, data, models)
        cols, cost = tr.score_detector(det, data, models, m.batch_size or cfg.batch_size, progress)
        tr.save_scores(path, cols)
        cost_file.write_text(json.dumps({"seconds_per_image": cost}))
    return MethodScores(name, name, cols, cost, "the config's spec")


def fusion_plan(dg: MethodScores, base: MethodScores, data: ValidationData, objective: Objective,
                start: Mapping[str, Any]) -> StudyPlan:
    """The study of a fusion pair: the rule (band: low_q, high_q; weighted: weight; veto: veto_q besides;
    veto-split: veto_by, rank_by besides, over DiffGuard's columns present in its scores, :func:`fusion_space`)
    fitted on ID-val scores."""
    for s in data.eval_sets():
        if not (dg.cols[s]["ids"].tolist() == base.cols[s]["ids"].tolist()):
            raise UserError(f"{dg.name} and {base.name} scored different rows of {s!r}: tune both with the same "
                            "limits and seed")
    space = fusion_space(tuple(n for n in FUSION_COLUMNS if column_of(n) in dg.cols[data.val]))
    setup = {"kind": "fusion", "sources": [dg.source, base.source], "data": data_setup(data),
             "objective": objective.statement(), "space": repr(space)}

    def objective_fn(trial: optuna.Trial) -> float:
        values = space.suggest(trial)
        params = dict(values)
        rule = create_fusion(values.pop("rule"), **values)
        rule.fit(base.cols[data.val]["score"], diffguard_input(rule, dg.cols[data.val]))
        fused = {s: {"score": rule.fuse(base.cols[s]["score"], diffguard_input(rule, dg.cols[s]))}
                 for s in data.eval_sets()}
        ev = tr.evaluate_column(fused, data, objective, "score", diffguard_share(rule, base, data))
        spec = {"baseline": base.config_name, "diffguard": dg.config_name, **params}
        for key, value in {"spec": spec, "rule": rule.report(), "metrics": ev.attrs(),
                           "seconds_per_image": dg.seconds_per_image + base.seconds_per_image}.items():
            trial.set_user_attr(key, value)
        return ev.objective

    return StudyPlan(f"fusion:{dg.name}+{base.name}", space, setup, dict(start), objective_fn)


def diffguard_share(rule: Any, base: MethodScores, data: ValidationData) -> float:
    """The share of all validation images that need DiffGuard under a fitted fusion rule: those whose fused score
    reads DiffGuard's (the band of a band rule, the band and the confident-OOD tier of the veto rule; the cascade
    runs DiffGuard on them only), every image for the weighted sum."""
    if not isinstance(rule, BandFusion):
        return 1.0
    need = np.concatenate([rule.needs_diffguard(base.cols[s]["score"]) for s in data.eval_sets()])
    return float(np.mean(need))


def split_pair(pair: str, cfg: Any) -> tuple[str, str]:
    """"DIFFGUARD+BASELINE" -> the two method names, checked against the config."""
    dg, sep, base = pair.partition("+")
    names = [m.name for m in cfg.methods]
    if not sep or dg not in names or base not in names:
        raise UserError(f"--fusion {pair!r}: give DIFFGUARD_METHOD+BASELINE, two methods of the config {names}")
    return dg, base


def tune(cfg: Any, out: str | Path, methods: Sequence[str] = (), fusion: Sequence[str] = (),
         trials: int | None = None, fusion_trials: int = FUSION_TRIALS, seed: int = 0, limits: Limits = Limits(),
         objective: Objective = Objective(), spec: BenchmarkSpec | None = None,
         spaces: Mapping[str, Space] | None = None, progress: bool = True, log: Callable[[str], None] = print,
         command: str = "") -> Path:
    """Tune ``methods`` (names of ``cfg``, a :class:`~diffguard.run.run_config.RunConfig`) and ``fusion`` pairs
    ("dg+knn"); ``trials`` is the total per method study (default: the grid size, else 20). Returns the report."""

    out = Path(out)
    spec = spec or resolve_benchmark(cfg.benchmark, needs=("val", "val_ood"), purpose="tuning")
    if cfg.image_size is not None:
        spec = dataclasses.replace(spec, image_size=cfg.image_size)
    check_run_config(cfg, spec, needs=("val", "val_ood"))  # every problem at once, before any model is built
    unknown = sorted(set(methods) - {m.name for m in cfg.methods})
    if unknown:
        raise UserError(f"unknown method(s) {unknown}; this config has {[m.name for m in cfg.methods]}")
    data = ValidationData(spec, cfg.data_root, limits, listed=cfg.sets)  # val_csid sets: those cfg.sets lists
    not_ood = sorted(set(objective.far_sets) - set(data.by_role("val_ood")))
    if not_ood:
        raise UserError(f"far-OOD set(s) {not_ood} are not OOD-validation sets of {spec.name}; its OOD-validation "
                        f"sets: {list(data.by_role('val_ood'))}")
    models = Models(cfg, resolve_device(cfg.device))
    storage = storage_for(out)
    log(objective.statement())
    log("validation data: " + ", ".join(f"{n} ({data.roles[n]}, {data.size(n)})" for n in data.rows))
    log(data.csid_note)
    for name in methods:
        start = cfg.method(name)
        plan = method_plan(start, data, models, objective, out, start.batch_size or cfg.batch_size,
                           (spaces or {}).get(name), progress)
        n = trials or (plan.space.grid_size if plan.space.gridable else DEFAULT_TRIALS)
        log(f"study {name}: {'grid' if plan.space.gridable else 'TPE'} search, {n} trials in total")
        run_study(storage, plan, n, seed, lambda t, name=name: log(trial_line(name, t)))
    for pair in fusion:
        dg_name, base_name = split_pair(pair, cfg)
        studies = load_studies(out)
        dg, base = (method_scores(n, cfg, data, models, out, studies, progress) for n in (dg_name, base_name))
        known = [f for f in cfg.fusion if (f.diffguard, f.baseline) == (dg_name, base_name)]
        start = {"rule": "band", "low_q": known[0].low_q if known else 0.5,
                 "high_q": known[0].high_q if known else 0.99}
        plan = fusion_plan(dg, base, data, objective, start)
        log(f"study {plan.name}: TPE search over the rule, {fusion_trials} trials in total "
            f"(scores: {dg.source}; {base.source})")
        run_study(storage, plan, fusion_trials, seed, lambda t, name=plan.name: log(trial_line(name, t)))
    return write_report(out, cfg, data, objective, command, log)
