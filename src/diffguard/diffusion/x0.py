"""The one home of the x0 / eps algebra of DDPM / DDIM (Ho et al. 2020 Eq. 4; DDIM Eq. 9):

    x_t = sqrt(a) x0 + sqrt(1 - a) eps      <=>      x0_hat = (x_t - sqrt(1 - a) eps) / sqrt(a)

with a = alpha-bar at timestep t. Coefficients are (B, 1, ..., 1) tensors broadcasting over the image dimensions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffguard.diffusion.ddim import EpsFn
from diffguard.perf.accel import DeviceCopies


def x0_from_eps(x: Tensor, eps: Tensor, sqrt_a: Tensor, sqrt_1ma: Tensor) -> Tensor:
    """x0_hat = (x - sqrt(1 - a) eps) / sqrt(a) (the paper's Eq. 7)."""
    return (x - sqrt_1ma * eps) / sqrt_a


def eps_from_x0(x: Tensor, x0: Tensor, sqrt_a: Tensor, sqrt_1ma: Tensor) -> Tensor:
    """eps = (x - sqrt(a) x0) / sqrt(1 - a), the eps that maps x to x0."""
    return (x - sqrt_a * x0) / sqrt_1ma


def clip_eps(x: Tensor, eps: Tensor, sqrt_a: Tensor, sqrt_1ma: Tensor) -> Tensor:
    """eps re-derived from the clamped x0_hat: (x - sqrt(a) clamp(x0_hat, -1, 1)) / sqrt(1 - a).

    x, eps: (B, C, H, W); sqrt_a, sqrt_1ma: (B, 1, 1, 1) sqrt(alpha-bar) and sqrt(1 - alpha-bar).
    """
    return eps_from_x0(x, x0_from_eps(x, eps, sqrt_a, sqrt_1ma).clamp(-1, 1), sqrt_a, sqrt_1ma)


def coefficients(alphas_cumprod: Tensor, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """(sqrt(a_t), sqrt(1 - a_t)), each (B, 1, ..., 1) in the dtype of ``like``, computed in float64."""
    a = alphas_cumprod.to(device=like.device, dtype=torch.float64)[t.long()]
    shape = (-1,) + (1,) * (like.ndim - 1)
    return a.sqrt().to(like.dtype).view(shape), (1 - a).sqrt().to(like.dtype).view(shape)


def clipped_eps(eps_fn: EpsFn, alphas_cumprod: Tensor, from_t: int = 1) -> EpsFn:
    """Re-derive eps from x0_hat clamped to [-1, 1] at timesteps t >= from_t (guided-diffusion's clip_denoised).

    The coefficients are taken in the images' dtype from alpha-bar cast to it (guided-diffusion's order of work).
    """

    schedule = DeviceCopies(alphas_cumprod)

    def wrapped(x: Tensor, t: Tensor, rows: Tensor) -> Tensor:
        e = eps_fn(x, t, rows)
        a = schedule(x.device)[t].to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        e_clip = clip_eps(x, e, a.sqrt(), (1 - a).sqrt())
        return torch.where((t >= from_t).view_as(a), e_clip, e)

    return wrapped
