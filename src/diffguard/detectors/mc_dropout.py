"""MC-Dropout (Gal & Ghahramani, ICML 2016; OpenOOD ``dropout``, not ``mcd`` which is Maximum Classifier Discrepancy).

OpenOOD: dropout with p = 0.5 on the pooled penultimate feature before the final linear layer, 5 stochastic passes,
logits averaged, conf = max softmax(mean logits). Our OOD score is -conf. OpenOOD expects a network trained with
dropout (``DropoutNet``); our classifier was trained without it, so this is MC-Dropout applied at test time only,
which is how a dropout-free network can be scored -- say so next to its numbers.

Randomness. Each row r draws its masks from a generator seeded from (seed, id_r) (``ClassifierOutputs.ids``, or the
row position when ids are absent), so a sample's score does not depend on its batch or on the other rows. Dropout
is elementwise with the usual 1 / (1 - p) rescaling (what ``F.dropout2d`` does on a 2-D (N, D) input).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from diffguard.detectors.detector import BASELINES, Baseline, ClassifierOutputs, Needs, check_outputs, msp_score
from diffguard.detectors.search_space import Space
from diffguard.seeding import sample_generator


@BASELINES.register("mc_dropout")
class MCDropout(Baseline):
    """Score = -max softmax(mean_s head(dropout_s(h))).

    Args:
        classifier: adapter whose ``head`` is the nn.Linear mapping features to logits.
        p: drop probability in [0, 1) (OpenOOD default 0.5).
        passes: stochastic passes (OpenOOD ``dropout_times`` 5).
        seed: base seed of the per-sample generators.
    """

    name = "mc_dropout"
    display_name = "MC-Dropout"
    needs = Needs(randomness=True)
    search_space = Space()  # nothing to search: one trial with the defaults

    def __init__(self, classifier: Any, p: float = 0.5, passes: int = 5, seed: int = 0):
        if classifier is None:
            raise ValueError("MC-Dropout needs the classifier (its linear head maps dropped features to logits)")
        if not 0 <= p < 1 or passes < 1:
            raise ValueError(f"need 0 <= p < 1 and passes >= 1, got p={p}, passes={passes}")
        self.classifier = classifier
        self.head = classifier.head
        self.p = float(p)
        self.passes = int(passes)
        self.seed = int(seed)

    def params(self) -> dict[str, Any]:
        return {"p": self.p, "passes": self.passes, "seed": self.seed}

    def _masks(self, ids: Tensor, dim: int) -> Tensor:
        """(passes, N, D) keep masks already scaled by 1 / (1 - p), drawn per row on the CPU."""
        u = torch.stack([torch.rand(self.passes, dim, generator=sample_generator(self.seed, int(i)))
                         for i in ids.tolist()], dim=1)
        return (u >= self.p).double() / (1 - self.p)

    @torch.no_grad()
    def score(self, out: ClassifierOutputs) -> Tensor:
        """out.features (N, D) -> (N,) float64 in [-1, -1/K], higher = more OOD."""
        check_outputs(out)
        h = out.features.double()
        masks = self._masks(out.row_ids().cpu(), h.shape[1]).to(h.device)
        w = self.head.weight.detach().double().to(h.device)
        b = self.head.bias.detach().double().to(h.device) if self.head.bias is not None else 0.0
        logits = ((masks * h[None]) @ w.T + b).mean(dim=0)
        return msp_score(logits)
