"""OOD-detection metrics with **OOD as the positive class**; scores are OOD scores (higher = more OOD).

All functions take 1-D numpy arrays or tensors (any float dtype, any device) and compute in float64 numpy.

* ``auroc`` -- area under the ROC curve (trapezoidal). It does not depend on which class is called positive.
* ``fpr_at_95_ood`` -- the OpenOOD v1.5 convention: the fraction of **ID** samples flagged as OOD at the first
  threshold where at least 95 % of the **OOD** samples are flagged (ROC with OOD positive,
  ``fpr[argmax(tpr >= 0.95)]``).
* ``fpr_at_95_id`` -- the OpenOOD v1 / paper convention (ODIN, Energy, KNN papers; the DiffGuard tables): the fraction
  of **OOD** samples accepted as ID at the first threshold where at least 95 % of the **ID** samples are kept (ROC
  with ID positive on ``-score``). The two conventions agree only for mirror-symmetric score distributions.
* ``aupr_in`` / ``aupr_out`` -- trapezoidal area under the precision-recall curve with ID / OOD positive, as OpenOOD
  computes it (``auc(recall, precision)``), not ``average_precision_score``.

Ties. Samples with equal scores form one threshold (one ROC / PR point), as in scikit-learn's ``roc_curve`` and
``precision_recall_curve``. The ROC keeps every distinct threshold (scikit-learn's ``drop_intermediate=False``):
scikit-learn's default also drops collinear ROC points, which can move FPR@95 to the end of a straight run of tied
groups; the definition above ("first threshold") is the one implemented here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diffguard.score_arrays import as_scores

METRIC_KEYS = ("AUROC", "FPR@95 (OOD-pos, v1.5)", "FPR@95 (ID-pos, paper)", "AUPR-IN", "AUPR-OUT")
TPR_LEVEL = 0.95


def _as_scores(x: Any, name: str) -> np.ndarray:
    """Any 1-D array or tensor -> float64 numpy, refusing empty input and NaN."""
    return as_scores(x, name, empty="every metric needs at least one ID and one OOD score")


def _curve(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (true positives, false positives) per distinct threshold, thresholds decreasing.

    A sample is called positive when its score >= the threshold; tied scores enter together.
    """
    s = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # last index of each tie group
    tps = np.cumsum(y)[last]
    return tps, (last + 1) - tps


def roc(pos: Any, neg: Any) -> tuple[np.ndarray, np.ndarray]:
    """ROC of scores where higher = more positive: (fpr, tpr), both starting at 0 and ending at 1."""
    pos, neg = _as_scores(pos, "positive scores"), _as_scores(neg, "negative scores")
    tps, fps = _curve(pos, neg)
    return np.r_[0.0, fps / neg.size], np.r_[0.0, tps / pos.size]


def _fpr_at(pos: np.ndarray, neg: np.ndarray, level: float) -> float:
    fpr, tpr = roc(pos, neg)
    return float(fpr[np.argmax(tpr >= level)])


def auroc(id_scores: Any, ood_scores: Any) -> float:
    """Area under the ROC curve (trapezoidal), OOD positive. 1 = perfect, 0.5 = chance."""
    fpr, tpr = roc(ood_scores, id_scores)
    return float(np.trapezoid(tpr, fpr))


def fpr_at_95_ood(id_scores: Any, ood_scores: Any) -> float:
    """OpenOOD v1.5: fraction of ID flagged as OOD at the first threshold catching >= 95 % of OOD (lower is better)."""
    return _fpr_at(_as_scores(ood_scores, "ood_scores"), _as_scores(id_scores, "id_scores"), TPR_LEVEL)


def fpr_at_95_id(id_scores: Any, ood_scores: Any) -> float:
    """Paper / OpenOOD v1: fraction of OOD accepted as ID at the first threshold keeping >= 95 % of ID (lower is
    better). The ROC has ID positive on ``-score``."""
    return _fpr_at(-_as_scores(id_scores, "id_scores"), -_as_scores(ood_scores, "ood_scores"), TPR_LEVEL)


def _aupr(pos: np.ndarray, neg: np.ndarray) -> float:
    tps, fps = _curve(pos, neg)
    recall = np.r_[0.0, tps / pos.size]
    precision = np.r_[1.0, tps / (tps + fps)]
    return float(np.trapezoid(precision, recall))


def aupr_in(id_scores: Any, ood_scores: Any) -> float:
    """Trapezoidal area under precision(recall) with ID positive (ranked by ``-score``)."""
    return _aupr(-_as_scores(id_scores, "id_scores"), -_as_scores(ood_scores, "ood_scores"))


def aupr_out(id_scores: Any, ood_scores: Any) -> float:
    """Trapezoidal area under precision(recall) with OOD positive (ranked by ``score``)."""
    return _aupr(_as_scores(ood_scores, "ood_scores"), _as_scores(id_scores, "id_scores"))


