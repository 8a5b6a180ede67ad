"""The stated tuning objective, computed from validation scores only (OOD scores: higher = more OOD).

    objective = mean over the OOD-validation sets S of AUROC(ID-val, S) - penalty * max(0, csid_flag_rate - 0.05)

``csid_flag_rate`` is the share of covariate-shifted ID validation images (the sets of role ``val_csid``) whose score is
above the threshold that keeps 95 % of ID-val (its 95th percentile, as ``thresholds.json`` of a benchmark run); with
several such sets, the **worst** set's share (per-kind sets ``val-csid-<kind>-<severity>`` make this the worst
corruption kind; sets of severity 3 are reported, not penalised): the false alarms a detector raises on ID images
that only look different. ID-val itself is flagged at 5 % by construction (the clean rate), so only false alarms
above that rate cost anything. Without a csid set the penalty is 0. Higher is better; ties are broken by the lower
mean FPR@95 (OpenOOD v1.5, OOD positive), then the lower cost.
Both FPR@95 conventions are recorded per trial (:mod:`diffguard.evaluation.ood_metrics`).

**Far-OOD passed** (optional): ``- far_penalty * far_pass_rate``, where ``far_pass_rate`` is the share of the named
far-OOD validation sets (``far_sets``, e.g. fmnist6's ``val-far``; the worst set's share) whose score is at or below
the same 95 %-TPR threshold: the far-OOD images a deployed guard would let through. AUROC barely sees them when a rule
moves a few far-OOD images from the top of the ranking to just below the threshold (a veto by DiffGuard does
exactly that), so the term charges them at the threshold, as the csid term charges false alarms there.
``far_penalty = 0`` (the default) leaves the objective as above (``diffguard tune --far-set val-far
--far-penalty W``).

**Cascade cost** (optional, fusion studies): ``- cascade_cost * diffguard_share``, where ``diffguard_share`` is the
share of all validation images (ID-val, every OOD-val and csid-val set) that need DiffGuard -- for the band rule
those whose baseline score falls in the band, for the weighted sum all of them. ``cascade_cost = 0`` (the default)
leaves the objective as above; a user who pays for every DiffGuard call trades AUROC for a narrower band with it
(``diffguard tune --cascade-cost W``; docs/guard.md shows the curve on fmnist6 validation).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from diffguard.evaluation.ood_metrics import auroc, fpr_at_95_id, fpr_at_95_ood

TPR = 0.95
REPORTED_ONLY = re.compile(r"-csid-[a-z0-9]+-3$")  # severity-3 csid sets: in the record, not in the penalty


@dataclass(frozen=True)
class Evaluation:
    """One trial's validation metrics (fractions). ``auroc`` and the FPRs are per OOD-validation set."""

    objective: float
    mean_auroc: float
    csid_flag_rate: float | None
    fpr95_ood: float
    fpr95_id: float
    auroc: dict[str, float]
    fpr95_ood_per_set: dict[str, float]
    fpr95_id_per_set: dict[str, float]
    threshold: float
    diffguard_share: float | None = None
    csid_per_set: dict[str, float] = field(default_factory=dict)
    far_pass_rate: float | None = None

    def attrs(self) -> dict[str, Any]:
        """JSON-able form (what a trial records)."""
        return asdict(self)

    def sort_key(self, cost: float = 0.0) -> tuple[float, float, float]:
        """Ascending key: best objective first, then lower FPR@95 (v1.5), then lower cost."""
        return (-self.objective, self.fpr95_ood, cost)


