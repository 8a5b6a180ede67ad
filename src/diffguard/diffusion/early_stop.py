"""Adaptive Early-Stop (AES, paper Sec. 3.2 and Table 4): per-sample rules that end DDIM inversion.

A rule is a :data:`~diffguard.diffusion.ddim.StopRule`: called after every inversion step with the new latents of
the still-active samples, their starting images and their batch rows; it returns True where a sample stops. The
authors compare the *noisy latent* x_t (not x0_hat) with the input and stop at the first level where

    PSNR(x_t, x_0) < 48.5 (peak 255 on [-1, 1] tensors, = 6.39 dB standard)  OR  1 - DISTS(x_t, x_0) < 0.38.

The cap on inversion steps is ``ddim_invert(last=...)``, not a rule.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from diffguard.diffusion.ddim import StopRule

AUTHORS_PSNR_PEAK = 255.0
"""The authors' PSNR uses a peak of 255 on [-1, 1] tensors: PSNR_255 = PSNR_standard + 42.1102 dB."""

STANDARD_PSNR_PEAK = 2.0
"""Peak for [-1, 1] tensors that gives the standard PSNR of the same images on [0, 1] (peak 1)."""


def psnr(x: Tensor, ref: Tensor, peak: float = STANDARD_PSNR_PEAK) -> Tensor:
    """PSNR in dB of raw tensors (no clamping): 20 log10(peak / RMSE) over (C, H, W). x, ref: (B, ...) -> (B,)."""
    mse = (x - ref).pow(2).flatten(1).mean(1)
    return 20 * torch.log10(peak / mse.sqrt().clamp_min(1e-12))


def authors_psnr_to_standard(value_db: float) -> float:
    """Convert an authors' PSNR threshold (peak 255 on [-1, 1]) to the standard dB: 48.5 -> 6.39."""
    return value_db - 20 * math.log10(AUTHORS_PSNR_PEAK / STANDARD_PSNR_PEAK)


def psnr_below(threshold_db: float, peak: float = STANDARD_PSNR_PEAK) -> StopRule:
    """Stop where PSNR(x_t, x_0) < threshold_db. Default peak: standard dB (use 6.39 for the paper's value)."""

    def rule(x_new: Tensor, x_start: Tensor, rows: Tensor, level: int) -> Tensor:
        return psnr(x_new, x_start, peak) < threshold_db

    return rule


SimilarityFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(x (B', ...), ref (B', ...), rows (B',)) -> similarity (B',), higher = more similar (rows allow caching)."""


def similarity_below(similarity: SimilarityFn, threshold: float) -> StopRule:
    """Stop where similarity(x_t, x_0) < threshold, e.g. 1 - DISTS with the paper's 0.37-0.39 (authors' code 0.38)."""

    def rule(x_new: Tensor, x_start: Tensor, rows: Tensor, level: int) -> Tensor:
        return similarity(x_new, x_start, rows) < threshold

    return rule


def any_of(*rules: StopRule) -> StopRule:
    """OR-combination: a sample stops when any rule fires (the authors' ``CombinedMetrics``)."""
    if not rules:
        raise ValueError("any_of needs at least one rule")

    def rule(x_new: Tensor, x_start: Tensor, rows: Tensor, level: int) -> Tensor:
        hit = rules[0](x_new, x_start, rows, level)
        for r in rules[1:]:
            hit = hit | r(x_new, x_start, rows, level)
        return hit

    return rule


class CachedReferenceSimilarity:
    """A :data:`SimilarityFn` ``1 - distance(ref, x)`` with the references' statistics cached by batch row.

    ``distance`` provides ``reference_stats(ref)`` (a list of tuples of (B, ...) tensors) and
    ``to_reference(x, stats)``, as
    :class:`~diffguard.distances.perceptual.DISTSDistance` does.

    An early-stop rule compares the noisy latents of the still-active samples with the same reference images at
    every inversion step; the authors recompute the references' VGG features each time. Here they are computed on
    the first call and reused while the references of the requested rows are unchanged (checked by equality, so
    a new batch with the same row numbers refreshes the cache). Memory: the references' VGG feature maps.
    """

    def __init__(self, distance: object):
        self.dists = distance
        self._ref: Tensor | None = None
        self._pos = torch.zeros(0, dtype=torch.long)
        self._stats: list = []

    def __call__(self, x: Tensor, ref: Tensor, rows: Tensor) -> Tensor:
        pos = self._positions(ref, rows)
        if pos is None:  # new references: compute and keep their statistics
            self._ref, self._stats = ref, self.dists.reference_stats(ref)
            self._pos = torch.full((int(rows.max()) + 1,), -1, dtype=torch.long, device=rows.device)
            self._pos[rows] = torch.arange(rows.shape[0], device=rows.device)
            pos = torch.arange(rows.shape[0], device=rows.device)
        stats = [tuple(t[pos] for t in stage) for stage in self._stats]
        return 1.0 - self.dists.to_reference(x, stats)

    def _positions(self, ref: Tensor, rows: Tensor) -> Tensor | None:
        """Positions of ``rows`` in the cache when all are cached with these very references, else None."""
        if self._ref is None or self._ref.shape[1:] != ref.shape[1:] or self._pos.device != rows.device:
            return None
        inside = rows < self._pos.shape[0]
        pos = self._pos[rows.clamp_max(self._pos.shape[0] - 1)]
        if not bool((inside & (pos >= 0)).all()):
            return None
        return pos if torch.equal(self._ref[pos], ref) else None