def accuracy(labels: Any, predictions: Any) -> float:
    """Closed-set accuracy on the ID rows (label >= 0); OOD rows (label -1) are ignored. Fraction in [0, 1]."""
    lab = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels).astype(np.int64).ravel()
    pred = np.asarray(predictions.detach().cpu() if hasattr(predictions, "detach") else predictions).ravel()
    if lab.shape != pred.shape:
        raise ValueError(f"labels {lab.shape} and predictions {pred.shape} differ in length")
    keep = lab >= 0
    if not keep.any():
        raise ValueError("accuracy needs at least one ID row (label >= 0); got only OOD rows or nothing")
    return float((pred[keep] == lab[keep]).mean())


def compute_metrics(id_scores: Any, ood_scores: Any) -> dict[str, float]:
    """All threshold-free metrics as fractions, keys :data:`METRIC_KEYS`."""
    ind, ood = _as_scores(id_scores, "id_scores"), _as_scores(ood_scores, "ood_scores")
    return {"AUROC": auroc(ind, ood), "FPR@95 (OOD-pos, v1.5)": fpr_at_95_ood(ind, ood),
            "FPR@95 (ID-pos, paper)": fpr_at_95_id(ind, ood), "AUPR-IN": aupr_in(ind, ood),
            "AUPR-OUT": aupr_out(ind, ood)}


def summarize(per_set: Mapping[str, Mapping[str, float]],
              groups: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """Per-set rows plus one unweighted-mean row per group (OpenOOD's near-OOD / far-OOD rows).

    Args:
        per_set: OOD set name -> metric dict (e.g. from :func:`compute_metrics`).
        groups: row name -> set names to average, e.g. ``{"near": [...], "far": [...]}``. An ``"all"`` row over
            every set of ``per_set`` is added unless ``groups`` names one.

    Returns:
        ``per_set`` rows followed by the group rows; a group row averages each key over its sets (sets weigh the
        same whatever their size).
    """
    out = {name: dict(row) for name, row in per_set.items()}
    groups = dict(groups)
    groups.setdefault("all", list(per_set))
    for gname, names in groups.items():
        if gname in per_set:
            raise ValueError(f"group name {gname!r} is also an OOD set name; rename the group")
        if not names:
            raise ValueError(f"group {gname!r} is empty")
        missing = [n for n in names if n not in per_set]
        if missing:
            raise KeyError(f"group {gname!r} names unknown sets {missing}; known: {sorted(per_set)}")
        keys = [k for k in per_set[names[0]] if all(k in per_set[n] for n in names)]
        out[gname] = {k: float(np.mean([per_set[n][k] for n in names])) for k in keys}
    return out


def mean_std(runs: Sequence[Mapping[str, float]], ddof: int = 0) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of each metric over seeds / checkpoints: key -> {"mean", "std"}.

    ``ddof=0`` (population std, numpy's default) as in OpenOOD's ``eval_ood.py``; keys missing from a run are refused.
    """
    if not runs:
        raise ValueError("mean_std needs at least one run")
    keys = list(runs[0])
    for i, r in enumerate(runs):
        if set(r) != set(keys):
            raise ValueError(f"run {i} has keys {sorted(r)}, run 0 has {sorted(keys)}: "
                             "runs must report the same metrics")
    return {k: {"mean": float(np.mean([r[k] for r in runs])), "std": float(np.std([r[k] for r in runs], ddof=ddof))}
            for k in keys}


class MetricsAccumulator:
    """pytorch-ood-style accumulator: ``update`` per batch, ``compute`` once.

    ``update(scores, labels, predictions=None)``: scores (B,) OOD scores, labels (B,) with -1 (any negative) for OOD,
    predictions (B,) predicted classes (pass them on every batch or on none; adds ``"ACC"``).
    """

    def __init__(self) -> None:
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._preds: list[np.ndarray] = []

    def update(self, scores: Any, labels: Any, predictions: Any = None) -> None:
        s = _as_scores(scores, "scores")
        lab = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels).astype(np.int64).ravel()
        if lab.shape != s.shape:
            raise ValueError(f"scores {s.shape} and labels {lab.shape} differ in length")
        if (predictions is None) != (not self._preds) and self._scores:
            raise ValueError("pass predictions on every update or on none")
        self._scores.append(s)
        self._labels.append(lab)
        if predictions is not None:
            self._preds.append(np.asarray(predictions.detach().cpu() if hasattr(predictions, "detach")
                                          else predictions).ravel())

    def compute(self) -> dict[str, float]:
        if not self._scores:
            raise ValueError("no data: call update() first")
        s, lab = np.concatenate(self._scores), np.concatenate(self._labels)
        ood = lab < 0
        if ood.all() or not ood.any():
            raise ValueError(f"need both ID and OOD rows, got {int((~ood).sum())} ID and {int(ood.sum())} OOD")
        out = compute_metrics(s[~ood], s[ood])
        if self._preds:
            out["ACC"] = accuracy(lab, np.concatenate(self._preds))
        return out
