"""Clean-Grad classifier guidance (paper Sec. 3.3, Eq. 4, 7, 8) as a wrapper around an eps function.

Classifier guidance shifts the noise prediction against the classifier's log-likelihood gradient (Eq. 4):

    eps' = eps_c - sqrt(1 - a_t) * g,    g = scale * d/dx sum_crops log p(y | crop(x0_hat))

where a_t is alpha-bar at timestep t and eps_c the eps re-derived from the clipped x0-hat (``clip_x0``). Clean Grad
evaluates the classifier on the predicted clean image x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) (Eq. 7) instead
of the noisy x_t, and on random cutouts of it (Eq. 8). Two ways to take the gradient:

========== ========================================================================================================
gradient   what is differentiated
========== ========================================================================================================
"mixed"    The authors' code. x~ = f x0_raw + (1 - f) x_t with f = sqrt(1 - a_t) is treated as a leaf and g is the
           gradient w.r.t. x~, used as if it were w.r.t. x_t. No backprop through the diffusion network; the
           unguided eps is reused (one network call per step).
"exact"    The paper's Eq. 7 literally: g = d/dx_t of the loss on x0_hat(x_t), with autograd through eps_fn
           (one network call per step, with grad; memory grows with the network).
========== ========================================================================================================

Ablations: ``use_x0_hat=False`` differentiates w.r.t. x_t itself (Table 3 "no x0-hat"); ``cutouts=None`` (or
``Cutouts(0)``) shows the classifier the full image. A label of -1 marks an unguided row (the authors' ``uncond_aux``
trick): it gets g = 0 and never reaches the classifier.

Batch invariance (``ClassifierGuidance.row_chunk``). With a ReLU classifier the guided trajectory is extremely
sensitive: the input gradient jumps where a unit changes sign, so a 1e-7 change anywhere upstream (float32 kernels
round differently at different batch sizes) moved a fmnist6 logits-L1 score by up to 1.9 with its batch-mates
(``benchmarks/batch_independence.py``). The networks feeding the trajectory (inversion and sampling UNet calls, the
classifier on the crops, the label prediction) therefore run on fixed-size row chunks
(:func:`~diffguard.diffusion.chunks.fixed_chunks`): a sample's score is then the same in any batch up to float32
rounding (bit for bit where the math library rounds a row independently of its position in a call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, Sequence, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from diffguard.diffusion.chunks import fixed_chunks
from diffguard.diffusion.ddim import EpsFn
from diffguard.diffusion.inversion import null_eps
from diffguard.diffusion.rows import RowsMemo
from diffguard.diffusion.x0 import clip_eps, coefficients, x0_from_eps
from diffguard.guidance.cutout import Cutouts, Generators
from diffguard.perf.accel import DeviceCopies

GradientMode = Literal["mixed", "exact"]


class LogitsClassifier(Protocol):
    """Anything with ``logits(x)``: x (B, C, H, W) in [-1, 1] -> (B, K), differentiable w.r.t. x."""

    def logits(self, x: Tensor) -> Tensor: ...


def clean_grad_guidance(eps_fn: EpsFn, classifier: LogitsClassifier, labels: Tensor, alphas_cumprod: Tensor,
                        scale: float = 3.0, cutouts: Cutouts | None = None, generators: Generators = None,
                        gradient: GradientMode = "mixed", use_x0_hat: bool = True, clip_x0: bool = True,
                        window: tuple[int, int] | None = None) -> EpsFn:
    """Wrap an unguided eps function with Clean-Grad classifier guidance (Eq. 4, 7, 8).

    Args:
        eps_fn: the unguided noise prediction, see :data:`~diffguard.diffusion.ddim.EpsFn`.
        classifier: adapter with ``logits(x)`` on images in [-1, 1]; it receives (crops of) x~ / x0_hat in
            [-1, 1] scale, unclamped. Its parameters get no ``.grad`` (the gradient is w.r.t. the input only).
        labels: (B,) int64 target labels for the whole batch (selected with ``rows``); -1 = unguided row.
        alphas_cumprod: (T,) alpha-bar of the training schedule, indexed by the timesteps t the loop passes.
        scale: s, folded into g (the authors use 3.0). 0 returns the unguided (clipped) eps bit for bit.
        cutouts: crops shown to the classifier (log-probs are summed over crops and samples); None = full image.
        generators: crop randomness: one generator (shared windows, the authors), one per sample of the whole batch
            (selected with ``rows``), or None (global RNG). Generators are consumed at every guided step; the
            caller creates or re-seeds them per image/batch (the authors re-seed a CPU generator with seed 100
            before each image).
        gradient: "mixed" (the authors' code) or "exact" (backprop through eps_fn), see the module docstring.
        use_x0_hat: False differentiates w.r.t. x_t itself (ablation).
        clip_x0: re-derive eps from x0_hat clamped to [-1, 1] before guiding (the authors' ``clip_denoised``).
        window: (lo, hi): guide only where lo <= t <= hi; elsewhere the unguided (clipped) eps is returned.

    Returns:
        An EpsFn (x_t (B', C, H, W), t (B',), rows (B',)) -> guided eps (B', C, H, W), same dtype and device as x_t.
    """
    if gradient not in get_args(GradientMode):
        raise ValueError(f"gradient must be one of {get_args(GradientMode)}, got {gradient!r}")
    if labels.ndim != 1:
        raise ValueError(f"labels must be a (B,) tensor, got shape {tuple(labels.shape)}")
    if isinstance(generators, Sequence) and len(generators) != labels.shape[0]:
        raise ValueError(f"got {len(generators)} generators for {labels.shape[0]} labels; pass one per sample")
    labels = labels.long()
    cut = cutouts if cutouts is not None else Cutouts(0)
    exact = gradient == "exact" and use_x0_hat
    plan = RowsMemo(lambda rows: _RowPlan(rows, labels, scale != 0))  # host decisions once per active set
    schedule = DeviceCopies(alphas_cumprod)

    def guided_eps(x: Tensor, t: Tensor, rows: Tensor) -> Tensor:
        y = labels.to(x.device)[rows]
        sa, s1 = coefficients(schedule(x.device, torch.float64), t, x)
        rp = plan(rows)
        guide_h, sel = rp.guide, rp.selection()
        if window is not None:  # the window depends on t: read it back (one host sync per step)
            t_h = t.cpu()
            guide_h = guide_h & (t_h >= window[0]) & (t_h <= window[1])
            sel = None if bool(guide_h.all()) else guide_h.nonzero().squeeze(1).to(x.device)
        if not bool(guide_h.any()):
            with torch.no_grad():
                e = eps_fn(x, t, rows)
            return clip_eps(x, e, sa, s1) if clip_x0 else e
        gens = _select(generators, rp.rows[guide_h])
        if exact:
            e, g = _exact_gradient(eps_fn, classifier, x, t, rows, y, sel, sa, s1, cut, gens)
        else:
            with torch.no_grad():
                e = eps_fn(x, t, rows)
            g = _mixed_gradient(classifier, x, e, y, sel, sa, s1, cut, gens, use_x0_hat)
        e_c = clip_eps(x, e, sa, s1) if clip_x0 else e
        return e_c - s1 * (scale * g)  # Eq. 4: eps' = eps - sqrt(1 - a_t) * s * grad log p(y | x)

    return guided_eps


class _RowPlan:
    """Host copy of the rows and which of them are guided (a real label and a non-zero scale), with the device
    index of the guided rows (None when all are guided) made once."""

    def __init__(self, rows: Tensor, labels: Tensor, guided: bool):
        self.rows = rows.cpu()
        self.guide = (labels.cpu()[self.rows] >= 0) & guided
        self.device = rows.device
        self._sel: Tensor | None = None

    def selection(self) -> Tensor | None:
        if bool(self.guide.all()):
            return None
        if self._sel is None:
            self._sel = self.guide.nonzero().squeeze(1).to(self.device)
        return self._sel


def class_log_prob(classifier: LogitsClassifier, x: Tensor, y: Tensor, cutouts: Cutouts,
                   generators: Generators) -> Tensor:
    """Scalar sum over crops and samples of log softmax(classifier.logits(crop(x)))[y] (Eq. 8).

    x: (B, C, H, W) in [-1, 1] scale (not clamped); y: (B,) labels >= 0.
    """
    crops = cutouts(x, generators)
    logp = F.log_softmax(classifier.logits(crops), dim=-1)
    target = y.repeat(crops.shape[0] // x.shape[0])  # crop-major, like the crops
    return logp.gather(1, target[:, None]).sum()


def _mixed_gradient(classifier: LogitsClassifier, x: Tensor, e: Tensor, y: Tensor, sel: Tensor | None,
                    sa: Tensor, s1: Tensor, cutouts: Cutouts, gens: Generators, use_x0_hat: bool) -> Tensor:
    """dL/dx~ on the guided rows ``sel`` (None: all), x~ = f x0_raw + (1 - f) x (f = sqrt(1 - a)) taken as a leaf;
    0 elsewhere."""
    if use_x0_hat:
        x0_raw = x0_from_eps(x, e, sa, s1)  # (Eq. 7) unclipped x0_hat
        x_tilde = s1 * x0_raw + (1 - s1) * x
    else:
        x_tilde = x
    leaf = (x_tilde if sel is None else x_tilde[sel]).detach().requires_grad_(True)
    with torch.enable_grad():
        loss = class_log_prob(classifier, leaf, y if sel is None else y[sel], cutouts, gens)
        (grad,) = torch.autograd.grad(loss, leaf)
    if sel is None:
        return grad.to(x.dtype)
    return torch.zeros_like(x).index_copy_(0, sel, grad.to(x.dtype))


def _exact_gradient(eps_fn: EpsFn, classifier: LogitsClassifier, x: Tensor, t: Tensor, rows: Tensor, y: Tensor,
                    sel: Tensor | None, sa: Tensor, s1: Tensor, cutouts: Cutouts,
                    gens: Generators) -> tuple[Tensor, Tensor]:
    """(eps, dL/dx) with L on cutouts of x0_hat(x), autograd through eps_fn; rows not in ``sel`` get 0."""
    leaf = x.detach().requires_grad_(True)
    with torch.enable_grad():
        e = eps_fn(leaf, t, rows)
        if not e.requires_grad:
            raise ValueError("gradient='exact' needs an eps_fn that autograd can go through (no torch.no_grad "
                             "inside it); use gradient='mixed' otherwise")
        x0_hat = x0_from_eps(leaf, e, sa, s1)  # (Eq. 7)
        loss = class_log_prob(classifier, x0_hat if sel is None else x0_hat[sel], y if sel is None else y[sel],
                              cutouts, gens)
        (grad,) = torch.autograd.grad(loss, leaf)
    if sel is not None:  # rows outside sel only feel the guided rows through batch-coupled layers: zero them
        grad = torch.zeros_like(grad).index_copy_(0, sel, grad[sel])
    return e.detach(), grad


def _select(generators: Generators, rows: Tensor) -> Generators:
    """The generators of the given (host) batch rows (a shared generator or None is returned as is)."""
    if generators is None or isinstance(generators, torch.Generator):
        return generators
    return [generators[i] for i in rows.tolist()]


class LatentClassifier(torch.nn.Module):
    """Classifier seen from a latent space: logits(z) = classifier.logits(decode(z)) (needs a differentiable decode)."""

    def __init__(self, classifier: torch.nn.Module, backend: object):
        super().__init__()
        if not getattr(backend, "differentiable_decode", False):
            raise ValueError("classifier guidance in a latent space needs a differentiable decode; use CFGGuidance")
        self.classifier, self.backend = classifier, backend

    def logits(self, z: Tensor) -> Tensor:
        return self.classifier.logits(self.backend.decode_for_grad(z))


class ChunkedLogits:
    """``logits`` of a classifier computed on chunks of exactly ``size`` rows (batch invariance, differentiable)."""

    def __init__(self, classifier: LogitsClassifier, size: int):
        self.classifier = classifier
        self.logits = fixed_chunks(classifier.logits, size)


@dataclass(frozen=True)
class ClassifierGuidance:
    """Clean Grad classifier guidance with cutouts (paper Eq. 4, 7, 8; authors' defaults for GDM).

    ``row_chunk``: the networks see chunks of exactly this many rows, so a score does not depend on the batch
    (see the module docstring). Default None: one call per step, as the authors' code runs (the paper presets
    ``gdm`` / ``ldm`` keep it), whose float32 rounding depends on the batch size and is amplified; the embedded
    ``fmnist6-clean-grad`` preset sets 8. Cost: a batch is padded to a multiple of ``row_chunk`` rows.
    """

    scale: float = 3.0
    cutouts: int = 8
    cut_size: tuple[float, float] = (0.875, 1.0)
    crop_out: int | None = None
    shared_crops: bool = True
    gradient: Literal["mixed", "exact"] = "mixed"
    use_x0_hat: bool = True
    clip_x0: bool = True
    row_chunk: int | None = None

    def __post_init__(self) -> None:
        if self.row_chunk is not None and self.row_chunk < 1:
            raise ValueError(f"row_chunk must be a positive int or None, got {self.row_chunk!r}")

    def build(self, backend: object, classifier: torch.nn.Module, x: Tensor, labels: Tensor,
              generators: list[torch.Generator], z_size: tuple[int, ...] | None = None,
              predicted: Tensor | None = None) -> EpsFn:
        latent = getattr(backend, "is_latent", False)
        clf = LatentClassifier(classifier, backend) if latent else classifier
        out = self.crop_out or getattr(classifier, "resolution", None)
        out_size = out[0] if isinstance(out, tuple) else out
        cuts = Cutouts(self.cutouts, self.cut_size, out_size=out_size) if self.cutouts else None
        if self.row_chunk is not None:
            clf = ChunkedLogits(clf, self.row_chunk)
        return clean_grad_guidance(null_eps(backend, self.row_chunk), clf, labels, backend.alphas_cumprod,
                                   scale=self.scale, cutouts=cuts, generators=generators, gradient=self.gradient,
                                   use_x0_hat=self.use_x0_hat, clip_x0=self.clip_x0)
