"""KNN: distance to the k-th nearest ID-train feature (Sun et al., ICML 2022; OpenOOD ``knn``).

OpenOOD: features are L2-normalised (it adds 1e-10 after dividing; we divide by max(norm, 1e-12)), a faiss flat L2
index holds all ID-train features, and conf = -(k-th smallest squared distance). Default K = 50 (APS sweep
{50, 100, 200, 500, 1000}). Our OOD score is the plain (not squared) Euclidean distance to the k-th nearest
normalised train feature, which ranks exactly like OpenOOD's. No faiss: exact chunked ``torch.cdist`` in float64.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from diffguard.detectors.detector import BASELINES, Baseline, ClassifierOutputs, Needs, check_outputs
from diffguard.detectors.search_space import Space, cat
from diffguard.errors import UserError


@BASELINES.register("knn")
class KNN(Baseline):
    """Score = || h^ - h^_(k) ||_2 with h^ = h / ||h||.

    Args:
        classifier: unused (scores come from cached features).
        k: which neighbour (1 = nearest), 1 <= k <= number of train rows (OpenOOD default 50).
        chunk: query rows per ``cdist`` call (memory: chunk x N_train float64).
    """

    name = "knn"
    display_name = "KNN"
    needs = Needs(fit=True)
    search_space = Space((cat("k", (50, 100, 200, 500, 1000)),))  # OpenOOD's APS grid

    def __init__(self, classifier: Any = None, k: int = 50, chunk: int = 512):
        if k < 1 or chunk < 1:
            raise ValueError(f"need k >= 1 and chunk >= 1, got k={k}, chunk={chunk}")
        self.classifier = classifier
        self.k = int(k)
        self.chunk = int(chunk)
        self.bank: Tensor | None = None

    def params(self) -> dict[str, Any]:
        return {"k": self.k}

    def fit_outputs(self, train: ClassifierOutputs) -> None:
        """Store the L2-normalised ID-train features (N_train, D) as float64."""
        check_outputs(train)
        if self.k > len(train):
            raise UserError(f"knn: k={self.k} is larger than the {len(train)} ID-train rows; lower k (e.g. "
                            f"params: {{k: {max(1, len(train) // 10)}}} in the method spec, or --set knn.k=...)")
        self.bank = F.normalize(train.features.double(), dim=1, eps=1e-12)

    def score(self, out: ClassifierOutputs) -> Tensor:
        """out.features (N, D) -> (N,) float64 distances in [0, 2], higher = more OOD."""
        if self.bank is None:
            raise RuntimeError("KNN is not fitted: call fit(ID-train outputs) first")
        check_outputs(out)
        q = F.normalize(out.features.double(), dim=1, eps=1e-12)
        bank = self.bank.to(q.device)
        parts = [torch.cdist(q[i: i + self.chunk], bank).topk(self.k, dim=1, largest=False).values[:, -1]
                 for i in range(0, q.shape[0], self.chunk)]
        return torch.cat(parts)
