"""OOD-validation and covariate-shift rows of a run's evaluation (see :mod:`diffguard.evaluation.evaluate_run`).

* ``val_ood`` sets are compared with ID-val (each set, then their unweighted mean, row ``val_ood``);
* a csid set's row holds ``csid flagged``, the share of its images scoring strictly above the method's threshold
  (:func:`threshold_at_tpr`: the 95th percentile of its ID-val scores, which keeps 95 % of ID-val, so ID-val itself
  is flagged at 5 %, the clean rate), and ``ACC``, the classifier's accuracy on the set.

Rows are named by :func:`~diffguard.bench.definitions.metric_row_name`: a set named like a group row (``val_ood``,
``near``, ``far``, ``all``) appears as ``set:<name>``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffguard.bench.definitions import metric_row_name, row_set_name
from diffguard.run.plan import is_validation
from diffguard.run.store import ResultStore
from diffguard.evaluation.ood_metrics import compute_metrics, summarize
from diffguard.evaluation.ood_metrics import accuracy

TPR = 0.95  # thresholds keep this share of ID-val
CSID_FLAGGED = "csid flagged"


def threshold_at_tpr(val_scores: np.ndarray) -> float:
    """The score threshold keeping :data:`TPR` of ID-val: its 95th percentile (a score above it is flagged)."""
    return float(np.quantile(val_scores, TPR))


def flag_rate(scores: np.ndarray, threshold: float) -> float:
    """Share of ``scores`` strictly above ``threshold`` (flagged as OOD), a fraction in [0, 1]."""
    return float(np.mean(np.asarray(scores) > threshold))


def shift_rows(key: str, title: str, val: np.ndarray, scores: dict[str, np.ndarray], roles: dict[str, str],
               csid_acc: dict[str, float], threshold: float) -> list[dict]:
    """OOD-validation rows (ID-val against each ``val_ood`` set, then their mean, row ``val_ood``) and one row per
    csid set (its share flagged at ``threshold`` and the classifier's accuracy on it). ``scores``: set -> (N,)."""

    head = {"method": title, "key": key}
    ood = [n for n in scores if roles[n] == "val_ood"]
    rows = []
    if ood:
        per_set = {metric_row_name(n): compute_metrics(val, scores[n]) for n in ood}
        summary = summarize(per_set, {"val_ood": list(per_set)})
        summary.pop("all")  # summarize's own mean over every set given: here the same as the val_ood row
        rows += [{**head, "set": n, "group": "val_ood", **m} for n, m in summary.items()]
    rows += [{**head, "set": metric_row_name(n), "group": "csid", CSID_FLAGGED: flag_rate(scores[n], threshold),
              "ACC": csid_acc[n]} for n in scores if roles[n] == "csid"]
    return rows


def csid_accuracy(store: ResultStore, names: list[str]) -> dict[str, float]:
    """The classifier's accuracy on each csid set (its planned rows, from the stored classifier pass)."""

    out = {}
    for n in names:
        _, labels, preds = store.samples(n)
        out[n] = accuracy(labels, preds)
    return out


def csid_columns(got: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Summary columns from one method's metric rows (set -> row): ``AUROC val_ood`` and the mean ``csid flagged``
    over its test csid sets and over its validation (``val*``) csid sets, those present."""
    out = {"AUROC val_ood": got["val_ood"]["AUROC"]} if "val_ood" in got else {}
    csid = [n for n, r in got.items() if r.get("group") == "csid"]
    for split, names in (("test", [n for n in csid if not is_validation("csid", row_set_name(n))]),
                         ("val", [n for n in csid if is_validation("csid", row_set_name(n))])):
        if names:
            out[f"{CSID_FLAGGED} ({split})"] = float(np.mean([got[n][CSID_FLAGGED] for n in names]))
    return out
