"""One check for score arrays (metrics, fusion rules, calibrations): any 1-D array or tensor -> float64 numpy."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_scores(x: Any, name: str, empty: str | None = None) -> np.ndarray:
    """``x`` (N,) as float64 numpy; refuses another shape, NaN and -- when ``empty`` says why -- an empty array.

    Args:
        x: a 1-D array, list or tensor of scores (higher = more OOD).
        name: what ``x`` is, for the error message.
        empty: None to accept N = 0, else the reason an empty array is refused (added to the message).
    """
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {arr.shape}")
    if empty is not None and arr.size == 0:
        raise ValueError(f"{name} is empty: {empty}")
    nan = int(np.isnan(arr).sum())
    if nan:
        raise ValueError(f"{name} has {nan} NaN score(s) out of {arr.size}: drop those samples or fix the detector "
                         "that produced them (nothing guesses a value)")
    return arr
