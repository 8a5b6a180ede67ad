"""The only data a tuner sees: ID-train (fits), ID-val, OOD-val and the covariate-shifted ID validation sets.

Which covariate-shifted ID sets tuning uses (known classes, mildly corrupted, not to be flagged): the sets of role
``val_csid`` -- the benchmark declares them, no name is read (:func:`~diffguard.run.plan.is_validation`, the
benchmark's one rule): the benchmark's default ones (every set not marked optional), plus the optional ones the
run config's ``sets:`` names (``listed``). fmnist6 has 16 (``val-csid`` and the optional per-kind
``val-csid-<kind>-<severity>``), so ``diffguard tune fmnist6`` uses ``val-csid`` alone, as before the per-kind sets
existed, and a config that lists per-kind sets tunes against them too. Every set of role ``csid`` (fmnist6's ``test-csid``, OpenOOD
v1.5's csid sets, a user set ``{name: blurred, role: csid}``) is test data, whatever its name: tuning never opens it.
The same rule gives validation sets the run's ``val_limit`` and puts them in the report's ``csid flagged (val)``
column, so a set is validation data everywhere or nowhere. To tune against a covariate-shifted set of your own, give
it ``role: val_csid`` in the benchmark definition. :func:`csid_note` states the choice (and warns about a ``csid`` set
named ``val...``, which the old name rule took for validation data); the tuner logs it and writes it in its report.

:func:`tuning_role` is the gate: any other set -- the ID test set, near / far OOD, a test csid set -- is refused
with :class:`TestDataRefused` before it is opened. :class:`ValidationData`
opens only what the gate lets through, draws seeded row subsets (:func:`~diffguard.run.plan.select_rows`, the
benchmark's draw) and caches one classifier pass per set in memory. :class:`Models` builds the classifier, the
diffusion backend and the ensemble members of a run config once, on one device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from diffguard.bench.definitions import VALIDATION_ROLES, BenchmarkSpec
from diffguard.bench.open_sets import open_benchmark
from diffguard.classify.adapter import fmnist6_classifier
from diffguard.detectors.detector import ClassifierOutputs
from diffguard.detectors.ensemble import ensemble_folders
from diffguard.devices import to_device
from diffguard.errors import UserError
from diffguard.run.plan import batches, legacy_csid_names, legacy_csid_warning, select_rows
from diffguard.specs.model_specs import build_backend, build_classifier

EVAL_ROLES: tuple[str, ...] = VALIDATION_ROLES  # val, val_ood, val_csid: what a trial scores
TUNING_ROLES: tuple[str, ...] = ("train", *EVAL_ROLES)  # plus ID-train for fits


class TestDataRefused(UserError):
    """A tuner was asked for a set it must never see (ID test, near / far OOD, a test csid set)."""

    __test__ = False  # not a pytest test class


def tuning_role(spec: BenchmarkSpec, name: str) -> str:
    """The role of set ``name`` when a tuner may see it; raises :class:`TestDataRefused` otherwise."""
    role = spec.get(name).role
    if role not in TUNING_ROLES:
        why = " (covariate-shifted ID validation data has role val_csid)" if role == "csid" else ""
        raise TestDataRefused(f"tuning may only see train, val, val_ood and val_csid sets: refusing set {name!r} "
                              f"(role {role}, test data{why}); test data stays unseen until the tuned config is "
                              "benchmarked")
    return role


def csid_split(spec: BenchmarkSpec, listed: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """(the ``val_csid`` sets, which tuning uses; the ``csid`` test sets, which it never opens); only those in
    ``listed`` (a run config's ``sets:``) when given."""
    chosen = set(spec.default_sets()) | set(listed or ())
    pick = [s for s in spec.sets if s.name in chosen]
    return [s.name for s in pick if s.role == "val_csid"], [s.name for s in pick if s.role == "csid"]


def csid_note(spec: BenchmarkSpec, used: list[str] | None = None, listed: Sequence[str] | None = None) -> str:
    """One line saying which covariate-shifted ID sets tuning uses (``used``, default every ``val_csid`` set of
    :func:`csid_split`), which csid test sets it leaves unseen (those of ``listed``, a run config's ``sets:``, when
    given), and a warning per ``csid`` set named ``val...`` (:func:`~diffguard.run.plan.legacy_csid_warning`)."""
    valid, test = csid_split(spec, listed)
    used = valid if used is None else used
    head = (f"covariate-shifted ID sets used for tuning (role val_csid): {', '.join(used)}" if used else
            f"no covariate-shifted ID validation set (role val_csid) used for tuning on {spec.name!r}: the objective "
            "has no csid penalty")
    warn = "".join(f"; warning: {legacy_csid_warning(n)}" for n in legacy_csid_names(spec))
    return head + (f"; csid test sets, never opened: {', '.join(test)}" if test else "") + warn


def tuning_sets(spec: BenchmarkSpec, listed: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Set names by role that a tuner may see: the first ``val`` set, every ``val_ood`` set, the ``val_csid`` sets
    (those in ``listed``, a run config's ``sets:``, when given: :func:`csid_split`) and the first ``train`` set
    (fits); ConfigError when the benchmark has no val or val_ood set."""
    spec.require(["val", "val_ood"], "tuning (ID-val against OOD-val)")
    out: dict[str, list[str]] = {r: [s.name for s in spec.by_role(r)] for r in TUNING_ROLES}
    out["val"], out["train"] = out["val"][:1], out["train"][:1]
    out["val_csid"] = csid_split(spec, listed)[0]
    return out


@dataclass(frozen=True)
class Limits:
    """Images per set (None = all), drawn with ``seed`` per set name (the benchmark's ``limit_seed`` draw);
    ``csid``: per ``val_csid`` set."""

    val: int | None = 500
    val_ood: int | None = 500
    csid: int | None = 500
    train: int | None = None
    seed: int = 0

    def of(self, role: str) -> int | None:
        """The limit of a set of a tuning role (one of :data:`TUNING_ROLES`)."""
        return {"val": self.val, "val_ood": self.val_ood, "val_csid": self.csid, "train": self.train}[role]


class ValidationData:
    """Validation sets of a benchmark, row subsets and cached classifier outputs (see the module docstring).

    Args:
        spec: the benchmark.
        data_root: its data folder (see :func:`~diffguard.bench.definitions.open_benchmark`).
        limits: images per set.
        sets: set names to use (default: every set :func:`tuning_sets` allows); each passes :func:`tuning_role`.
        listed: the run config's ``sets:`` (None: it lists none); the default ``sets`` then take only the
            ``val_csid`` sets it lists (:func:`tuning_sets`).

    ``csid_note``: which covariate-shifted ID sets it uses (:func:`csid_note` of the sets it opens), for the log and
    the report.
    """

    def __init__(self, spec: BenchmarkSpec, data_root: str | None, limits: Limits, sets: list[str] | None = None,
                 listed: Sequence[str] | None = None):
        allowed = tuning_sets(spec, listed)
        names = sets if sets is not None else [n for r in TUNING_ROLES for n in allowed[r]]
        self.roles = {n: tuning_role(spec, n) for n in names}
        if not any(r == "val" for r in self.roles.values()) or not any(r == "val_ood" for r in self.roles.values()):
            raise UserError(f"tuning needs an ID-val and an OOD-val set; got {self.roles}")
        self.spec, self.limits = spec, limits
        self.csid_note = csid_note(spec, [n for n in names if self.roles[n] == "val_csid"], listed)
        self.sources = open_benchmark(spec, data_root, names)
        self.rows = {n: select_rows(len(src), limits.of(self.roles[n]), limits.seed, n)
                     for n, src in self.sources.items()}
        self._outputs: dict[str, ClassifierOutputs] = {}
        self.classifier_seconds = 0.0

    def by_role(self, role: str) -> list[str]:
        return [n for n, r in self.roles.items() if r == role]

    @property
    def val(self) -> str:
        return self.by_role("val")[0]

    @property
    def train(self) -> str:
        names = self.by_role("train")
        if not names:
            raise UserError(f"benchmark {self.spec.name!r} has no train set, which fitting methods need")
        return names[0]

    def eval_sets(self) -> list[str]:
        """Every set a trial scores: ID-val, the OOD-val sets, the csid-val sets."""
        return [n for r in EVAL_ROLES for n in self.by_role(r)]

    def size(self, name: str) -> int:
        return len(self.rows[name])

    def ids(self, name: str) -> np.ndarray:
        return self.sources[name].ids[self.rows[name]].numpy()

    def labels(self, name: str) -> np.ndarray:
        return self.sources[name].labels[self.rows[name]].numpy()

    def batches(self, name: str, size: int, device: torch.device) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """(images (B, C, H, W) in [-1, 1] on ``device``, ids (B,), labels (B,)) of the set's rows."""
        src = self.sources[name]
        for rows in batches(self.rows[name], size):
            yield src.load(rows).to(device), src.ids[rows], src.labels[rows]

    def outputs(self, name: str, classifier: Any, device: torch.device) -> ClassifierOutputs:
        """The cached classifier pass of a set (computed once; its time counts in :meth:`classifier_cost`)."""
        if name not in self._outputs:
            t0, logits, feats = time.perf_counter(), [], []
            with torch.no_grad():
                for x, _, _ in self.batches(name, 256, device):
                    lo, fe = classifier.logits_and_features(x)
                    logits.append(lo.float())
                    feats.append(fe.float())
            labels = torch.from_numpy(self.labels(name)).to(device)
            ids = torch.from_numpy(self.ids(name)).to(device)
            self._outputs[name] = ClassifierOutputs(torch.cat(logits), torch.cat(feats), labels, ids)
            if self.roles[name] != "train":
                self.classifier_seconds += time.perf_counter() - t0
        return self._outputs[name]

    def classifier_cost(self) -> float:
        """Seconds per image of the cached classifier pass over the evaluation sets."""
        n = sum(self.size(n) for n in self.eval_sets() if n in self._outputs)
        return self.classifier_seconds / n if n else 0.0


class Models:
    """The models of a run config on one device, built on first use: ``classifier``, ``backend()``,
    ``members()`` (Deep-Ensemble members: the configured folders, else the classifier plus the shipped
    ``fmnist6-classifier-s*`` folders, as the benchmark runner does)."""

    def __init__(self, cfg: Any, device: torch.device):
        self.cfg, self.device = cfg, device
        self._classifier: Any = None
        self._backend: Any = None

    @property
    def classifier(self) -> Any:
        if self._classifier is None:
            self._classifier = to_device(build_classifier(self.cfg.classifier), self.device)
        return self._classifier

    def backend(self) -> Any:
        if self._backend is None:
            self._backend = to_device(build_backend(self.cfg.diffusion), self.device)
        return self._backend

    def members(self) -> list[Any]:
        folders = list(self.cfg.ensemble or [])
        if not folders:
            shipped = [str(p) for p in ensemble_folders()]
            folders = [self.cfg.classifier or shipped[0], *shipped[1:]]
        if len(folders) < 2:
            raise UserError(f"Deep Ensemble needs >= 2 classifiers, found {folders}")
        return [to_device(fmnist6_classifier(f), self.device) for f in folders]
