"""MDS, Mahalanobis distance with class means and a shared covariance (Lee et al., NeurIPS 2018; OpenOOD ``mds``).

OpenOOD v1.5: class means mu_c of the penultimate features from ID-train labels; one covariance shared by all
classes, fitted by scikit-learn's ``EmpiricalCovariance`` (maximum likelihood, divides by N) on the class-centred
features h_i - mu_{y_i}; its precision is the pseudo-inverse. conf = max_c -(h - mu_c)^T Sigma^-1 (h - mu_c), no 1/2
factor, no input noise, one layer (the extras live in OpenOOD's ``mds_ensemble``). Our OOD score is -conf =
min_c (h - mu_c)^T Sigma^-1 (h - mu_c). No hyper-parameters.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from diffguard.detectors.detector import BASELINES, Baseline, ClassifierOutputs, Needs, check_outputs
from diffguard.detectors.search_space import Space


@BASELINES.register("mds")
class MDS(Baseline):
    """Score = min_c Mahalanobis^2(h, mu_c) with a shared covariance. ``classifier`` is unused."""

    name = "mds"
    display_name = "MDS"
    needs = Needs(fit=True, fit_labels=True)
    search_space = Space()  # nothing to search (OpenOOD: no sweep): one trial with the defaults

    def __init__(self, classifier: Any = None):
        self.classifier = classifier
        self.means: Tensor | None = None
        self.precision: Tensor | None = None

    def fit_outputs(self, train: ClassifierOutputs) -> None:
        """Class means (K, D) from rows with label >= 0 and the shared precision (D, D), float64."""
        check_outputs(train, need_labels=True)
        keep = train.labels >= 0
        h, y = train.features.double()[keep], train.labels[keep].long()
        k = train.logits.shape[1]
        missing = sorted(set(range(k)) - set(y.unique().tolist()))
        if missing:
            raise ValueError(f"classes {missing} have no ID-train rows: MDS needs every class's mean")
        self.means = torch.stack([h[y == c].mean(dim=0) for c in range(k)])
        centred = h - self.means[y]
        centred = centred - centred.mean(dim=0)  # EmpiricalCovariance(assume_centered=False); the mean is ~0 here
        cov = centred.T @ centred / centred.shape[0]
        self.precision = torch.linalg.pinv(cov, hermitian=True)

    def score(self, out: ClassifierOutputs) -> Tensor:
        """out.features (N, D) -> (N,) float64 squared Mahalanobis distance to the closest class mean."""
        if self.means is None or self.precision is None:
            raise RuntimeError("MDS is not fitted: call fit(ID-train outputs with labels) first")
        check_outputs(out)
        h = out.features.double()
        means, prec = self.means.to(h.device), self.precision.to(h.device)
        parts = []
        for i in range(0, h.shape[0], 256):  # (256, K, D) at a time
            diff = h[i: i + 256, None, :] - means[None, :, :]
            parts.append(((diff @ prec) * diff).sum(dim=2).amin(dim=1))
        return torch.cat(parts)
