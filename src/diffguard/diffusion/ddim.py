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
    ts, alphas = _on_device(levels, x0)
    x = x0.clone()
    level = torch.full((x0.shape[0],), last, dtype=torch.long, device=x0.device)
    active = torch.arange(x0.shape[0], device=x0.device)
    shift = 1 if variant == "shifted" else 0
    for j in range(first, last):
        full = active.shape[0] == x0.shape[0]  # nobody stopped yet: no gather / scatter
        xa = x if full else x[active]
        t = ts[j + shift].expand(active.shape[0])
        xa = ddim_step(xa, eps_fn(xa, t, active), alphas[j], alphas[j + 1])
        if full:
            x = xa
        else:
            x[active] = xa
        if stop is not None and j + 1 < last:
            hit = stop(xa, x0 if full else x0[active], active, j + 1)
            level[active] = torch.where(hit, j + 1, level[active])
            keep = (~hit).nonzero().squeeze(1)  # the one host decision per step: who is still active
            if keep.shape[0] < active.shape[0]:
                active = active[keep]
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
    start_h = start_t.cpu()  # one host copy before the loop; the active sets below are built from it
    if int(start_h.min()) <= end or int(start_h.max()) >= len(levels):
        raise ValueError(f"start levels must lie in ({end}, {len(levels) - 1}], got {start_h.tolist()[:8]}...")
    ts, alphas = _on_device(levels, z)
    top = int(start_h.max())
    actives = _active_sets(start_h, range(top, end, -1), z.device)
    x = z.clone()
    for j in range(top, end, -1):
        active = actives[j]
        t = ts[j].expand(active.shape[0])
        if active.shape[0] == z.shape[0]:  # everybody active: no gather / scatter
            x = ddim_step(x, eps_fn(x, t, active), alphas[j], alphas[j - 1])
        else:
            xa = x[active]
            x[active] = ddim_step(xa, eps_fn(xa, t, active), alphas[j], alphas[j - 1])
    return x


def _on_device(levels: Levels, like: Tensor) -> tuple[Tensor, Tensor]:
    """(timesteps, alphas) on the device of ``like`` once per loop (alphas in its dtype), so steps copy nothing."""
    return levels.timesteps.to(like.device), levels.alphas.to(like.dtype).to(like.device)


def _active_sets(start: Tensor, level_range: range, device: torch.device) -> dict[int, Tensor]:
    """Level -> (B',) int64 indices of the samples with start >= level, built on the host before the loop.

    Consecutive levels with the same active set share one tensor object (eps functions may cache per object).
    """
    out: dict[int, Tensor] = {}
    prev_count, prev = -1, None
    for j in level_range:
        idx = (start >= j).nonzero().squeeze(1)
        if idx.shape[0] != prev_count:
            prev_count, prev = idx.shape[0], idx.to(device)
        out[j] = prev
    return out
