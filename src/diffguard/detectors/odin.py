"""ODIN: temperature scaling plus input pre-processing (Liang et al., ICLR 2018; OpenOOD ``odin``).

OpenOOD (v1.5) on a normalised input x_n = (x01 - mean_c) / std_c, with x01 the image in [0, 1]:

    y_hat = argmax z(x_n);  g = sign(grad_{x_n} CE(z(x_n) / T, y_hat))  (sign(0) taken as +1)
    x_n~ = x_n - eps * g / std_c;  conf = max softmax(z(x_n~) / T)

Defaults T = 1000, eps = 0.0014 (APS sweep T in {1, 10, 100, 1000}, eps in {0.0014, 0.0028}).

Units. Dividing the step by std_c makes ``eps`` a step in raw [0, 1] pixel units: x01~ = x01 - eps * g. Our images
are in [-1, 1] (x = 2 x01 - 1), so the same perturbation is x~ = x - 2 eps * g there; the sign of the gradient is
the same in every one of these spaces (each is a positive per-channel affine map of the others). The perturbation is
applied at the classifier's own resolution (after the adapter's resize, as OpenOOD perturbs its preprocessed
tensor) and is not clamped (OpenOOD does not clamp either). Our OOD score is -conf.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from diffguard.detectors.detector import BASELINES, Baseline, Needs, msp_score
from diffguard.detectors.search_space import Space, cat


@BASELINES.register("odin")
class ODIN(Baseline):
    """Score = -max softmax(z(x~) / T) with x~ the eps-step against the predicted class.

    Args:
        classifier: adapter with ``logits`` on [-1, 1] images, ``preprocess`` and ``mean`` / ``std`` buffers.
        temperature: T > 0 (OpenOOD default 1000).
        eps: step in [0, 1] pixel units, >= 0 (OpenOOD default 0.0014; 2 * eps in our [-1, 1] units).
    """

    name = "odin"
    display_name = "ODIN"
    needs = Needs(images=True)
    search_space = Space((cat("temperature", (1.0, 10.0, 100.0, 1000.0)), cat("eps", (0.0014, 0.0028))))  # APS grid

    def __init__(self, classifier: Any, temperature: float = 1000.0, eps: float = 0.0014):
        if classifier is None:
            raise ValueError("ODIN needs the classifier (it back-propagates to the input)")
        if not temperature > 0 or not eps >= 0:
            raise ValueError(f"need temperature > 0 and eps >= 0, got {temperature}, {eps}")
        self.classifier = classifier
        self.temperature = float(temperature)
        self.eps = float(eps)

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "eps": self.eps, "eps_units": "[0,1] pixels"}

    def _at_resolution(self, x: Tensor) -> Tensor:
        """[-1, 1] images resized the way the adapter does, still in [-1, 1] (undo its normalisation)."""
        c = self.classifier
        z = c.preprocess(x)
        return (z * c.std.to(z) + c.mean.to(z)) * 2 - 1

    def score_images(self, x: Tensor, ids: Tensor | None = None, y_true: Tensor | None = None) -> Tensor:
        """x: (B, C, H, W) in [-1, 1] -> (B,) float64, higher = more OOD. ``ids`` is unused (deterministic)."""
        with torch.no_grad():
            xr = self._at_resolution(x)
        xr = xr.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.classifier.logits(xr)
            loss = F.cross_entropy(logits / self.temperature, logits.argmax(dim=1), reduction="sum")
            (grad,) = torch.autograd.grad(loss, xr)
        step = torch.where(grad >= 0, 1.0, -1.0).to(xr.dtype)
        with torch.no_grad():
            logits = self.classifier.logits(xr.detach() - 2 * self.eps * step)
        return msp_score(logits, self.temperature)
