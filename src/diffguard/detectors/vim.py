"""ViM, virtual-logit matching (Wang et al., CVPR 2022; OpenOOD ``vim``).

With W (K, D), b (K) the last linear layer and h the penultimate feature:

* origin u = -pinv(W) b (the point whose logits are zero);
* principal space: the top-``dim`` eigenvectors of the uncentred covariance of ID-train (h - u)
  (scikit-learn ``EmpiricalCovariance(assume_centered=True)``: (h - u)^T (h - u) / N); P_perp projects onto the
  remaining D - dim eigenvectors;
* alpha = mean_train max_k z_k / mean_train ||P_perp (h - u)||;
* conf = logsumexp(z) - alpha ||P_perp (h - u)||. Our OOD score is -conf = alpha ||P_perp (h - u)|| - logsumexp(z).

Defaults. OpenOOD uses dim = 256 (APS sweep {256, 1000}), made for ResNet-18's D = 512; with D <= dim P_perp is
empty and ViM silently becomes plain energy (OpenOOD's behaviour). Here ``dim=None`` ("auto") takes
min(256, D // 2): 256 for D = 512 (OpenOOD's CIFAR setting) and 64 for our fmnist6 classifier's D = 128. An explicit
``dim`` must satisfy 0 <= dim < D; ``params()`` reports the dimension actually used after ``fit``. We use ``eigh``
(the matrix is symmetric) where OpenOOD uses ``eig``; the spanned spaces are the same.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from diffguard.detectors.detector import BASELINES, Baseline, ClassifierOutputs, Needs, check_outputs
from diffguard.detectors.search_space import Space, cat


@BASELINES.register("vim")
class ViM(Baseline):
    """Score = alpha ||P_perp (h - u)|| - logsumexp(z).

    Args:
        classifier: adapter whose ``head`` is the nn.Linear mapping features to logits.
        dim: principal-space dimension, None = min(256, D // 2) (see the module docstring).
    """

    name = "vim"
    display_name = "ViM"
    needs = Needs(fit=True)
    # OpenOOD's {256, 1000} assume D = 512; the fraction of the feature width D instead (module docstring)
    search_space = Space((cat("dim_fraction", (0.125, 0.25, 0.5, 0.75), target="dim", fraction_of="feature_dim"),))

    def __init__(self, classifier: Any, dim: int | None = None):
        if classifier is None:
            raise ValueError("ViM needs the classifier (its linear head gives W and b)")
        if dim is not None and dim < 0:
            raise ValueError(f"dim must be >= 0 or None, got {dim}")
        head = classifier.head
        self.classifier = classifier
        self.weight = head.weight.detach().double()
        self.bias = (head.bias.detach().double() if head.bias is not None
                     else torch.zeros(self.weight.shape[0], dtype=torch.float64))
        self.dim_arg = dim
        self.dim: int | None = None
        self.u: Tensor | None = None
        self.null_space: Tensor | None = None
        self.alpha: float | None = None

    def params(self) -> dict[str, Any]:
        return {"dim": self.dim if self.dim is not None else self.dim_arg,
                "dim_rule": "min(256, D // 2)" if self.dim_arg is None else "given", "alpha": self.alpha}

    def _residual(self, h: Tensor) -> Tensor:
        return torch.linalg.vector_norm((h - self.u.to(h.device)) @ self.null_space.to(h.device), dim=1)

    def fit_outputs(self, train: ClassifierOutputs) -> None:
        """Principal space and alpha from ID-train features (N, D)."""
        check_outputs(train)
        h = train.features.double().cpu()
        d = h.shape[1]
        self.dim = min(256, d // 2) if self.dim_arg is None else self.dim_arg
        if self.dim >= d:
            raise ValueError(f"dim={self.dim} >= feature dimension D={d}: the residual space would be empty and ViM "
                             "would reduce to energy; choose dim < D (or dim=None for min(256, D // 2))")
        self.u = -torch.linalg.pinv(self.weight) @ self.bias
        centred = h - self.u
        eigval, eigvec = torch.linalg.eigh(centred.T @ centred / h.shape[0])
        order = torch.argsort(eigval, descending=True)
        self.null_space = eigvec[:, order[self.dim:]]
        logits = h @ self.weight.T + self.bias
        self.alpha = float(logits.amax(dim=1).mean() / self._residual(h).mean())

    def score(self, out: ClassifierOutputs) -> Tensor:
        """out.features (N, D), out.logits (N, K) -> (N,) float64, higher = more OOD."""
        if self.null_space is None:
            raise RuntimeError("ViM is not fitted: call fit(ID-train outputs) first")
        check_outputs(out)
        energy = torch.logsumexp(out.logits.double(), dim=1)
        return self.alpha * self._residual(out.features.double()) - energy
