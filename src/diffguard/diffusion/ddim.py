"""Deterministic DDIM: one step formula (paper Eq. 3 with sigma = 0; Eq. 6 when run upwards), inversion and sampling.

Levels. A :class:`Levels` grid lists K noise levels, level 0 being where clean data sits. ``alphas[j]`` is
alpha-bar at level j (decreasing in j) and ``timesteps[j]`` the timestep the network is told at level j.

* Sampling moves level j -> j-1 with eps evaluated at level j.
* Inversion moves level j -> j+1 with eps evaluated at level j ("current", paper Eq. 6, the guided-diffusion code)
  or at level j+1 ("shifted", the latent-diffusion code).

Per-sample starts and stops. Samples of one batch may start sampling (or stop inverting) at different levels. The
loops only compute the samples that are active at a level: they pass the subset to the eps function together with
``rows``, the indices of those samples in the full batch, so per-sample conditioning bound into the eps function
(labels, masks, generators) is selected with ``rows``. No sample is run alone and no finished sample is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

EpsFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(x_t (B', C, H, W), t (B',) int64 timesteps, rows (B',) int64 batch indices) -> eps (B', C, H, W)."""

StopRule = Callable[[Tensor, Tensor, Tensor, int], Tensor]
"""(x_new (B', ...), x_start (B', ...), rows (B',), level reached) -> (B',) bool: True where the sample stops."""

InversionVariant = Literal["current", "shifted"]


@dataclass(frozen=True)
class Levels:
    """A grid of K noise levels. timesteps: (K,) int64; alphas: (K,) float64 alpha-bar, decreasing."""

    timesteps: Tensor
    alphas: Tensor

    def __post_init__(self) -> None:
        if self.timesteps.shape != self.alphas.shape or self.timesteps.ndim != 1:
            raise ValueError("Levels needs 1-D timesteps and alphas of equal length")
        if self.alphas.shape[0] < 2:
            raise ValueError("Levels needs at least 2 levels")
        if not bool((self.alphas[1:] < self.alphas[:-1]).all()):
            raise ValueError("Levels.alphas must decrease strictly with the level index")

    def __len__(self) -> int:
        return int(self.alphas.shape[0])


def ddim_step(x: Tensor, eps: Tensor, a_from: Tensor, a_to: Tensor) -> Tensor:
    """Move x from noise level alpha-bar ``a_from`` to ``a_to`` along the deterministic DDIM path.

    Works downwards (sampling, Eq. 3 with sigma = 0) and upwards (inversion, Eq. 6). x, eps: (B, ...);
    a_from, a_to: scalars or (B,) alpha-bars in (0, 1].
    """
    a_from = _per_sample(a_from, x)
    a_to = _per_sample(a_to, x)
    x0_hat = (x - (1 - a_from).sqrt() * eps) / a_from.sqrt()  # (1) predicted clean image
    return a_to.sqrt() * x0_hat + (1 - a_to).sqrt() * eps  # (2) re-noise to the target level, sigma = 0


def _per_sample(a: Tensor, like: Tensor) -> Tensor:
    a = torch.as_tensor(a, device=like.device).to(like.dtype)
    return a.reshape(-1, *([1] * (like.ndim - 1))) if a.ndim == 1 else a


def _as_levels(value: int | Tensor, batch: int, device: torch.device) -> Tensor:
    out = torch.as_tensor(value, dtype=torch.long, device=device)
    return out.expand(batch).clone() if out.ndim == 0 else out.clone()


def ddim_invert(
    eps_fn: EpsFn,
    x0: Tensor,
    levels: Levels,
    first: int = 0,
    last: int | None = None,
    variant: InversionVariant = "current",
    stop: StopRule | None = None,
) -> tuple[Tensor, Tensor]:
    """Invert images (or latents) up the level grid, each sample until it stops.

    Args:
        eps_fn: the (unguided) noise prediction, see :data:`EpsFn`.
        x0: (B, C, H, W), the data placed at level ``first`` (images in [-1, 1] in pixel space).
        levels: the grid.
        first: level of ``x0`` (0, or 1 for the guided-diffusion convention that puts the image at t = 0).
        last: highest level to reach (the cap on inversion steps); default the top of the grid.
        variant: "current" (Eq. 6) or "shifted" (eps at the target level, the latent-diffusion code).
        stop: optional per-sample rule called after every step on the new latents; a sample that triggers keeps
            the first latent that triggered and is not computed any more.

    Returns:
        latents (B, C, H, W) and their levels (B,) int64 in [first + 1, last].
    """
    last = len(levels) - 1 if last is None else last
    if not 0 <= first < last < len(levels):
        raise ValueError(f"need 0 <= first < last < {len(levels)}, got first={first}, last={last}")
    x = x0.clone()
    level = torch.full((x0.shape[0],), last, dtype=torch.long, device=x0.device)
    active = torch.arange(x0.shape[0], device=x0.device)
    shift = 1 if variant == "shifted" else 0
    for j in range(first, last):
        xa = x[active]
        t = levels.timesteps[j + shift].to(x0.device).expand(active.shape[0])
        xa = ddim_step(xa, eps_fn(xa, t, active), levels.alphas[j], levels.alphas[j + 1])
        x[active] = xa
        if stop is not None and j + 1 < last:
            hit = stop(xa, x0[active], active, j + 1)
            level[active[hit]] = j + 1
            active = active[~hit]
            if active.numel() == 0:
                break
    return x, level


def ddim_sample(
    eps_fn: EpsFn,
    z: Tensor,
    levels: Levels,
    start: int | Tensor,
    end: int = 0,
) -> Tensor:
    """Denoise latents down the level grid, each sample from its own start level.

    Args:
        eps_fn: the (possibly guided) noise prediction, see :data:`EpsFn`.
        z: (B, C, H, W) latents.
        levels: the grid.
        start: level of each latent, an int or a (B,) tensor (exact convention: the level inversion reached;
            the authors' convention passes one level higher).
        end: level to stop at (0 = clean data).

    Returns:
        (B, C, H, W) at level ``end``.
    """
    start_t = _as_levels(start, z.shape[0], z.device)
    if int(start_t.min()) <= end or int(start_t.max()) >= len(levels):
        raise ValueError(f"start levels must lie in ({end}, {len(levels) - 1}], got {start_t.tolist()[:8]}...")
    x = z.clone()
    for j in range(int(start_t.max()), end, -1):
        active = (start_t >= j).nonzero().squeeze(1)
        xa = x[active]
        t = levels.timesteps[j].to(z.device).expand(active.shape[0])
        x[active] = ddim_step(xa, eps_fn(xa, t, active), levels.alphas[j], levels.alphas[j - 1])
    return x
