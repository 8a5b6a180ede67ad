"""Optuna studies in ``<out>/tune.sqlite`` (SQLite storage: every trial recorded, reruns resume).

One study per method (named like the method) and one per fusion pair (``fusion:<diffguard>+<baseline>``), all in
one file. :func:`run_study`:

* samples with Optuna's ``GridSampler`` when the space is a small all-categorical grid (:attr:`Space.gridable`),
  else with ``TPESampler`` seeded by (seed + number of trials so far), so a resumed study draws what an
  uninterrupted one would have drawn from the same history; TPE studies start with the start spec's own values
  (enqueued), so the tuned result is never worse on validation than the spec it starts from;
* counts ``n_trials`` as the *total* of finished (complete or pruned) trials, so a rerun runs only the missing ones;
* marks trials left running by an interrupted process as failed and re-runs each failed trial's parameters once
  (one tuning process per results folder);
* refuses to resume a study whose setup (data, limits, objective, start spec, space) differs from the stored one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.samplers import GridSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from diffguard.errors import UserError
from diffguard.tune.space import Space

STORAGE_FILE = "tune.sqlite"
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class StudyPlan:
    """A study to run: its name, space, setup (what its trials depend on), the start labels to try first and the
    Optuna objective function (trial -> objective, higher is better)."""

    name: str
    space: Space
    setup: dict[str, Any]
    start: dict[str, Any]
    objective: Callable[[optuna.Trial], float]


def storage_for(out: Path) -> optuna.storages.RDBStorage:
    """The study storage of a results folder (created when missing)."""
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the tuner prints its own line per trial
    return optuna.storages.RDBStorage(f"sqlite:///{out.resolve() / STORAGE_FILE}")


def sampler_for(space: Space, seed: int, n_existing: int) -> optuna.samplers.BaseSampler:
    if space.gridable:
        return GridSampler(space.grid(), seed=seed)
    return TPESampler(seed=seed + n_existing)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def check_setup(study: optuna.Study, setup: dict[str, Any]) -> None:
    """Record the setup of a new study; refuse to resume one made under another setup."""
    old, new = study.user_attrs.get("setup"), _plain(setup)
    if old is None:
        study.set_user_attr("setup", new)
        return
    if old != new:
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise UserError(f"study {study.study_name!r} in this folder was made with another {', '.join(keys)}: "
                        f"stored {[old.get(k) for k in keys]}, now {[new.get(k) for k in keys]}; use another --out "
                        "folder (or the stored settings) to keep trials comparable")


def recover(study: optuna.Study, storage: optuna.storages.BaseStorage) -> int:
    """Fail trials left running by an interrupted process and enqueue each failed trial's parameters once;
    returns the number enqueued."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    failed = [t for t in trials if t.state == TrialState.FAIL and t.number not in retried and t.params]
    for t in failed:
        study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})
    return len(failed)


def count_done(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=DONE))


def run_study(storage: optuna.storages.BaseStorage, plan: StudyPlan, n_trials: int, seed: int,
              on_trial: Callable[[FrozenTrial], None] = lambda t: None) -> optuna.Study:
    """Run ``plan`` until ``n_trials`` trials are finished in total (or a grid is exhausted); see the module
    docstring. ``on_trial`` is called with every trial this call finishes."""
    study = optuna.create_study(storage=storage, study_name=plan.name, direction="maximize", load_if_exists=True)
    check_setup(study, plan.setup)
    recover(study, storage)
    if not study.trials and plan.start and not plan.space.gridable:
        study.enqueue_trial(plan.start, user_attrs={"start": True})
    while count_done(study) < n_trials:
        sampler = sampler_for(plan.space, seed, len(study.trials))
        study = optuna.load_study(study_name=plan.name, storage=storage, sampler=sampler)
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if isinstance(sampler, GridSampler) and sampler.is_exhausted(study) and not waiting:
            break
        study.optimize(plan.objective, n_trials=1, callbacks=[lambda _s, t: on_trial(t)])
    return study


def load_studies(out: Path) -> dict[str, optuna.Study]:
    """Every study of a results folder by name (empty when it has no storage yet)."""
    if not (out / STORAGE_FILE).is_file():
        return {}
    storage = storage_for(out)
    return {name: optuna.load_study(study_name=name, storage=storage)
            for name in optuna.get_all_study_names(storage)}


def sort_key(t: FrozenTrial) -> tuple[float, float, float]:
    """Best first: higher objective, then lower FPR@95 (OpenOOD v1.5), then lower cost."""
    m = t.user_attrs.get("metrics", {})
    return (-float(t.value), float(m.get("fpr95_ood", 1.0)), float(t.user_attrs.get("seconds_per_image", 0.0)))


def ranked(study: optuna.Study) -> list[FrozenTrial]:
    """The complete trials of a study, best first (:func:`sort_key`)."""
    return sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=sort_key)


def best(study: optuna.Study) -> FrozenTrial | None:
    trials = ranked(study)
    return trials[0] if trials else None
