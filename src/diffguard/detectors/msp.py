"""MSP, maximum softmax probability (Hendrycks & Gimpel, ICLR 2017; OpenOOD ``msp``).

OpenOOD confidence: ``conf = max_k softmax(z)_k``; our OOD score is ``-conf`` in [-1, -1/K]. No hyper-parameters.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from diffguard.detectors.detector import BASELINES, Baseline, ClassifierOutputs, Needs, check_outputs, msp_score
from diffguard.detectors.search_space import Space


@BASELINES.register("msp")
class MSP(Baseline):
    """Score = -max softmax(z). ``classifier`` is unused (scores come from cached logits)."""

    name = "msp"
    display_name = "MSP"
    needs = Needs()
    search_space = Space()  # nothing to search (OpenOOD: no sweep): one trial with the defaults

    def __init__(self, classifier: Any = None):
        self.classifier = classifier

    def score(self, out: ClassifierOutputs) -> Tensor:
        """out.logits (N, K) -> (N,) float64 in [-1, -1/K], higher = more OOD."""
        check_outputs(out)
        return msp_score(out.logits)
