"""Semantic distance: L1 between the protected classifier's logits of the image and of its synthesis.

The supplementary of the paper names this the generic metric for the CIFAR-10 benchmark; the authors' code calls it
``logits`` (score = -sum_j |l_ref,j - l_recon,j|).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from diffguard.distances.distance import DISTANCES, Distance


class HasLogits(Protocol):
    """Anything with ``logits(x)``: (B, C, H, W) in [-1, 1] -> (B, K), e.g. a classifier adapter."""

    def logits(self, x: Tensor) -> Tensor: ...


@DISTANCES.register("logits_l1")
class LogitsL1Distance(Distance):
    """sum_j |logits(x)_j - logits(x_hat)_j|, the L1 distance between the classifier's K logits.

    Like the authors' code, the images are clamped to [-1, 1] first (their clamp to [0, 1] before the classifier's
    normalisation); both batches go through the classifier in one call, without gradients.

    Args:
        classifier: an object with ``logits(x)`` taking (B, C, H, W) in [-1, 1] and returning (B, K), such as
            :class:`diffguard.classify.adapter.ModuleClassifier`; it owns its normalisation, resolution, device and
            dtype.

    Input: x, x_hat (B, C, H, W) in [-1, 1] as the classifier takes them. Output: (B,) >= 0 with the input's dtype
    and device, 0 for identical images.
    """

    name = "logits_l1"

    def __init__(self, classifier: HasLogits | None = None):
        if classifier is None or not callable(getattr(classifier, "logits", None)):
            raise ValueError("logits_l1 needs classifier=an object with logits(x) (B, C, H, W) in [-1, 1] -> (B, K), "
                             "e.g. diffguard.classify.adapter.ModuleClassifier")
        self.classifier = classifier

    @torch.no_grad()
    def compute(self, x: Tensor, x_hat: Tensor) -> Tensor:
        logits = self.classifier.logits(torch.cat([x, x_hat]).clamp(-1, 1))
        if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != 2 * x.shape[0]:
            raise ValueError(f"logits_l1: classifier.logits must return (B, K), got "
                             f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}")
        lx, lx_hat = logits.chunk(2)
        return (lx - lx_hat).abs().sum(1).to(device=x.device, dtype=x.dtype)