@dataclass(frozen=True)
class Objective:
    """The objective (see the module docstring).

    Args:
        penalty: weight of csid false alarms above the clean rate.
        clean_rate: the share of ID-val flagged by construction (1 - TPR).
        cascade_cost: weight of the share of validation images that need DiffGuard (fusion studies).
        far_penalty: weight of the far-OOD validation images passed at the threshold (``far_sets``).
        far_sets: the OOD-validation sets that are far-OOD (each must be one of ``val_ood``'s sets).
    """

    penalty: float = 1.0
    clean_rate: float = 1.0 - TPR
    cascade_cost: float = 0.0
    far_penalty: float = 0.0
    far_sets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.far_penalty < 0 or (self.far_penalty > 0 and not self.far_sets):
            raise ValueError(f"far_penalty must be >= 0 and, when > 0, name the far-OOD validation sets (far_sets); "
                             f"got far_penalty={self.far_penalty}, far_sets={self.far_sets}")

    def statement(self) -> str:
        cascade = (f" - {self.cascade_cost:g} * diffguard_share (the share of validation images that need DiffGuard)"
                   if self.cascade_cost else "")
        far = (f" - {self.far_penalty:g} * far_pass_rate (the share of far-OOD validation set(s) "
               f"{', '.join(self.far_sets)} at or below the threshold, the worst set's)" if self.far_penalty else "")
        return (f"objective = mean over OOD-val sets of AUROC(ID-val vs set) - {self.penalty:g} * max(0, "
                f"csid_flag_rate - {self.clean_rate:g}){far}{cascade}; csid_flag_rate = share of csid-val images "
                f"scoring above the 95th percentile of ID-val (the 95 %-ID-TPR threshold), the worst csid-val set's "
                f"share when there are several (severity-3 sets reported only); higher is better; ties: lower mean "
                f"FPR@95 (OpenOOD v1.5, OOD-pos), then lower s/image. Reported beside it: FPR@95 in both "
                f"conventions (v1.5 OOD-pos, paper ID-pos).")

    def evaluate(self, val: Any, val_ood: Mapping[str, Any], csid: Mapping[str, Any] | None = None,
                 diffguard_share: float | None = None) -> Evaluation:
        """val (N,): ID-val scores; val_ood: OOD-val set name -> (M,) scores; csid: csid-val set -> (K,) scores;
        diffguard_share: the share of validation images that need DiffGuard (fusions; None: not a cascade)."""
        val = np.asarray(val, dtype=np.float64)
        if not val_ood:
            raise ValueError("the objective needs at least one OOD-validation set")
        aucs = {n: auroc(val, s) for n, s in val_ood.items()}
        f_ood = {n: fpr_at_95_ood(val, s) for n, s in val_ood.items()}
        f_id = {n: fpr_at_95_id(val, s) for n, s in val_ood.items()}
        threshold = float(np.quantile(val, TPR))
        per_set = {n: float(np.mean(np.asarray(s, dtype=np.float64) > threshold))
                   for n, s in (csid or {}).items() if len(s)}
        penalised = [r for n, r in per_set.items() if not REPORTED_ONLY.search(n)]
        rate = max(penalised) if penalised else None
        mean_auc = float(np.mean(list(aucs.values())))
        penalty = self.penalty * max(0.0, rate - self.clean_rate) if rate is not None else 0.0
        penalty += self.cascade_cost * diffguard_share if diffguard_share is not None else 0.0
        far = self.far_pass(val_ood, threshold)
        penalty += self.far_penalty * far if far is not None else 0.0
        return Evaluation(mean_auc - penalty, mean_auc, rate, float(np.mean(list(f_ood.values()))),
                          float(np.mean(list(f_id.values()))), aucs, f_ood, f_id, threshold, diffguard_share,
                          per_set, far)

    def far_pass(self, val_ood: Mapping[str, Any], threshold: float) -> float | None:
        """The worst share of a far-OOD validation set (``far_sets``) at or below ``threshold``; None without
        far sets. A far set missing from ``val_ood`` is refused (a misspelt name must not silently cost 0)."""
        if not self.far_sets:
            return None
        missing = [n for n in self.far_sets if n not in val_ood]
        if missing:
            raise ValueError(f"far-OOD set(s) {missing} are not OOD-validation sets of this study; it has "
                             f"{sorted(val_ood)}")
        return max(float(np.mean(np.asarray(val_ood[n], dtype=np.float64) <= threshold)) for n in self.far_sets)
