"""The configurable parts of :class:`~diffguard.detectors.diffguard.DiffGuard`, each a small frozen dataclass.

* :class:`Inversion` -- DDIM grid, where the input sits, inversion variant, early-stop rule, cap, and the denoising
  start convention (exact: the level reached; authors: one level noisier).
* :class:`ClassifierGuidance` -- Clean Grad (paper Eq. 4, 7, 8) with cutouts.
* :class:`CFGGuidance` -- classifier-free guidance (Eq. 5), restricted to the Grad-CAM mask (Distinct Semantic
  Guidance) when ``cam_cut`` is set.

Each guidance spec has ``build(backend, classifier, x, labels, generators, z_size, predicted) -> EpsFn``; label -1
marks an unguided row (the unguided reference reconstruction runs in the same batch); ``predicted`` (optional) is the
classifier's prediction on x, which the caller usually has already.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from diffguard.diffusion.ddim import EpsFn, InversionVariant, Levels, StopRule
from diffguard.diffusion.respace import even_levels, uniform_levels
from diffguard.guidance.classifier import clean_grad_guidance
from diffguard.guidance.cutout import Cutouts
from diffguard.guidance.masked_cfg import masked_cfg_eps
from diffguard.classify.gradcam import cam_mask, grad_cam
from diffguard.perf.accel import DeviceCopies


def null_eps(backend: object) -> EpsFn:
    """The backend's unconditional eps (null label, or no label for an unconditional model)."""

    def eps_fn(x: Tensor, t: Tensor, rows: Tensor) -> Tensor:
        return backend.eps(x, t, None)

    return eps_fn


def clipped_eps(eps_fn: EpsFn, alphas_cumprod: Tensor, from_t: int = 1) -> EpsFn:
    """Re-derive eps from x0_hat clamped to [-1, 1] at timesteps t >= from_t (guided-diffusion's clip_denoised)."""

    schedule = DeviceCopies(alphas_cumprod)

    def wrapped(x: Tensor, t: Tensor, rows: Tensor) -> Tensor:
        e = eps_fn(x, t, rows)
        a = schedule(x.device)[t].to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        x0 = ((x - (1 - a).sqrt() * e) / a.sqrt()).clamp(-1, 1)
        e_clip = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return torch.where((t >= from_t).view_as(a), e_clip, e)

    return wrapped


@dataclass(frozen=True)
class Inversion:
    """How images are inverted and where denoising starts.

    Args:
        steps: number of DDIM timesteps N of the grid.
        spacing: "even" (guided-diffusion "ddimN", with a clean level 0) or "uniform" (latent-diffusion).
        first: level the input sits at (0; 1 = guided-diffusion's convention of placing the image at t = 0).
        cap: highest level inversion may reach (None: the top of the grid).
        variant: "current" (eps at the current level, Eq. 6) or "shifted" (latent-diffusion code).
        stop: per-sample Adaptive Early-Stop rule (``diffguard.diffusion.early_stop``), or None.
        start_offset: 0 = denoise from the level the latent is at (exact); 1 = one level noisier (authors).
        clip_x0: clamp x0_hat to [-1, 1] during inversion for t > 0 (guided-diffusion code).
    """

    steps: int = 50
    spacing: Literal["even", "uniform"] = "even"
    first: int = 0
    cap: int | None = None
    variant: InversionVariant = "current"
    stop: StopRule | None = None
    start_offset: int = 0
    clip_x0: bool = False

    def __post_init__(self) -> None:
        if self.spacing not in ("even", "uniform"):
            raise ValueError(f"spacing must be 'even' or 'uniform', got {self.spacing!r}")
        if self.variant not in ("current", "shifted"):
            raise ValueError(f"variant must be 'current' or 'shifted', got {self.variant!r}")
        if self.start_offset not in (0, 1):
            raise ValueError(f"start_offset must be 0 (exact) or 1 (authors), got {self.start_offset!r}")

    def levels(self, alphas_cumprod: Tensor) -> Levels:
        make = even_levels if self.spacing == "even" else uniform_levels
        return make(alphas_cumprod, self.steps)

    def eps_fn(self, backend: object) -> EpsFn:
        base = null_eps(backend)
        return clipped_eps(base, backend.alphas_cumprod) if self.clip_x0 else base


class LatentClassifier(torch.nn.Module):
    """Classifier seen from a latent space: logits(z) = classifier.logits(decode(z)) (needs a differentiable decode)."""

    def __init__(self, classifier: torch.nn.Module, backend: object):
        super().__init__()
        if not getattr(backend, "differentiable_decode", False):
            raise ValueError("classifier guidance in a latent space needs a differentiable decode; use CFGGuidance")
        self.classifier, self.backend = classifier, backend

    def logits(self, z: Tensor) -> Tensor:
        return self.classifier.logits(self.backend.decode_for_grad(z))


