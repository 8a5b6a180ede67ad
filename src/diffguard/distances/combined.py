"""A score made of several distances: the sum of their robust z-scores with fixed, validation-fitted scales.

    score = sum_k (d_k - median_k) / scale_k

``median_k`` and ``scale_k`` (the inter-quartile range, see :func:`diffguard.detectors.fusion.robust_standardise`)
are statistics of distance k on ID-validation images, measured once (``diffguard tune`` does it and writes them into
the tuned spec) and then given to the detector as constants: the score of an image never depends on other images.
Each term is affine in its distance, so a single distance keeps its ranking; a sum puts distances of different
units (an L2 norm, a GMSD value) on one ID-relative scale before adding them. This is the project's option
(issue 13: "combinations ranked on validation"), not part of the paper, whose score is one distance.

Spelling: ``"gmsd+l2"`` names the distances, ``{"gmsd": (median, scale), "l2": (median, scale)}`` their scales.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from torch import Tensor

SEPARATOR = "+"


def score_names(score: str) -> tuple[str, ...]:
    """The distance names of a score spelling: ``"gmsd+l2"`` -> ("gmsd", "l2"); ``"l2"`` -> ("l2",)."""
    names = tuple(n.strip() for n in score.split(SEPARATOR))
    if not all(names) or len(set(names)) != len(names):
        raise ValueError(f"score {score!r}: give distance names joined by '+', each once (e.g. 'gmsd+l2')")
    return names


def check_scales(names: tuple[str, ...], scales: Mapping[str, Any] | None) -> dict[str, tuple[float, float]]:
    """Validated {name: (median, scale)} for every name (finite median, finite scale > 0).

    Raises:
        ValueError: a name has no scale, a scale is not a (median, scale) pair, or it is not finite and positive.
    """
    if scales is None:
        if len(names) > 1:
            raise ValueError(f"a combined score {SEPARATOR.join(names)!r} needs score_scales: "
                             "{name: (median, scale)} from ID-validation distances (`diffguard tune` writes them)")
        return {}
    out = {}
    for n in names:
        if n not in scales:
            raise ValueError(f"score_scales has no entry for distance {n!r} (it has {sorted(scales)})")
        pair = tuple(scales[n])
        if len(pair) != 2:
            raise ValueError(f"score_scales[{n!r}] must be (median, scale), got {scales[n]!r}")
        med, scale = float(pair[0]), float(pair[1])
        if not (math.isfinite(med) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"score_scales[{n!r}] = {pair}: the median must be finite and the scale finite and > 0")
        out[n] = (med, scale)
    return out


def combined_score(distances: Mapping[str, Tensor], names: tuple[str, ...],
                   scales: Mapping[str, tuple[float, float]]) -> Tensor:
    """(B,) score from (B,) distances: the named distance itself without scales, else the sum of
    (d_k - median_k) / scale_k over ``names``. Dtype and device follow the distances."""
    if not scales:
        return distances[names[0]]
    total = None
    for n in names:
        med, scale = scales[n]
        z = (distances[n] - med) / scale
        total = z if total is None else total + z
    return total  # type: ignore[return-value]
