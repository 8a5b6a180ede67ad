"""OOD-validation and covariate-shift rows of a run's evaluation (see :mod:`diffguard.evaluation.evaluate_run`).

* ``val_ood`` sets are compared with ID-val: one row per set and, with two or more sets, their unweighted mean, row
  ``val_ood`` (a single set is its own mean, so it is listed once);
* a covariate-shifted ID set's row (role ``val_csid``, validation, or ``csid``, test; group ``csid`` either way)
  holds ``csid flagged``, the share of its images scoring strictly above the method's threshold
  (:func:`threshold_at_tpr`: the 95th percentile of its ID-val scores, which keeps 95 % of ID-val, so ID-val itself
  is flagged at 5 %, the clean rate), and ``ACC``, the classifier's accuracy on the set.

Rows are named by :func:`~diffguard.bench.definitions.metric_row_name`: a set named like a group row (``val_ood``,
``near``, ``far``, ``all``) appears as ``set:<name>``.
"""

from __future__ import annotations

from typing import Any, Collection

import numpy as np

from diffguard.bench.definitions import CSID_ROLES, metric_row_name
from diffguard.evaluation.ood_metrics import accuracy, compute_metrics, summarize
from diffguard.report.csid_severity import FLAGGED
from diffguard.run.store import ResultStore

TPR = 0.95  # thresholds keep this share of ID-val
CSID_FLAGGED = FLAGGED  # the column name, shared with the per-kind csid table (csid.md)


def threshold_at_tpr(val_scores: np.ndarray) -> float:
    """The score threshold keeping :data:`TPR` of ID-val: its 95th percentile (a score above it is flagged)."""
    return float(np.quantile(val_scores, TPR))


def flag_rate(scores: np.ndarray, threshold: float) -> float:
    """Share of ``scores`` strictly above ``threshold`` (flagged as OOD), a fraction in [0, 1]."""
    return float(np.mean(np.asarray(scores) > threshold))


def shift_rows(key: str, title: str, val: np.ndarray, scores: dict[str, np.ndarray], roles: dict[str, str],
               csid_acc: dict[str, float], threshold: float) -> list[dict]:
    """OOD-validation rows (ID-val against each ``val_ood`` set, then, with two or more, their mean, row
    ``val_ood``) and one row per covariate-shifted ID set, ``val_csid`` or ``csid`` (its share flagged at
    ``threshold`` and the classifier's accuracy on it). ``scores``: set -> (N,)."""

    head = {"method": title, "key": key}
    ood = [n for n in scores if roles[n] == "val_ood"]
    rows = []
    if ood:
        per_set = {metric_row_name(n): compute_metrics(val, scores[n]) for n in ood}
        if len(per_set) > 1:  # the mean row; one set would be listed twice
            per_set = summarize(per_set, {"val_ood": list(per_set)})
            per_set.pop("all")  # summarize's own mean over every set given: here the same as the val_ood row
        rows += [{**head, "set": n, "group": "val_ood", **m} for n, m in per_set.items()]
    rows += [{**head, "set": metric_row_name(n), "group": "csid", CSID_FLAGGED: flag_rate(scores[n], threshold),
              "ACC": csid_acc[n]} for n in scores if roles[n] in CSID_ROLES]
    return rows


def csid_accuracy(store: ResultStore, names: list[str]) -> dict[str, float]:
    """The classifier's accuracy on each covariate-shifted ID set, ``val_csid`` or ``csid`` (its planned rows, from
    the stored classifier pass)."""

    out = {}
    for n in names:
        _, labels, preds = store.samples(n)
        out[n] = accuracy(labels, preds)
    return out


def val_ood_auroc(got: dict[str, dict[str, Any]]) -> float | None:
    """AUROC of ID-val against OOD-val from one method's metric rows (set -> row): the ``val_ood`` mean row, or the
    row of the only ``val_ood`` set (which has no mean row); None without OOD-validation rows."""
    if "val_ood" in got:
        return got["val_ood"]["AUROC"]
    rows = [r for r in got.values() if r.get("group") == "val_ood"]
    return rows[0]["AUROC"] if len(rows) == 1 else None


def csid_columns(got: dict[str, dict[str, Any]], validation: Collection[str] = ()) -> dict[str, float]:
    """Summary columns from one method's metric rows (set -> row): ``AUROC val_ood`` and the mean ``csid flagged``
    over its test csid sets and over its validation csid sets (role ``val_csid``: ``validation`` holds their row
    names), those present."""
    auc = val_ood_auroc(got)
    out = {"AUROC val_ood": auc} if auc is not None else {}
    csid = [n for n, r in got.items() if r.get("group") == "csid"]
    for split, names in (("test", [n for n in csid if n not in validation]),
                         ("val", [n for n in csid if n in validation])):
        if names:
            out[f"{CSID_FLAGGED} ({split})"] = float(np.mean([got[n][CSID_FLAGGED] for n in names]))
    return out
