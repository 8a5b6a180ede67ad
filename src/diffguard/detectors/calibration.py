"""Class-conditional score calibration: judge each image on the scale of its own (guided or predicted) class.

A raw DiffGuard distance is compared across classes whose typical distances differ (a trouser is re-synthesised
almost exactly, a coat or a shirt changes more), so one global threshold flags the "hard" ID classes first. The
calibration standardises a score with robust statistics of ID-validation scores *of the same label*:

    z = (s - median_c) / IQR_c

with median and inter-quartile range of the ID-val scores whose label is c (IQR -> standard deviation -> 1 when
the spread is 0). A class with fewer than ``min_count`` ID-val images uses the global median and IQR instead.
The label is the one the score was computed for: DiffGuard's guided label (its ``label`` column: the classifier's
prediction, or the oracle label in oracle mode), else the classifier's prediction. Labels never seen in ID-val
(e.g. a class the classifier never predicts on ID data) also fall back to the global statistics.

This is the project's own post-hoc option (issue 13), not part of the paper. It is fitted on ID-val only and
changes only how scores are compared, never what a detector computes: runs keep raw scores and apply it in
evaluation (``calibration: class`` in a method spec).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffguard.detectors.fusion import robust_standardise
from diffguard.score_arrays import as_scores

CALIBRATIONS = ("class",)
"""Calibration names a method spec may give (``None``: raw scores)."""


def _scores(x: Any, name: str) -> np.ndarray:
    return as_scores(x, name)


def _labels(y: Any, n: int, name: str) -> np.ndarray:
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have one label per score, shape ({n},), got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name} must hold integer class labels")
    return arr.astype(np.int64)


@dataclass
class ClassCalibration:
    """Per-label robust standardisation of OOD scores, fitted on ID-validation scores (see the module docstring).

    Args:
        min_count: a label needs at least this many ID-val scores for its own statistics (else global ones).
    """

    min_count: int = 20
    _global: tuple[float, float] | None = field(default=None, init=False, repr=False)
    _per_class: dict[int, tuple[float, float]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if int(self.min_count) < 2:
            raise ValueError(f"min_count must be at least 2, got {self.min_count}")

    def fit(self, scores: Any, labels: Any) -> ClassCalibration:
        """scores (N,) ID-val OOD scores, labels (N,) int: the label each score was computed for."""
        s = _scores(scores, "scores")
        if s.size == 0:
            raise ValueError("ClassCalibration.fit needs at least one ID-val score")
        y = _labels(labels, s.size, "labels")
        self._global = robust_standardise(s)
        self._per_class = {int(c): robust_standardise(s[y == c]) for c in np.unique(y) if (y == c).sum() >= self.min_count}
        return self

    def __call__(self, scores: Any, labels: Any) -> np.ndarray:
        """(N,) float64 calibrated scores z = (s - median_label) / IQR_label; same order of samples."""
        if self._global is None:
            raise RuntimeError("ClassCalibration is not fitted: call fit(val_scores, val_labels) on ID-val")
        s = _scores(scores, "scores")
        y = _labels(labels, s.size, "labels")
        med = np.full(s.size, self._global[0])
        scale = np.full(s.size, self._global[1])
        for c, (m, sc) in self._per_class.items():
            sel = y == c
            med[sel], scale[sel] = m, sc
        return (s - med) / scale

    def report(self) -> dict[str, Any]:
        """The fitted statistics: global and per label (median, scale), and which labels fell back."""
        if self._global is None:
            raise RuntimeError("ClassCalibration is not fitted")
        return {"rule": "class", "min_count": self.min_count, "global": list(self._global),
                "per_class": {str(c): list(v) for c, v in sorted(self._per_class.items())}}

    def state(self) -> dict[str, Any]:
        """The fitted statistics as JSON (what a saved guard keeps); :meth:`with_state` restores them."""
        return {k: v for k, v in self.report().items() if k != "rule"}

    def with_state(self, state: dict[str, Any]) -> ClassCalibration:
        """This calibration holding the statistics of :meth:`state` (exactly, floats round-trip through JSON)."""
        self.min_count = int(state["min_count"])
        self._global = (float(state["global"][0]), float(state["global"][1]))
        self._per_class = {int(c): (float(v[0]), float(v[1])) for c, v in state["per_class"].items()}
        return self


def create_calibration(name: str | None) -> ClassCalibration | None:
    """The calibration a method spec names (None: raw scores); unknown names raise ValueError."""
    if name is None:
        return None
    if name not in CALIBRATIONS:
        raise ValueError(f"unknown calibration {name!r}; choose one of {list(CALIBRATIONS)} or leave it out")
    return ClassCalibration()


def cross_fitted(scores: np.ndarray, labels: np.ndarray, folds: int = 2, seed: int = 0) -> np.ndarray:
    """ID-val scores calibrated out of sample: each fold by a calibration fitted on the other folds, so tuning on
    ID-val does not judge the calibration on the very scores that fitted it. (N,) -> (N,). The per-class
    ``min_count`` is scaled by the fold share so the same classes get their own statistics."""
    s, y = _scores(scores, "scores"), _labels(labels, len(scores), "labels")
    order = np.random.default_rng(seed).permutation(s.size)
    out = np.empty(s.size)
    base = ClassCalibration().min_count
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        cal = ClassCalibration(max(2, round(base * (folds - 1) / folds))).fit(s[train], y[train])
        out[test] = cal(s[test], y[test])
    return out
