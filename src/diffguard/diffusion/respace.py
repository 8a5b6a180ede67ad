"""Timestep respacing: the two conventions in use, as :class:`~diffguard.diffusion.ddim.Levels` grids.

* ``even_levels`` -- guided-diffusion's "ddimN": the first stride s with ``len(range(0, T, s)) == N``, timesteps
  0, s, 2s, ...; below them a clean level (alpha-bar 1) where sampling ends. The guided-diffusion code places the
  input image at level 1 (t = 0) for inversion.
* ``uniform_levels`` -- latent-diffusion's "uniform" grid: c = T // N, timesteps 1 + i c (dropping one equal to T);
  below them level 0 at t = 0 (alpha-bar[0]) where both inversion starts and sampling ends.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffguard.diffusion.ddim import Levels


def even_stride(num_steps: int, num_train_timesteps: int) -> int:
    """guided-diffusion's stride for "ddimN": the smallest s with ``len(range(0, T, s)) == N``."""
    for stride in range(1, num_train_timesteps + 1):
        if len(range(0, num_train_timesteps, stride)) == num_steps:
            return stride
    raise ValueError(f"cannot make {num_steps} evenly spaced steps from {num_train_timesteps} timesteps")


def even_levels(alphas_cumprod: Tensor, num_steps: int) -> Levels:
    """Levels [clean, 0, s, 2s, ..., (N-1)s] (N + 1 levels) for the "ddimN" convention.

    alphas_cumprod: (T,) the model's alpha-bar. The clean level has alpha-bar 1 and is told timestep 0.
    """
    T = alphas_cumprod.shape[0]
    ts = torch.arange(0, T, even_stride(num_steps, T), dtype=torch.long)
    acp = alphas_cumprod.double().cpu()
    return Levels(torch.cat([ts[:1], ts]), torch.cat([torch.ones(1, dtype=torch.float64), acp[ts]]))


def uniform_levels(alphas_cumprod: Tensor, num_steps: int) -> Levels:
    """Levels [0, 1, 1 + c, ..., 1 + (N-1)c] (N + 1 levels) for latent-diffusion's "uniform" convention."""
    T = alphas_cumprod.shape[0]
    c = T // num_steps
    if c < 1:
        raise ValueError(f"cannot make {num_steps} uniform steps from {T} timesteps")
    ts = torch.arange(0, T, c, dtype=torch.long) + 1
    ts = ts[ts < T]
    acp = alphas_cumprod.double().cpu()
    ts = torch.cat([torch.zeros(1, dtype=torch.long), ts])
    return Levels(ts, acp[ts])
