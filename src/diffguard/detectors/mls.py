"""MLS, maximum logit score (Hendrycks et al., ICML 2022; OpenOOD ``mls``).

OpenOOD confidence: ``conf = max_k z_k``; our OOD score is ``-max_k z_k``. No hyper-parameters.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from diffguard.detectors.detector import BASELINES, Baseline, ClassifierOutputs, Needs, check_outputs
from diffguard.detectors.search_space import Space


@BASELINES.register("mls")
class MLS(Baseline):
    """Score = -max logit. ``classifier`` is unused."""

    name = "mls"
    display_name = "MLS"
    needs = Needs()
    search_space = Space()  # nothing to search (OpenOOD: no sweep): one trial with the defaults

    def __init__(self, classifier: Any = None):
        self.classifier = classifier

    def score(self, out: ClassifierOutputs) -> Tensor:
        """out.logits (N, K) -> (N,) float64, higher = more OOD."""
        check_outputs(out)
        return -out.logits.double().amax(dim=1)
