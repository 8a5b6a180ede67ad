"""A method's ``calibration`` applied to a run's stored raw scores (:mod:`diffguard.detectors.calibration`).

The label of a stored score is the method's own ``label`` column when it has one (DiffGuard's guided label), else
the classifier's prediction from the run's ``samples`` table. The calibration is fitted on the method's ID-val
scores and applied to every set; :func:`calibrated` is used by the evaluation and by ``score --from`` alike, so
both see the same numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffguard.detectors.calibration import ClassCalibration, create_calibration

LABEL_KEY = "label"


def stored_labels(store: Any, method: str, set_name: str, ids: np.ndarray) -> np.ndarray:
    """(N,) int64 label each stored score of ``method`` on ``ids`` was computed for (-1 where unknown)."""
    if LABEL_KEY in store.score_keys(method):
        got = store.scores(method, set_name, ids, key=LABEL_KEY)
        return np.where(np.isnan(got), -1, got).astype(np.int64)
    sid, _, pred = store.samples(set_name)
    lookup = dict(zip(sid.tolist(), pred.tolist()))
    return np.array([lookup.get(int(i), -1) for i in ids], dtype=np.int64)


def fitted_calibration(spec: Any, val_scores: np.ndarray, val_labels: np.ndarray) -> ClassCalibration | None:
    """The method spec's calibration fitted on its ID-val (scores, labels); None for raw scores."""
    cal = create_calibration(spec.calibration)
    return None if cal is None else cal.fit(val_scores, val_labels)


def calibrated(cal: ClassCalibration | None, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Calibrated scores; NaN (missing) scores stay NaN; raw scores when ``cal`` is None."""
    if cal is None:
        return scores
    out = np.full(scores.shape, np.nan)
    ok = ~np.isnan(scores)
    out[ok] = cal(scores[ok], labels[ok])
    return out
