"""DiffNB: diffusion-based neighbourhood (Liu, Ren, Cheng, Zhao, arXiv 2211.11255; code luping-liu/DiffOOD).

Per test image x0 in [-1, 1] (ood-ecosystem.md section 3):

1. y_hat = argmax of the classifier on x0.
2. For each noise level t in ``noise_levels`` (default 0, 120, 240, 360 of T = 1000) and each of r = ``repeats``
   draws eps_k (fixed per sample, reused across levels): x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps_k, then
   deterministic DDIM down to clean data on the ``steps``-step grid (50 steps: stride 20) with classifier-free
   guidance on y_hat: eps^ = (1 + beta) eps(x, t, y_hat) - beta eps(x, t, null), beta = 2.
3. The classifier scores each reconstruction clamped to [-1, 1]; its logits (``space="logit"``, the default) or
   penultimate features are L2-normalised (f / (||f|| + 1e-10), as the authors do).
4. Global score at level t_i: || f^(t_0) - f^(t_i) ||_1 averaged over the r draws; the "base" score, and ours, is
   the global score at the largest level. Higher = more OOD.

Our conventions, and where they differ from the authors' code:

* Guidance: our :func:`~diffguard.guidance.cfg.cfg_eps` computes eps_null + s (eps_y - eps_null), so the authors'
  beta maps to ``scale = 1 + beta`` (beta = 2 -> scale 3).
* Grid: :func:`~diffguard.diffusion.respace.even_levels` (timesteps 0, 20, ..., 980 plus a clean level). The noised
  image at level t sits at alpha-bar ``abar[t]`` and the network is told timestep t (the convention the shipped
  model was trained with); sampling ends at alpha-bar 1, so level t takes t / stride + 1 steps (19 from t = 360).
  The authors' PNDM-style indexing tells the network t - 1 at ``abar[t]``, takes 18 steps from t = 360 and stops at
  ``abar[0]``; at t = 0 they skip denoising altogether (the "reconstruction" is x0 plus noise of std 0.01), where we
  take the one DDIM step from ``abar[0]`` to clean. Each is a one-timestep shift out of 1000.
* Noise: eps_k for a sample comes from a generator seeded with (seed, sample id), so scores do not depend on the
  batch (the authors draw one batch of noise with an unseeded generator and score a random 1,000-image subset).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from diffguard.detectors.detector import BASELINES, Baseline, Needs
from diffguard.detectors.search_space import Space as SearchSpace
from diffguard.detectors.search_space import cat
from diffguard.diffusion.ddim import ddim_sample
from diffguard.diffusion.respace import even_levels, even_stride
from diffguard.guidance.cfg import cfg_eps
from diffguard.seeding import sample_generator

Space = Literal["logit", "feature"]


@BASELINES.register("diffnb")
class DiffNB(Baseline):
    """Score = mean_k || f^(x^(t_0, eps_k)) - f^(x^(t_max, eps_k)) ||_1 (see the module docstring).

    Args:
        classifier: adapter with ``logits_and_features`` on [-1, 1] images.
        backend: class-conditional pixel backend (``eps(z, t, y)``, ``alphas_cumprod`` (T,), ``null_label``).
        noise_levels: increasing training timesteps, multiples of the grid stride; the first is the reference.
        repeats: noise draws r per sample.
        steps: DDIM grid size N (stride = T / N for T = 1000, N = 50: 20).
        guidance_beta: the authors' beta (our CFG scale is 1 + beta).
        space: "logit" or "feature" representation.
        seed: base seed of the per-sample noise generators.
    """

    name = "diffnb"
    display_name = "DiffNB"
    needs = Needs(images=True, backend=True, randomness=True)
    # the base score's noise level and the representation (DiffNB paper, Sec. 4)
    search_space = SearchSpace((cat("noise_levels", ((0, 120), (0, 240), (0, 360))), cat("space", ("logit", "feature"))))

    def __init__(self, classifier: Any, backend: Any, noise_levels: Sequence[int] = (0, 120, 240, 360),
                 repeats: int = 4, steps: int = 50, guidance_beta: float = 2.0, space: Space = "logit",
                 seed: int = 0):
        if classifier is None or backend is None:
            raise ValueError("DiffNB needs the classifier and a diffusion backend (backend=PixelBackend...)")
        if getattr(backend, "null_label", None) is None:
            raise ValueError("DiffNB uses classifier-free guidance: the backend must be class-conditional with a "
                             "null label")
        if space not in ("logit", "feature"):
            raise ValueError(f"space must be 'logit' or 'feature', got {space!r}")
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.classifier, self.backend = classifier, backend
        acp = backend.alphas_cumprod
        self.grid = even_levels(acp, steps)
        self.stride = even_stride(steps, acp.shape[0])
        levels = [int(t) for t in noise_levels]
        bad = [t for t in levels if not (0 <= t < acp.shape[0] and t % self.stride == 0)]
        if not levels or bad or any(b <= a for a, b in zip(levels, levels[1:])):
            raise ValueError(f"noise_levels must be increasing multiples of the grid stride {self.stride} in "
                             f"[0, {acp.shape[0]}), got {levels}")
        self.noise_levels, self.repeats, self.steps = tuple(levels), int(repeats), int(steps)
        self.guidance_beta, self.space, self.seed = float(guidance_beta), space, int(seed)

    def params(self) -> dict[str, Any]:
        return {"noise_levels": list(self.noise_levels), "repeats": self.repeats, "steps": self.steps,
                "guidance_beta": self.guidance_beta, "cfg_scale": 1 + self.guidance_beta, "space": self.space,
                "seed": self.seed}

    def _noise(self, x: Tensor, ids: Tensor) -> Tensor:
        """(R, B, C, H, W) standard normal draws, each sample's from its own (seed, id) generator."""
        if tuple(ids.shape) != (x.shape[0],):
            raise ValueError(f"ids must be ({x.shape[0]},) int64 sample ids, got shape {tuple(ids.shape)}")
        per = [torch.randn((self.repeats, *x.shape[1:]), generator=sample_generator(self.seed, int(i)))
               for i in ids.tolist()]
        return torch.stack(per, dim=1).to(x)

    @torch.no_grad()
    def reconstructions(self, x: Tensor, ids: Tensor) -> Tensor:
        """x: (B, C, H, W) in [-1, 1] -> (L, R, B, C, H, W) reconstructions in [-1, 1] (L levels, R draws)."""
        labels = self.classifier.logits(x).argmax(dim=1)
        noise = self._noise(x, ids)
        t = torch.tensor(self.noise_levels, dtype=torch.long)
        a = self.backend.alphas_cumprod.double().cpu()[t].to(x).view(-1, 1, 1, 1, 1)  # (L, 1, 1, 1, 1)
        rows = self.repeats * x.shape[0]  # all draws of all samples denoised in one batch, level-major
        start = (t // self.stride + 1).repeat_interleave(rows).to(x.device)  # level index of each row
        eps_fn = cfg_eps(self.backend.eps, labels.repeat(len(t) * self.repeats), self.backend.null_label,
                         1 + self.guidance_beta)
        xt = a[:, None].sqrt() * x[None, None] + (1 - a[:, None]).sqrt() * noise[None]  # (L, R, B, C, H, W)
        rec = ddim_sample(eps_fn, xt.flatten(0, 2), self.grid, start, end=0)
        return rec.clamp(-1, 1).view_as(xt)

    @torch.no_grad()
    def global_scores(self, x: Tensor, ids: Tensor) -> Tensor:
        """(B, L) float64: column i = mean_k ||f^(t_0) - f^(t_i)||_1 (column 0 is 0)."""
        rec = self.reconstructions(x, ids)
        logits, feats = self.classifier.logits_and_features(rec.flatten(0, 2))
        f = (logits if self.space == "logit" else feats).double()
        f = (f / (torch.linalg.vector_norm(f, dim=1, keepdim=True) + 1e-10)).view(*rec.shape[:3], -1)
        return (f - f[:1]).abs().sum(dim=3).mean(dim=1).T.contiguous()

    def score_images(self, x: Tensor, ids: Tensor | None = None, y_true: Tensor | None = None) -> Tensor:
        """x: (B, C, H, W) in [-1, 1], ids (B,) int64 (default 0..B-1) -> (B,) float64 base score (global score at
        the largest t)."""
        return self.global_scores(x, torch.arange(x.shape[0]) if ids is None else ids)[:, -1]
