"""EBO, energy-based OOD score (Liu et al., NeurIPS 2020; OpenOOD ``ebo``).

OpenOOD confidence: ``conf = T * logsumexp(z / T)`` (the negative free energy), default T = 1 (its APS sweep is
just [1]). Our OOD score is the energy itself, ``-T * logsumexp(z / T)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from diffguard.detectors.detector import BASELINES, Baseline, ClassifierOutputs, Needs, check_outputs
from diffguard.detectors.search_space import Space, cat


@BASELINES.register("ebo")
class EBO(Baseline):
    """Score = -T * logsumexp(z / T). ``classifier`` is unused.

    Args:
        temperature: T > 0 (OpenOOD default 1).
    """

    name = "ebo"
    display_name = "EBO"
    needs = Needs()
    search_space = Space((cat("temperature", (1.0,)),))  # OpenOOD's "sweep" is one point

    def __init__(self, classifier: Any = None, temperature: float = 1.0):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.classifier = classifier
        self.temperature = float(temperature)

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def score(self, out: ClassifierOutputs) -> Tensor:
        """out.logits (N, K) -> (N,) float64, higher = more OOD."""
        check_outputs(out)
        t = self.temperature
        return -t * torch.logsumexp(out.logits.double() / t, dim=1)