@dataclass(frozen=True)
class ClassifierGuidance:
    """Clean Grad classifier guidance with cutouts (paper Eq. 4, 7, 8; authors' defaults for GDM)."""

    scale: float = 3.0
    cutouts: int = 8
    cut_size: tuple[float, float] = (0.875, 1.0)
    crop_out: int | None = None
    shared_crops: bool = True
    gradient: Literal["mixed", "exact"] = "mixed"
    use_x0_hat: bool = True
    clip_x0: bool = True

    def build(self, backend: object, classifier: torch.nn.Module, x: Tensor, labels: Tensor,
              generators: list[torch.Generator], z_size: tuple[int, ...] | None = None,
              predicted: Tensor | None = None) -> EpsFn:
        latent = getattr(backend, "is_latent", False)
        clf = LatentClassifier(classifier, backend) if latent else classifier
        out = self.crop_out or getattr(classifier, "resolution", None)
        out_size = out[0] if isinstance(out, tuple) else out
        cuts = Cutouts(self.cutouts, self.cut_size, out_size=out_size) if self.cutouts else None
        return clean_grad_guidance(null_eps(backend), clf, labels, backend.alphas_cumprod, scale=self.scale,
                                   cutouts=cuts, generators=generators, gradient=self.gradient,
                                   use_x0_hat=self.use_x0_hat, clip_x0=self.clip_x0)


@dataclass(frozen=True)
class CFGGuidance:
    """Classifier-free guidance (Eq. 5); with ``cam_cut`` only inside the Grad-CAM mask (DSG).

    Args:
        scale: guidance scale w (eps_u + w (eps_c - eps_u)); 0 = unconditional, 1 = conditional.
        cam_cut: threshold on the min-max normalised CAM (paper about 0.2, authors' code 0.3); None = plain CFG.
            Default 0.1: the best of 0.1 / 0.2 / 0.3 in the label-swap measurement on the fmnist6 validation split
            (``benchmarks/label_swap.py``, see the README); the ``ldm`` preset sets the authors' 0.3.
        cam_of: whose Grad-CAM makes the mask: "guided" (the label guided towards, the authors) or "predicted" (the
            classifier's prediction). They coincide in normal use; they differ under oracle or overridden labels,
            where a wrong label's CAM is often empty (ReLU of negative evidence) and "predicted" keeps the mask on
            the object.
    """

    scale: float = 10.0
    cam_cut: float | None = 0.1
    cam_of: Literal["guided", "predicted"] = "guided"

    def __post_init__(self) -> None:
        if self.cam_of not in ("guided", "predicted"):
            raise ValueError(f"cam_of must be 'guided' or 'predicted', got {self.cam_of!r}")

    def build(self, backend: object, classifier: torch.nn.Module, x: Tensor, labels: Tensor,
              generators: list[torch.Generator], z_size: tuple[int, ...] | None = None,
              predicted: Tensor | None = None) -> EpsFn:
        null = backend.null_label
        if null is None:
            raise ValueError("classifier-free guidance needs a class-conditional diffusion model with a null class")
        y = torch.where(labels >= 0, labels, torch.full_like(labels, null))
        mask = None
        if self.cam_cut is not None:
            mask = self.mask(backend, classifier, x, labels, z_size, predicted)
        return masked_cfg_eps(backend.eps, y, null, self.scale, mask)

    def mask(self, backend: object, classifier: torch.nn.Module, x: Tensor, labels: Tensor,
             z_size: tuple[int, ...] | None = None, predicted: Tensor | None = None) -> Tensor:
        """(B, 1, h, w) DSG mask at the diffusion resolution ``z_size`` (default: found by encoding one image);
        zeros for unguided rows (label -1). ``predicted``: (B,) the classifier's prediction on x, when known
        (``cam_of="predicted"`` then needs no classifier forward of its own)."""
        guided = labels >= 0
        if z_size is None:
            z_size = tuple(backend.encode(x[:1]).shape[-2:]) if getattr(backend, "is_latent", False) else x.shape[-2:]
        mask = torch.zeros(x.shape[0], 1, *z_size, device=x.device)
        if bool(guided.any()):
            xg, yg = x[guided], labels[guided]
            if self.cam_of == "predicted" and predicted is not None:
                yg = predicted.to(labels.device)[guided]
            elif self.cam_of == "predicted":
                with torch.no_grad():
                    yg = classifier.logits(xg).argmax(1)
            cam = grad_cam(classifier, xg, yg)
            mask[guided] = cam_mask(cam, tuple(x.shape[-2:]), tuple(z_size), self.cam_cut)
        return mask
